"""Atomic safetensors checkpoints: model, EMA and optimizer state, plus a JSON trainer state.

A checkpoint is a directory ``checkpoints/step_000500/`` holding ``<name>.safetensors`` for every
state dict given and ``state.json`` for plain values. It is written into a hidden temporary sibling
and moved into place with one ``os.replace``; ``checkpoints/latest`` (a text file naming the newest
step directory) is replaced atomically after that. A killed writer therefore leaves either the old
checkpoint or the new one, never a half-written one that a resume would pick up.
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_LATEST = "latest"


class CheckpointError(ScorealignError, RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (disk full, unwritable directory); its temporary
    files are removed and the earlier checkpoints are kept."""


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (e.g. ``optimizer.state_dict()``) into tensors and a JSON skeleton.

    Tensors are replaced by ``{"__tensor__": key}`` in the skeleton; ``unflatten_state`` inverts it.
    """
    tensors: dict[str, torch.Tensor] = {}

    def rec(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(x, dict):
            return {"__dict__": [[rec(k, f"{path}.k{i}"), rec(v, f"{path}.{i}")]
                                 for i, (k, v) in enumerate(x.items())]}
        if isinstance(x, (list, tuple)):
            return {"__list__" if isinstance(x, list) else "__tuple__":
                    [rec(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot checkpoint value of type {type(x).__name__} at {path}")

    return tensors, rec(obj, prefix or "s")


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {unflatten_state(tensors, k): unflatten_state(tensors, v)
                    for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [unflatten_state(tensors, v) for v in skeleton["__list__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(tensors, v) for v in skeleton["__tuple__"])
    return skeleton


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(ckpt_root: str | Path, step: int, state_dicts: dict[str, dict[str, Any]],
                    extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write ``ckpt_root/step_{step:06d}`` atomically and point ``latest`` at it.

    Args:
        ckpt_root: the run's ``checkpoints/`` directory.
        step: global step the state belongs to (the step *after* which it was taken).
        state_dicts: name → state dict; plain ``{str: Tensor}`` dicts go to safetensors as is,
            nested ones (optimizers) are flattened with a JSON skeleton.
        extra: JSON-serializable trainer state (step, epoch, best metric, ...).
        keep: how many newest checkpoints to keep (older ones are removed after the switch).
    """
    root = Path(ckpt_root)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}_{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_checkpoint(tmp, final, step, state_dicts, extra)
    except (OSError, SafetensorError) as e:  # full disk, unwritable run directory, ...
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
        raise CheckpointWriteError(f"{root}: cannot write checkpoint {final.name}: {reason}; "
                                   f"the earlier checkpoints are kept") from None
    prune_checkpoints(root, keep)
    _maybe_kill_after(step)
    return final


def prune_checkpoints(ckpt_root: str | Path, keep: int) -> None:
    """Keep the ``keep`` newest *intact* checkpoints; move damaged ones aside, named.

    Checkpoints are managed by integrity, not by name: after ``--resume`` fell back from a
    damaged step 6 to the intact step 5, saving step 7 with ``keep=2`` keeps 5 and 7, and step 6
    goes to ``damaged_step_000006`` (a warning names it) instead of being kept as if it could be
    resumed. ``keep <= 0`` keeps every checkpoint.
    """
    import sys

    root = Path(ckpt_root)
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    intact = []
    for path in steps:
        problem = checkpoint_problem(path)
        if problem is None:
            intact.append(path)
            continue
        aside = root / f"damaged_{path.name}"
        n = 1
        while aside.exists():
            aside, n = root / f"damaged_{path.name}.{n}", n + 1
        os.replace(path, aside)
        print(f"warning: {problem}; moved the damaged checkpoint aside to {aside}",
              file=sys.stderr)
    for old in intact[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _write_checkpoint(tmp: Path, final: Path, step: int, state_dicts: dict[str, dict[str, Any]],
                      extra: dict[str, Any] | None) -> None:
    """Fill ``tmp``, rename it to ``final`` and point ``latest`` at it."""
    root = final.parent
    skeletons = {}
    for name, sd in state_dicts.items():
        if _is_flat(sd):  # model weights: keep the keys, loadable by any safetensors reader
            tensors, skel = {k: v.detach().cpu().contiguous() for k, v in sd.items()}, "__flat__"
        else:
            tensors, skel = flatten_state(sd, name)
        save_file(tensors, str(tmp / f"{name}.safetensors"))
        skeletons[name] = skel
    meta = {"step": step, "skeletons": skeletons, "extra": extra or {}}
    (tmp / "state.json").write_text(json.dumps(meta))
    for p in tmp.iterdir():  # flush file contents before the rename makes them visible
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(root / _LATEST, final.name)


KILL_ENV = "SCOREALIGN_KILL_AFTER_CHECKPOINT"


def _maybe_kill_after(step: int) -> None:
    """Fault injection for the exact-resume tests: ``SIGKILL`` this process right after the
    checkpoint of step ``$SCOREALIGN_KILL_AFTER_CHECKPOINT`` is on disk (a real kill -9, at a
    point every trainer reaches the same way)."""
    if os.environ.get(KILL_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint directory ``path`` cannot be loaded (a sentence naming the file), or
    None when its ``state.json`` parses and every tensor file it lists has a valid header."""
    from safetensors import safe_open

    meta_file = path / "state.json"
    try:
        meta = json.loads(meta_file.read_text())
        names = list(meta["skeletons"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        return f"{meta_file}: cannot read checkpoint state: {' '.join(str(e).split())}"
    for name in names:
        f = path / f"{name}.safetensors"
        try:
            with safe_open(str(f), "pt") as h:
                h.keys()
        except (OSError, SafetensorError, ValueError, RuntimeError) as e:
            return f"{f}: cannot read tensors: {' '.join(str(e).split())}"
    return None


def latest_checkpoint(ckpt_root: str | Path, fallback: bool = True) -> Path | None:
    """The newest intact checkpoint directory, or None when the run has no checkpoint yet.

    The one ``latest`` points to comes first; when it is damaged (truncated file, bad JSON) and
    ``fallback``, the newest intact older ``step_*`` is used and a warning naming the damaged
    file goes to stderr. Raises CheckpointError (naming the file) when none is intact.
    """
    import sys

    root = Path(ckpt_root)
    pointer = root / _LATEST
    steps = sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True)
    if not pointer.is_file() and not steps:
        return None
    first = None
    if pointer.is_file():
        first = root / pointer.read_text().strip()
        steps = [first] + [p for p in steps if p != first]
    problems = []
    for i, path in enumerate(steps):
        problem = (f"{pointer}: points to {path.name}, which has no state.json"
                   if not (path / "state.json").is_file() else checkpoint_problem(path))
        if problem is None:
            if problems:
                print(f"warning: {problems[0]}; falling back to the newest intact checkpoint "
                      f"{path}", file=sys.stderr)
            return path
        problems.append(problem)
        if not fallback:
            break
    raise CheckpointError(problems[0] + (" (and no intact older checkpoint)"
                                         if fallback and len(steps) > 1 else ""))


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint directory; returns (state_dicts by name, extra)."""
    path = Path(path)
    meta_file = path / "state.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_file}: cannot read checkpoint state: {e}") from None
    out = {}
    for name, skel in meta["skeletons"].items():
        f = path / f"{name}.safetensors"
        try:
            tensors = load_file(str(f))
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{f}: cannot read tensors: {e}") from None
        out[name] = tensors if skel == "__flat__" else unflatten_state(tensors, skel)
    return out, meta.get("extra", {})


def load_weights(path: str | Path, name: str = "model") -> dict[str, torch.Tensor]:
    """Load one flat state dict (``name.safetensors``) from a checkpoint dir or a file."""
    p = Path(path)
    f = p / f"{name}.safetensors" if p.is_dir() else p
    try:
        tensors = load_file(str(f))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{f}: cannot read weights: {e}") from None
    return tensors


def _is_flat(sd: Any) -> bool:
    return isinstance(sd, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())
