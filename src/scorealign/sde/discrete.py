"""A VP SDE whose ᾱ comes from a discrete (diffusers-style) schedule, for interop.

Timestep k ∈ {0, …, N−1} with ``alphas_cumprod[k]`` = ᾱ_k sits at t_k = (k + 1) T / N, and t = 0
carries ᾱ = 1 (diffusers' ``final_alpha_cumprod`` with ``set_alpha_to_one=True``). Between
nodes log ᾱ is linear in t, so β(t) = −d log ᾱ/dt is piecewise constant and the process is the
VP SDE dX = −½ β X dt + sqrt(β) dW [Song+21, Eq. 11] whose marginals equal DDPM's at every
node [Ho+20, Eq. 4].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scorealign.sde.base import SDE, SDES, Marginal, as_time

_SNAP = 1e-4  # snap times within 1e-4 timesteps of a node onto it (float32 times)


@SDES.register("discrete_vp", paper="Ho+20 (DDPM), arXiv:2006.11239", equation="Eq. 4")
@dataclass(frozen=True, eq=False)
class DiscreteVP(SDE):
    """VP SDE interpolating a discrete ᾱ schedule (``alphas_cumprod``, shape [N])."""

    alphas_cumprod: Tensor
    T: float = 1.0
    t_min: float | None = None  # default: T/N, the time of timestep 0

    def __post_init__(self) -> None:
        ab = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64).flatten()
        if ab.numel() < 1 or not bool(((ab > 0) & (ab <= 1)).all()):
            raise ValueError("alphas_cumprod must be a non-empty tensor with values in (0, 1]")
        object.__setattr__(self, "alphas_cumprod", ab)
        if self.t_min is None:
            object.__setattr__(self, "t_min", self.T / ab.numel())

    @classmethod
    def from_scheduler(cls, scheduler: Any, **kwargs: Any) -> "DiscreteVP":
        """Build from a diffusers scheduler that has ``alphas_cumprod`` (DDPM, DDIM, …)."""
        return cls(alphas_cumprod=scheduler.alphas_cumprod.clone(), **kwargs)

    @property
    def num_timesteps(self) -> int:
        """N."""
        return self.alphas_cumprod.numel()

    def timestep_to_t(self, k: Tensor | int) -> Tensor:
        """t = (k + 1) T / N (float64); k = −1 maps to t = 0."""
        return (torch.as_tensor(k, dtype=torch.float64) + 1.0) * self.T / self.num_timesteps

    def t_to_timestep(self, t: Tensor) -> Tensor:
        """The (fractional) timestep k = t N / T − 1."""
        return as_time(t) * self.num_timesteps / self.T - 1.0

    def _interp(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(log ᾱ(t), d log ᾱ/dt) with log ᾱ piecewise linear on the nodes."""
        t = as_time(t)
        n = self.num_timesteps
        logs = self._log_table(t.device)
        u = (t / self.T * n).clamp(0.0, float(n))
        u = torch.where((u - u.round()).abs() < _SNAP, u.round(), u)
        k = u.floor().clamp(max=n - 1).long()
        slope = logs[k + 1] - logs[k]
        return logs[k] + (u - k) * slope, slope * n / self.T

    def _log_table(self, device: torch.device) -> Tensor:
        """[0, log ᾱ_0, …, log ᾱ_{N−1}] on ``device``, computed once per device (a sampler step
        calls :meth:`_interp` several times; rebuilding and copying the table each time cost a
        host→device transfer per call on a GPU)."""
        cache = self.__dict__.setdefault("_log_tables", {})
        key = str(device)
        if key not in cache:
            cache[key] = torch.cat([torch.zeros(1, dtype=torch.float64),
                                    self.alphas_cumprod.log()]).to(device)
        return cache[key]

    def beta(self, t: Tensor) -> Tensor:
        """β(t) = −d log ᾱ/dt (piecewise constant)."""
        return -self._interp(t)[1]

    def drift_coef(self, t: Tensor) -> Tensor:
        """a(t) = −½ β(t)."""
        return -0.5 * self.beta(t)

    def diffusion(self, t: Tensor) -> Tensor:
        """g(t) = sqrt(β(t))."""
        return self.beta(t).clamp_min(0).sqrt()

    def marginal(self, t: Tensor) -> Marginal:
        """m = sqrt(ᾱ(t)), s = sqrt(1 − ᾱ(t))."""
        log_ab = self._interp(t)[0]
        return Marginal(torch.exp(0.5 * log_ab), (-torch.expm1(log_ab)).clamp_min(0).sqrt())

    @property
    def prior_std(self) -> float:
        """1 (diffusers' ``init_noise_sigma``)."""
        return 1.0
