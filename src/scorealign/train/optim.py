"""Pieces the pretraining loops share: their lr schedule, the accelerator, the EMA update."""

from __future__ import annotations

import torch
from accelerate import Accelerator

from scorealign.run.loop import lr_at as schedule_lr
from scorealign.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay to 10%
    (:func:`scorealign.run.loop.lr_at` with ``floor=0.1``)."""
    return schedule_lr(step, cfg.lr, cfg.steps, cfg.warmup_steps, cfg.decay, floor=0.1)


def make_accelerator(device: str) -> Accelerator:
    """An Accelerator on the requested device (``auto``: CUDA when present)."""
    return Accelerator(cpu=device == "cpu" or (device == "auto" and not torch.cuda.is_available()))


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float, step: int) -> None:
    """θ_ema ← d θ_ema + (1 − d) θ with warm-up d = min(decay, (1+step)/(10+step))."""
    d = min(decay, (1 + step) / (10 + step))
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(d).add_(v.detach().to(ema[k].device), alpha=1 - d)
        else:
            ema[k].copy_(v)


