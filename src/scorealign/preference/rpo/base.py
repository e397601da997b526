"""The base diffusion model that RPO samples from, edits with, and fine-tunes: model + SDE + task.

``load_base(path)`` accepts a pretraining run directory (its ``config.yaml`` names the SDE; the
model is ``final/`` or the latest checkpoint's EMA) or a model directory written by
``nets.save_pretrained`` (``model.safetensors`` + ``model_config.json``; the SDE then comes from
``sde``). The returned :class:`Base` conditions on prompts through the same
:class:`~scorealign.train.task.Task` the model was pretrained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from scorealign.data.digits import labels_from_prompts
from scorealign.nets import Cond
from scorealign.sde import SDE
from scorealign.train.task import DataConfig, SDEConfig, Task


@dataclass
class Base:
    """A conditional digits diffusion model with its forward SDE and conditioning."""

    model: nn.Module
    task: Task

    @property
    def sde(self) -> SDE:
        """The forward SDE."""
        return self.task.sde

    @property
    def kind(self) -> str:
        """The model's parameterization (eps, x0, score, v)."""
        return self.task.kind

    def cond(self, prompts: Sequence[str]) -> Cond:
        """Conditioning of ``prompts`` (label models read the digit from the text)."""
        if self.task.model_cfg.cond == "none":
            raise ValueError("RPO and Diffusion-DPO need a conditional base model "
                             "(model.cond label or text)")
        return self.task.cond_for(labels_from_prompts(prompts), list(prompts))

    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the model's images."""
        c = self.task.model_cfg
        return (c.channels, c.sample_size, c.sample_size)


def load_base(path: str | Path, sde: SDEConfig | None = None) -> Base:
    """Load a base model from a run directory or a model directory (see module docstring)."""
    from scorealign.rl.setup import resolve_base_path  # pretrained:<name> names
    path = Path(resolve_base_path(str(path)))
    if (path / "config.yaml").is_file() and (path / "model_config.json").is_file() \
            and not (path / "final").is_dir() and not (path / "checkpoints").is_dir():
        # A shipped pretrained asset (e.g. assets/pretrained/digits8): the pretraining config
        # beside the exported weights; its task (SDE, data) comes from the config.
        from scorealign.nets import load_pretrained
        from scorealign.train.evaluate import _read_config
        from scorealign.train.task import build_task

        cfg = _read_config(path / "config.yaml")
        task = build_task(cfg.data, cfg.sde, cfg.model)
        model = load_pretrained(path)
        task.model = model
        return Base(model.eval(), task)
    if (path / "config.yaml").is_file():
        from scorealign.train.evaluate import load_run

        _, task, model = load_run(path)
        task.model = model
        return Base(model.eval(), task)
    if (path / "model_config.json").is_file():
        from scorealign.nets import load_pretrained
        from scorealign.sde import build_sde

        model = load_pretrained(path)
        sde_cfg = sde or SDEConfig()
        cfg = model.config
        task = Task(DataConfig(name="digits", image_size=cfg.sample_size),
                    build_sde(sde_cfg.name, **sde_cfg.params), model, cfg)
        return Base(model.eval(), task)
    raise FileNotFoundError(f"{path}: neither a run directory (config.yaml) nor a model "
                            f"directory (model_config.json)")


@torch.no_grad()
def generate(base: Base, model: nn.Module, prompts: Sequence[str], *, steps: int = 25,
             guidance: float = 2.0, sampler: str = "ddim", eta: float | None = 0.0,
             seed: int = 0, batch_size: int = 256) -> Tensor:
    """Samples for ``prompts`` from ``model`` (the base or a fine-tuned copy), clamped to [-1, 1].

    Batches of ``batch_size`` draw their prior noise and sampler noise from
    ``generator(seed, "generate", batch index)``, so a call is reproducible.
    """
    from scorealign.train.task import SamplingConfig

    outs = []
    device = next(model.parameters()).device
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = list(prompts[start:start + batch_size])
        scfg = SamplingConfig(sampler=sampler, steps=steps, eta=eta, guidance=guidance,
                              seed=seed)
        x = base.task.generate(model, base.cond(chunk), len(chunk), scfg,
                               seed=hash_seed(seed, b), device=device)
        outs.append(x.clamp(-1.0, 1.0))
    return torch.cat(outs) if outs else torch.empty(0, *base.image_shape())


def hash_seed(seed: int, *keys: int | str) -> int:
    """An int seed derived from ``(seed, *keys)`` (``rng.derive_seed``)."""
    from scorealign.rng import derive_seed

    return derive_seed(seed, *keys) % (2**62)
