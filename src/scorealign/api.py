"""The public Python API: every command of the CLI as a function.

Training: ``scorealign.finetune(...)``, ``pretrain``, ``dpo``, ``control`` (``scorealign.api.control``;
``scorealign.control`` is the package) and ``build_pairs``. Any run: ``load``, ``sample``,
``evaluate``, ``export`` and ``report``, which look the run's kind up once in the run-kind
registry (:mod:`scorealign.commands.kinds`).

Each training function resolves its config like the CLI (a YAML file or a shipped config's name,
``set`` overrides, or ``resume``'s ``config.yaml``), calls the command of
:mod:`scorealign.commands` and returns the run directory. Bad input raises a
:class:`~scorealign.errors.ScorealignError` subclass whose message names the file, line or
field; no function here exits the interpreter.

``load`` opens a run directory of any command and returns a :class:`Loaded` whose ``model`` is
ready to use (a digits diffusion model with its task, a diffusers pipeline, a transformers causal
LM with its tokenizer, or a control policy) and whose ``sample(prompts, n)`` draws from it.

``finetune(config, reward=fn, out=DIR)`` runs RL fine-tuning with a Python reward callable
``fn(images [B,C,H,W] in [-1,1], prompts: list[str], meta: dict) -> Tensor [B]``. An importable
callable (a module-level function of a module on the path) is recorded in the run's
``config.yaml`` by its import path (``package.module:function``), so ``scorealign finetune
--resume DIR`` finds it again. Any other callable (a lambda, a function of a notebook or of the
calling script) works too: the run records ``{name: in_process, key: ...}`` and says that a
resume needs the same callable again, ``resume(DIR, reward=fn)``; the CLI's ``--resume`` of
such a run exits 2 saying so.

``resume(RUN, set=[...])`` continues a run of any training command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from scorealign.commands.load import Loaded, load


def importable_path(fn: Callable) -> str | None:
    """``package.module:qualname`` of ``fn`` when that path imports back to it, else None
    (lambdas, nested functions, functions of ``__main__`` or of a notebook)."""
    import importlib

    mod, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in name:
        return None
    try:
        obj: Any = importlib.import_module(mod)
    except ImportError:
        return None
    for part in name.split("."):
        obj = getattr(obj, part, None)
    return f"{mod}:{name}" if obj is fn else None


def reward_config(fn: Callable | str | dict) -> str | dict:
    """What a run's ``config.yaml`` records for a reward given to :func:`finetune`.

    A name, import path or mapping is kept; an importable callable is recorded by its import
    path (``--resume`` imports it again); any other callable (a lambda, a function of a
    notebook or of the calling script) is held for this process
    (:func:`scorealign.rewards.inprocess.register_in_process`) and recorded as
    ``{name: in_process, key: ..., note: ...}``: resuming needs it passed again
    (:func:`resume` with ``reward=``).
    """
    if isinstance(fn, (str, dict)):
        return fn
    from scorealign.rewards.inprocess import register_in_process
    return importable_path(fn) or register_in_process(fn)


def reward_path(fn: Callable | str) -> str | dict:
    """Former name of :func:`reward_config` (kept for callers)."""
    return reward_config(fn)


def _rebind_rewards(resume: Path, given: dict[str, Any]) -> None:
    """On resume: hand the callables ``given`` (``reward.optimized``/``reward.gold`` → callable)
    to the run's in-process rewards; a resumed run keeps the rewards it recorded.

    Raises:
        UsageError: a callable given for a reward the run recorded otherwise (a name or an
            import path that is not this callable's).
    """
    import yaml

    from scorealign.errors import UsageError
    from scorealign.rewards.inprocess import is_in_process, register_in_process

    recorded = (yaml.safe_load((resume / "config.yaml").read_text()) or {}).get("reward") or {}
    for key, fn in given.items():
        rec = recorded.get(key.split(".")[1])
        if is_in_process(rec) and callable(fn):
            register_in_process(fn, rec["key"])
        elif fn != rec and not (callable(fn) and importable_path(fn) == rec):
            was = (f"the in-process callable {rec['key']!r}: pass that callable"
                   if is_in_process(rec) else f"{rec!r}")
            raise UsageError(f"{resume}: its {key} is {was}; a resumed run keeps its reward "
                             f"(reward=/gold= hand a run's in-process callable back to it)")


def _path(p: str | Path | None) -> Path | None:
    return Path(p) if p is not None else None


def finetune(config: str | Path | None = None, *, reward: Callable | str | None = None,
             gold: Callable | str | None = None, out: str | Path | None = None,
             resume: str | Path | None = None, set: list[str] | None = None) -> Path:  # noqa: A002
    """RL fine-tuning from Python; returns the run directory (see the module docstring).

    Args:
        config: a YAML file or a shipped config's name (``digits_loop``); None: the defaults.
        reward, gold: a callable or a reward name / import path / mapping
            (:func:`reward_config`: an importable callable is recorded by import path, any
            other one as an in-process reward). With ``resume``: the callable of a run that
            used an in-process reward, which a new process must be given again.
        out: the new run directory; resume: continue this run instead (its config.yaml).
        set: ``--set`` overrides, e.g. ``["train.epochs=2"]``.

    Raises:
        ScorealignError: a bad config (ConfigError, naming file:line: field), an unusable
            ``out`` or ``resume`` (UsageError, RunNotFoundError), a failing reward (RewardError).
    """
    import json
    import warnings

    from scorealign.commands import finetune as command
    from scorealign.commands.common import resolve_config
    from scorealign.rl.config import FinetuneConfig

    sets = list(set or [])
    given = {k: fn for k, fn in (("reward.optimized", reward), ("reward.gold", gold))
             if fn is not None}
    if resume is None:
        for key, fn in given.items():
            rec = reward_config(fn)
            sets.append(f"{key}={json.dumps(rec)}")
            if isinstance(rec, dict) and rec.get("name") == "in_process":
                warnings.warn(f"{key} {rec['key']!r} is an in-process callable (no import path "
                              f"finds it): the run records it as such, and resuming needs the "
                              f"same callable, scorealign.resume(RUN, reward=...); `scorealign "
                              f"finetune --resume` cannot", stacklevel=2)
    cfg = resolve_config(FinetuneConfig, config, sets, resume)  # RunNotFoundError first
    if resume is not None and given:
        _rebind_rewards(Path(resume), given)
    return command.finetune(cfg, _path(out) if resume is None else None, _path(resume))


def pretrain(config: str | Path | None = None, *, out: str | Path | None = None,
             resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
             ) -> Path:
    """Pretrain a diffusion model (DSM or consistency); returns the run directory, which holds
    ``final/``, ``eval.json`` and ``report.html``. Arguments as :func:`finetune`'s."""
    from scorealign.commands import pretrain as command
    from scorealign.commands.common import resolve_config
    from scorealign.train.pretrain import PretrainConfig

    cfg = resolve_config(PretrainConfig, config, set, resume)
    return command.pretrain(cfg, _path(out) if resume is None else None, _path(resume))


def dpo(config: str | Path | None = None, *, out: str | Path | None = None,
        resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
        ) -> Path:
    """Preference optimization of a causal LM (DPO, IPO, SimPO, ...) or, for a config with
    ``task: diffusion``, Diffusion-DPO; returns the run directory. A config or ``resume`` is
    required (UsageError otherwise); the other arguments as :func:`finetune`'s."""
    from scorealign.commands import dpo as command

    cfg = command.resolve_dpo_config(config, set, resume)
    return command.dpo(cfg, _path(out) if resume is None else None, _path(resume))["run_dir"]


def control(config: str | Path | None = None, *, out: str | Path | None = None,
            resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
            ) -> Path:
    """Continuous-time RL of a policy on a controlled SDE; returns the run directory.
    Arguments as :func:`finetune`'s."""
    from scorealign.commands import control as command
    from scorealign.commands.common import resolve_config
    from scorealign.control.train import ControlConfig

    cfg = resolve_config(ControlConfig, config, set, resume)
    return command.control(cfg, _path(out) if resume is None else None, _path(resume))


def build_pairs(config: str | Path | None = None, *, out: str | Path | None = None,
                set: list[str] | None = None, overwrite: bool = False  # noqa: A002
                ) -> Path:
    """Build a preference dataset (RPO or reward-labelled pairs) at ``out``; returns its
    directory. ``overwrite`` replaces a complete dataset there; the other arguments as
    :func:`finetune`'s."""
    from scorealign.commands import rpo as command
    from scorealign.commands.common import resolve_config
    from scorealign.preference.rpo.config import BuildPairsConfig

    cfg = resolve_config(BuildPairsConfig, config, set)
    return command.build_pairs(cfg, _path(out), overwrite=overwrite)[0]




def resume(run: str | Path, *, set: list[str] | None = None,  # noqa: A002
           reward: Callable | str | None = None, gold: Callable | str | None = None) -> Path:
    """``scorealign <command> --resume RUN`` for a run of any training command (its kind is
    read from the run); returns the run directory. ``set``: overrides written into its
    config.yaml, e.g. ``["train.epochs=8"]``. ``reward``/``gold``: the callables of a finetune
    run that used in-process rewards (see :func:`finetune`).

    Raises:
        RunNotFoundError: ``run`` is not a run directory; UsageError: ``reward``/``gold`` for a
            run that is not a finetune run, or that recorded another reward.
    """
    from scorealign.commands.kinds import kind_of
    from scorealign.errors import UsageError

    kind = kind_of(Path(run))
    if kind == "finetune":
        return finetune(resume=run, set=set, reward=reward, gold=gold)
    if reward is not None or gold is not None:
        raise UsageError(f"{run}: a {kind} run takes no reward")
    fn = {"pretrain": pretrain, "dpo": dpo, "diffusion_dpo": dpo, "control": control}.get(kind)
    if fn is None:
        raise UsageError(f"{run}: {kind} runs cannot be resumed")
    return fn(resume=run, set=set)


def sample(run: str | Path, prompts: list[str] | str | None = None, *, n: int = 10,
           sampler: str | None = None, steps: int | None = None, eta: float | None = None,
           guidance: float | None = None, seed: int = 0, out: str | Path | None = None) -> Path:
    """``scorealign sample``: write samples of ``run``'s model (a grid per class, or for the
    given prompts; completions for dpo runs; paths for control runs); returns the file."""
    from scorealign.commands.sample import sample as command
    prompts = [prompts] if isinstance(prompts, str) else prompts
    return command(run, prompts, n, sampler, steps, eta, guidance, seed, out).path


def evaluate(run: str | Path, *, sampler: str | None = None, steps: int | None = None,
             eta: float | None = None, guidance: float | None = None, n: int | None = None,
             name: str = "eval") -> dict[str, Any]:
    """``scorealign eval``: the run's metrics (beside its base model's where it has one),
    also written to ``RUN/<name>.json``."""
    from scorealign.commands.evaluate import evaluate as command
    return command(run, sampler, steps, eta, guidance, n, name).metrics


def export(run: str | Path, to: str | Path | None = None,
           checkpoint: str | Path | None = None, overwrite: bool = False) -> Path:
    """``scorealign export``: the run's model in its ecosystem's format (default ``RUN/final``),
    from ``checkpoint`` (default the newest); returns the directory written. ``to`` may not be a
    file, nor a non-empty directory scorealign did not write unless ``overwrite``."""
    from scorealign.commands.export import export_run
    return export_run(run, to, checkpoint, overwrite)


def report(run: str | Path, title: str | None = None) -> Path:
    """``scorealign report``: (re)write ``RUN/report.html``; returns its path."""
    from scorealign.commands.report import report as command
    return command(run, title)


__all__ = ["Loaded", "load", "finetune", "pretrain", "dpo", "control", "build_pairs", "resume",
           "sample", "evaluate", "export", "report", "reward_config", "reward_path",
           "importable_path"]
