"""The Gaussian step kernel of a sampler and its log-density, computed in one place.

Every stochastic step of ``samplers.steps`` is x_next = mean + std · z with z ~ N(0, I), so
p(x_next | x) = N(mean, std² I) exactly and anyone holding (x_next, mean, std) can recompute the
log-probability of a recorded transition (e.g. under new weights, for a policy-gradient ratio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorealign.sde.base import bcast, log_prob_dtype


@dataclass(frozen=True)
class GaussianStep:
    """One sampler step: x_next = mean + std · z.

    Attributes:
        x_next: the new state, [B, *D].
        mean: kernel mean, [B, *D].
        std: kernel standard deviation per sample, [B]; zeros for a deterministic step (then the
            step has no log-density and :func:`gaussian_log_prob` raises).
        std_value: the std as a host float when it is the same for every row and known on the
            host (the samplers' one-time fast path); None otherwise. Lets callers decide
            "deterministic?" without reading the device.
    """

    x_next: Tensor
    mean: Tensor
    std: Tensor
    std_value: float | None = None

    @property
    def deterministic(self) -> bool:
        """True when every std is zero."""
        if self.std_value is not None:
            return self.std_value == 0.0
        return bool((self.std == 0).all())

    def log_prob(self, x_next: Tensor | None = None, reduce: str = "sum") -> Tensor:
        """log N(x_next; mean, std² I) [B] of ``x_next`` (default: this step's own sample)."""
        return gaussian_log_prob(self.x_next if x_next is None else x_next, self.mean, self.std,
                                 reduce=reduce, std_value=self.std_value)


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor, reduce: str = "sum",
                      std_value: float | None = None) -> Tensor:
    r"""Exact isotropic Gaussian log-density, reduced over the non-batch dimensions, in fp32.

    log N(x; μ, σ² I) = Σ_d [−(x_d − μ_d)²/(2σ²) − log σ − ½ log 2π]  [Ho+20, Eq. 1 kernel]

    Args:
        x: points, [B, *D].
        mean: means, [B, *D].
        std: per-sample standard deviations, [B] (or broadcastable to x).
        reduce: ``"sum"`` (the exact joint log-density; default) or ``"mean"`` (divided by the
            number of dimensions, as ddpo-pytorch / flow_grpo do: it rescales log-ratios and
            hence PPO clip ranges by 1/D).

    Returns:
        Log-density per sample, [B], fp32 (fp64 for fp64 inputs).

    Raises:
        ValueError: if any std is zero (a deterministic step has no density) or ``reduce`` is
            not "sum"/"mean".
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    dtype = log_prob_dtype(torch.promote_types(x.dtype, mean.dtype))
    std = torch.as_tensor(std, device=x.device).to(dtype)
    if (std_value == 0.0) if std_value is not None else bool((std == 0).any()):
        raise ValueError("gaussian_log_prob: std == 0 (a deterministic step has no log-density)")
    sd = bcast(std, x) if std.dim() == 1 and x.dim() > 1 else std
    z = (x.to(dtype) - mean.to(dtype)) / sd
    logp = -0.5 * z.pow(2) - torch.log(sd) - 0.5 * math.log(2 * math.pi)
    logp = logp.expand_as(z).flatten(1)
    return logp.sum(1) if reduce == "sum" else logp.mean(1)
