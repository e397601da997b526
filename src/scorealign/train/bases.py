"""The one base-model loader: ``load_base(spec)`` for ``pretrained:NAME``, a pretraining run
directory, or a model directory.

* ``pretrained:NAME``: a model shipped in ``scorealign/assets/pretrained/NAME`` (its pretraining
  ``config.yaml`` beside the exported ``model.safetensors`` + ``model_config.json``);
* a run directory (``config.yaml``): a ``scorealign pretrain`` run; the model is ``final/`` or the
  newest checkpoint's EMA (:func:`load_run`);
* a model directory (``model.safetensors`` + ``model_config.json``, ``nets.save_pretrained``):
  the SDE comes from ``sde`` (default VP), the data from the model's sample size.

The :class:`Base` it returns is a conditional digits diffusion model with its
:class:`~scorealign.train.task.Task` (SDE, conditioning, sampler), used by RL fine-tuning, RPO,
Diffusion-DPO, consistency distillation and ``scorealign.load``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import yaml
from torch import nn

from scorealign.config import config_from_dict
from scorealign.data.digits import labels_from_prompts
from scorealign.nets import Cond, build_model, load_pretrained
from scorealign.run.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from scorealign.run.rundir import RunDir
from scorealign.sde import SDE, build_sde
from scorealign.train.task import DataConfig, SDEConfig, Task, build_task

PRETRAINED = Path(__file__).resolve().parents[1] / "assets" / "pretrained"
PRETRAINED_DIGITS8 = PRETRAINED / "digits8"


@dataclass
class Base:
    """A digits diffusion model with its forward SDE and conditioning."""

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


def resolve_base_path(path: str | Path) -> Path:
    """``pretrained:<name>`` → shipped ``scorealign/assets/pretrained/<name>``; else the path."""
    path = str(path)
    if path.startswith("pretrained:"):
        shipped = PRETRAINED / path.split(":", 1)[1]
        if not shipped.is_dir():
            raise FileNotFoundError(f"base.path {path!r}: no shipped model at {shipped}; give a "
                                    f"pretraining run directory (scorealign pretrain --out DIR)")
        return shipped
    return Path(path)


def read_pretrain_config(config_file: Path) -> "PretrainConfig":  # noqa: F821
    """A pretraining run's ``config.yaml`` as :class:`~scorealign.train.pretrain.PretrainConfig`."""
    from scorealign.train.config import PretrainConfig
    return config_from_dict(yaml.safe_load(Path(config_file).read_text()) or {}, PretrainConfig,
                            src=str(config_file))


def _read_model(final: Path) -> nn.Module:
    from safetensors import SafetensorError
    try:
        return load_pretrained(final)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{final / 'model.safetensors'}: cannot read the model: "
                              f"{' '.join(str(e).split())}") from None


def load_run(run_dir: str | Path) -> tuple["PretrainConfig", Task, nn.Module]:  # noqa: F821
    """Config, task and trained model (``final/``, else the latest checkpoint's EMA) of a
    pretraining run, in eval mode."""
    run = RunDir.open(run_dir)
    cfg = read_pretrain_config(run.config_file)
    task = build_task(cfg.data, cfg.sde, cfg.model)
    final = run.path / "final"
    if not (final / "model.safetensors").is_file() and (run.path / "model_config.json").is_file():
        final = run.path  # a model directory with its config (the shipped digits8)
    if (final / "model.safetensors").is_file():
        model = _read_model(final)
    else:
        ckpt = latest_checkpoint(run.checkpoints)
        if ckpt is None:
            raise FileNotFoundError(f"{run.path}: no final/ model and no checkpoint to load")
        states, _ = load_checkpoint(ckpt)
        model = build_model(cfg.model)
        model.load_state_dict(states["ema"])
    return cfg, task, model.eval()


def load_pretrained_digits(device: str | torch.device = "cpu"
                           ) -> tuple["PretrainConfig", Task, nn.Module]:  # noqa: F821
    """The shipped text-conditional 8×8 digits model: (config, task, model) in eval mode.

    ``task.generate(model, task.cond_for(labels), n, cfg.sample)`` draws digits for labels;
    ``task.sde`` (VP), ``task.kind`` ("eps") and ``task.pred_fn(model, cond, guidance)`` give
    what a sampler or an RL fine-tuner needs. The weights are the EMA of
    ``scorealign pretrain --config configs/pretrain/digits.yaml`` (see the asset's README.md).
    """
    cfg = read_pretrain_config(PRETRAINED_DIGITS8 / "config.yaml")
    task = build_task(cfg.data, cfg.sde, cfg.model)
    model = load_pretrained(PRETRAINED_DIGITS8, device=device)
    task.model = model
    return cfg, task, model


def load_base(spec: str | Path, sde: SDEConfig | None = None) -> Base:
    """The base model named by ``spec`` (see the module docstring), in eval mode, with
    ``base.task.model`` set to it.

    Raises:
        FileNotFoundError: ``spec`` is none of the three; CheckpointError: unreadable weights.
    """
    if str(spec) == "pretrained:digits8":  # the shipped checkpoint, through its loader
        _, task, model = load_pretrained_digits()
        return Base(model.eval(), task)
    path = resolve_base_path(spec)
    if (path / "config.yaml").is_file() and (path / "model_config.json").is_file() \
            and not (path / "final").is_dir() and not (path / "checkpoints").is_dir():
        # a shipped pretrained asset: the pretraining config beside the exported weights
        cfg = read_pretrain_config(path / "config.yaml")
        task = build_task(cfg.data, cfg.sde, cfg.model)
        model = load_pretrained(path)
    elif (path / "config.yaml").is_file():
        _, task, model = load_run(path)
    elif (path / "model_config.json").is_file():
        model = load_pretrained(path)
        sde_cfg = sde or SDEConfig()
        mcfg = model.config
        task = Task(DataConfig(name="digits", image_size=mcfg.sample_size),
                    build_sde(sde_cfg.name, **sde_cfg.params), model, mcfg)
    else:
        raise FileNotFoundError(f"base.path {str(spec)!r}: {path} is neither a run directory "
                                f"(config.yaml) nor a model directory (model_config.json)")
    task.model = model
    return Base(model.eval(), task)


def load_digits_base(path: str | Path) -> tuple[Task, nn.Module]:
    """``(task, model)`` of :func:`load_base` (the RL and consistency trainers' form)."""
    base = load_base(path)
    return base.task, base.model


__all__ = ["Base", "PRETRAINED", "PRETRAINED_DIGITS8", "resolve_base_path",
           "read_pretrain_config", "load_run", "load_pretrained_digits", "load_base",
           "load_digits_base"]
