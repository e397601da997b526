"""What the run-kind records share: a run's config and checkpoint, sampling overrides, output
files, and the digits models' load / draw / sample (pretrain, finetune on digits, Diffusion-DPO)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from scorealign.config import ConfigError, FieldError, config_from_dict
from scorealign.errors import ExportError, UsageError
from scorealign.run.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint


def read_run_config(run_dir: str | Path, schema: type) -> Any:
    """The run's resolved config (``config.yaml``) as ``schema``; errors name the file."""
    f = Path(run_dir) / "config.yaml"
    try:
        data = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{f}: invalid YAML: {' '.join(str(e).split())}") from None
    return config_from_dict(data, schema, src=str(f))


def run_checkpoint(run_dir: Path, checkpoint: str | Path | None = None) -> tuple[dict, dict]:
    """(states, extra) of ``checkpoint`` (a name under ``RUN/checkpoints`` or a path; default
    the newest); ExportError when there is none."""
    if checkpoint is not None:
        ck = Path(checkpoint)
        ck = ck if ck.is_dir() else run_dir / "checkpoints" / str(checkpoint)
    else:
        ck = latest_checkpoint(run_dir / "checkpoints")
    if ck is None or not ck.is_dir():
        raise ExportError(f"{run_dir}: no checkpoint {checkpoint or ''} to export".replace(
            "  ", " "))
    return load_checkpoint(ck)


def sampling_overrides(cfg: Any, sampler=None, steps=None, eta=None, guidance=None, n=None):
    """Copy of a SamplingConfig with the non-None options applied; a bad value is a UsageError
    naming the option (``--steps: ...``)."""
    changes = {k: v for k, v in dict(sampler=sampler, steps=steps, eta=eta, guidance=guidance,
                                     num_eval=n).items() if v is not None}
    try:
        return dataclasses.replace(cfg, **changes)
    except FieldError as e:
        raise UsageError(f"--{'n' if e.field == 'num_eval' else e.field}: {e}") from None


def slug(text: str) -> str:
    """A file-name-safe form of a prompt ("a handwritten 7" → "a_handwritten_7")."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "prompt"


def prompt_tag(prompts: list[str] | None) -> str:
    """The part of a sample file's name that names its prompts ("classes" without prompts)."""
    return "_".join(slug(p) for p in prompts)[:80] if prompts else "classes"


def samples_dir(loaded: Any) -> Path:
    """Where ``sample`` writes by default: the loaded run's ``samples_dir`` (``RUN/samples``,
    or ``./samples/<name>`` for a shipped ``pretrained:<name>`` model)."""
    if getattr(loaded, "samples_dir", None) is not None:
        return Path(loaded.samples_dir)
    return Path(loaded.run_dir) / "samples"


def out_file(out: Path | None, default: Path) -> Path:
    """``out`` (checked writable) or ``default``; a UsageError naming the path when unusable."""
    path = Path(out) if out is not None else default
    if path.is_dir():
        raise UsageError(f"--out {path}: is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write there ({e.strerror or e})") from None
    return path


def digits_from_dir(final: Path, fallback: Callable[[], Any]) -> Any:
    """The digits model exported in ``final`` (``model.safetensors``), else ``fallback()``."""
    from safetensors import SafetensorError

    from scorealign.nets import load_pretrained

    if (final / "model.safetensors").is_file():
        try:
            return load_pretrained(final)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{final / 'model.safetensors'}: cannot read the model: "
                                  f"{' '.join(str(e).split())}") from None
    return fallback()


@torch.no_grad()
def draw_digits(loaded: Any, prompts: list[str], n: int, seed: int, base: bool) -> torch.Tensor:
    """``n`` samples per prompt of a digits model with its task: ``[len(prompts)·n, C, H, W]``."""
    from scorealign.data import labels_from_prompts

    rows = [p for p in prompts for _ in range(n)]
    model = loaded.base if base else loaded.model
    task = loaded.task
    cond = None
    if task.model_cfg.cond != "none":
        cond = task.cond_for(labels_from_prompts(rows), rows)
    scfg = dataclasses.replace(loaded.sampling, seed=seed)
    return generate_images(task, model, cond, len(rows), scfg)


#: the data range of image tasks: the digits are scaled to [-1, 1] (``scorealign.data``)
IMAGE_RANGE = (-1.0, 1.0)


def generate_images(task: Any, model: Any, cond: Any, n: int, scfg: Any) -> torch.Tensor:
    """``task.generate`` clamped to the data range (:data:`IMAGE_RANGE`) on image tasks: the one
    sampling path of ``scorealign sample`` and ``Loaded.sample``.

    The sampler's last step returns the model's x̂₀ unclipped (the ε-parameterization's
    x₀ = (x_t − σ_t ε̂)/α_t; diffusers' schedulers clip it with ``clip_sample``), and a fine-tuned
    model whose reward sees clamped images (``reward.clamp``) is never pulled back into range,
    so its raw samples can leave [-1, 1] far; a saved image shows the clamped values. 2-D tasks
    are returned as drawn."""
    x = task.generate(model, cond, n, scfg)
    return x.clamp(*IMAGE_RANGE) if task.is_image else x


def sample_digits(loaded: Any, req: Any) -> Any:
    """A grid per class, or ``req.n`` samples of each prompt, with the run's sampler overridden
    by the request's options; the file name carries prompts, sampler, steps and seed."""
    from scorealign.commands.kinds import Sampled
    from scorealign.data import labels_from_prompts
    from scorealign.report.figures import save_image_grid
    from scorealign.train.evaluate import sample_grid

    task, model, run_dir, n = loaded.task, loaded.model, loaded.run_dir, req.n
    scfg = dataclasses.replace(sampling_overrides(loaded.sampling, req.sampler, req.steps,
                                                  req.eta, req.guidance), seed=req.seed)
    path = out_file(req.out, samples_dir(loaded) /
                    f"sample_{prompt_tag(req.prompts)}_{scfg.sampler}_{scfg.steps}"
                    f"_seed{req.seed}.png")
    if req.prompts and (not task.is_image or task.model_cfg.cond == "none"):
        raise UsageError(f"{run_dir} holds an unconditional model; --prompt needs a label or "
                         f"text model")
    if req.prompts:
        try:
            labels = labels_from_prompts(req.prompts).repeat_interleave(n)
        except ValueError as e:
            raise UsageError(str(e)) from None
        prompts = [p for p in req.prompts for _ in range(n)]
        x = generate_images(task, model, task.cond_for(labels, prompts), len(prompts), scfg)
        save_image_grid(x, path, nrow=n)
    elif task.is_image:  # a grid with one row per class (10 × n)
        labels = torch.arange(10).repeat_interleave(n)
        cond = None if task.model_cfg.cond == "none" else task.cond_for(labels)
        with torch.no_grad():
            save_image_grid(generate_images(task, model, cond, len(labels), scfg), path, nrow=n)
    else:
        with torch.no_grad():
            sample_grid(task, model, scfg, path, per_class=n)
    return Sampled(path)


__all__ = ["read_run_config", "run_checkpoint", "sampling_overrides", "slug", "prompt_tag",
           "out_file", "digits_from_dir", "draw_digits", "generate_images", "sample_digits",
           "IMAGE_RANGE"]
