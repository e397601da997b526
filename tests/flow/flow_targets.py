"""Closed-form flow targets shared by the flow tests."""

from __future__ import annotations

import torch


def gaussian_velocity(c: float):
    """Exact v(x, t) = E[ε − x_0 | x_t = x] for x_0 ~ N(0, c² I): x · (t − (1−t)c²)/s_t²,
    s_t² = (1 − t)² c² + t² (x_t is Gaussian with that variance)."""
    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64).view(-1, *([1] * (x.dim() - 1)))
        s2 = (1 - t) ** 2 * c**2 + t**2
        return (x.to(torch.float64) * (t - (1 - t) * c**2) / s2).to(x.dtype)
    return v
