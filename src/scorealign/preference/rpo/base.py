"""Sampling from the base diffusion model that RPO samples from, edits with, and fine-tunes.

:class:`Base` and ``load_base`` are the one base loader's (:mod:`scorealign.train.bases`);
re-exported here for the RPO modules.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from scorealign.train.bases import Base, load_base  # noqa: F401 (re-export)


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
