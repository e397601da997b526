r"""Rewards whose tilt of a Gaussian mixture is closed form.

- :class:`QuadraticReward` r(x) = −½ xᵀQx + qᵀx + r₀ covers the linear reward r = bᵀx (Q = 0) and
  the quadratic r = −½(x − c)ᵀA(x − c) (Q = A, q = Ac, r₀ = −½cᵀAc). e^{r/β} is a quadratic
  exponential at every β, so p*_β is closed form for every β (``tilt.quadratic_exp_tilt``), and so
  is E_{p*}[r] (Gaussian moments). The tilt needs Σ_k⁻¹ + Q/β ≻ 0 (always true for Q ⪰ 0).
- :class:`MixtureLogReward` r(x) = β₀ log Σ_j a_j N(x; c_j, S_j) is multi-modal; e^{r/β} is a
  Gaussian mixture only at β = β₀, where p*_{β₀} has K·J components
  (``tilt.mixture_product_tilt``). E_{p*}[r] (the log of a mixture) has no closed form: it is a
  fixed-seed Monte Carlo average over 2¹⁶ exact samples of p* (:attr:`exact` is False).

Every reward is called as ``reward(x)`` with x [B, D] and returns [B] in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorealign.rng import generator as seeded
from scorealign.sde.mixture import GaussianMixture
from scorealign.testbed.tilt import Tilt, mixture_product_tilt, quadratic_exp_tilt

_F64 = torch.float64
MC_SAMPLES = 2**16  # E_{p*}[r] of a MixtureLogReward: standard error ≈ sd(r)/256


@dataclass(frozen=True, eq=False)
class QuadraticReward:
    """r(x) = −½ xᵀQx + qᵀx + r₀ with Q [D, D] symmetric, q [D] (float64)."""

    Q: Tensor
    q: Tensor
    r0: float = 0.0
    exact = True  # E_{p*}[r] and KL(p*‖p₀) are closed form

    def __post_init__(self) -> None:
        Q = torch.as_tensor(self.Q, dtype=_F64)
        object.__setattr__(self, "Q", 0.5 * (Q + Q.T))
        object.__setattr__(self, "q", torch.as_tensor(self.q, dtype=_F64))

    @classmethod
    def linear(cls, b: Tensor) -> "QuadraticReward":
        """r(x) = bᵀx."""
        b = torch.as_tensor(b, dtype=_F64)
        return cls(torch.zeros(b.shape[0], b.shape[0], dtype=_F64), b)

    @classmethod
    def quadratic(cls, A: Tensor, c: Tensor) -> "QuadraticReward":
        """r(x) = −½(x − c)ᵀA(x − c) = −½xᵀAx + (Ac)ᵀx − ½cᵀAc."""
        A, c = torch.as_tensor(A, dtype=_F64), torch.as_tensor(c, dtype=_F64)
        return cls(A, A @ c, float(-0.5 * c @ A @ c))

    def __call__(self, x: Tensor) -> Tensor:
        """r(x) [B] (float64) for x [B, D]."""
        x = x.to(_F64)
        return -0.5 * ((x @ self.Q) * x).sum(-1) + x @ self.q + self.r0

    def tilt(self, base: GaussianMixture, beta: float) -> Tilt:
        """p*_β ∝ p₀ e^{r/β}: P = Q/β, h = q/β, c₀ = r₀/β (every β > 0)."""
        return quadratic_exp_tilt(base, self.Q / beta, self.q / beta, self.r0 / beta)

    def mean_under(self, mix: GaussianMixture) -> float:
        """E_mix[r] = Σ_k π_k (−½(tr(QΣ_k) + μ_kᵀQμ_k) + qᵀμ_k) + r₀, exact."""
        mu, cov = mix.means, mix.covs
        quad = torch.einsum("ij,kji->k", self.Q, cov) + ((mu @ self.Q) * mu).sum(-1)
        return float(mix.weights @ (-0.5 * quad + mu @ self.q) + self.r0)


@dataclass(frozen=True, eq=False)
class MixtureLogReward:
    """r(x) = β₀ log Σ_j a_j N(x; c_j, S_j); closed-form tilt at β = β₀ only."""

    bumps: GaussianMixture
    beta0: float = 1.0
    exact = False  # E_{p*}[r] by fixed-seed Monte Carlo (MC_SAMPLES draws)

    def __call__(self, x: Tensor) -> Tensor:
        """r(x) [B] (float64) for x [B, D]."""
        return self.beta0 * mixture_log_prob(self.bumps, x)

    def tilt(self, base: GaussianMixture, beta: float) -> Tilt:
        """p*_{β₀} ∝ p₀ Σ_j a_j N(c_j, S_j); raises for β ≠ β₀ (e^{r/β} is no mixture there)."""
        if not math.isclose(beta, self.beta0, rel_tol=1e-12):
            raise ValueError(f"MixtureLogReward has a closed-form tilt only at its own "
                             f"β₀ = {self.beta0}; got β = {beta}")
        return mixture_product_tilt(base, self.bumps)

    def mean_under(self, mix: GaussianMixture) -> float:
        """E_mix[r] by Monte Carlo over MC_SAMPLES exact draws, generator ("testbed", "E[r]")."""
        gen = seeded("testbed", "E[r]")
        chunk = 2**14  # bounds the memory
        total = sum(float(self(_draw(mix, chunk, gen)).sum()) for _ in range(MC_SAMPLES // chunk))
        return total / (MC_SAMPLES // chunk * chunk)


def _draw(mix: GaussianMixture, n: int, gen: torch.Generator) -> Tensor:
    """n exact draws [n, D] of ``mix`` (float64), one matrix product per component."""
    k = torch.multinomial(mix.weights, n, replacement=True, generator=gen)
    z = torch.randn(n, mix.dim, generator=gen, dtype=_F64)
    chol = torch.linalg.cholesky(mix.covs)
    x = torch.empty_like(z)
    for j in range(mix.weights.shape[0]):
        sel = k == j
        x[sel] = mix.means[j] + z[sel] @ chol[j].T
    return x


def mixture_log_prob(mix: GaussianMixture, x: Tensor) -> Tensor:
    """log Σ_j a_j N(x; c_j, S_j) [B] in float64 (einsum form of ``GaussianMixture.log_prob``)."""
    chol = torch.linalg.cholesky(mix.covs)  # [J, D, D]
    prec = torch.cholesky_inverse(chol)
    diff = x.to(_F64)[:, None, :] - mix.means[None]  # [B, J, D]
    quad = torch.einsum("bjd,jde,bje->bj", diff, prec, diff)
    logdet = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logn = -0.5 * (quad + logdet + mix.dim * math.log(2 * math.pi))
    return torch.logsumexp(mix.weights.log() + logn, -1)

Reward = QuadraticReward | MixtureLogReward
