r"""Yardsticks against the exact optimum: sample distance, its sampler floor, score error.

- :func:`energy_distance` [Székely & Rizzo 2013, Eq. 2] and the sliced W2 of ``eval.metrics``
  compare samples with exact draws of p*_β (:func:`sample_distance`).
- :func:`floor`: what a sampler reaches with the *exact* score of the target at the same n, i.e.
  the distance its own discretization error plus finite-n noise leaves. A fine-tuned model
  sampled the same way cannot be expected to beat it.
- :func:`score_error`: E_t E_{x~p*_t} ‖s_θ(x, t) − ∇log p*_t(x)‖², the distance of a learned
  policy to the optimal action. With ``weight="g2"`` it is E_t[g(t)²‖·‖²]; ½T times that is the
  path KL(P* ‖ P_θ) of the η = 1 reverse SDEs started from the same prior (Girsanov).
- The reward gap to the exact frontier lives in ``testbed.frontier`` (:func:`reward_gap`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from scorealign.eval.metrics import sliced_wasserstein
from scorealign.samplers import sample
from scorealign.sde.base import SDE, as_time, bcast
from scorealign.sde.mixture import GaussianMixture
from scorealign.sde.param import to_score

_F64 = torch.float64
METRICS = ("energy", "sw2")
_CHUNK = 2048


def _mean_pairwise(x: Tensor, y: Tensor, same: bool) -> Tensor:
    """E‖X − Y‖ over all pairs (over i ≠ j when ``same``), chunked to bound memory; float64."""
    total = torch.zeros((), dtype=_F64)
    for i in range(0, x.shape[0], _CHUNK):
        total = total + torch.cdist(x[i:i + _CHUNK], y).sum()
    n, m = x.shape[0], y.shape[0]
    return total / (n * (n - 1) if same else n * m)


def energy_distance(x: Tensor, y: Tensor) -> float:
    r"""Squared energy distance between two samples, unbiased (U-statistics within each set).

    E²(P, Q) = 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ ≥ 0, zero iff P = Q   [Székely & Rizzo 13, Eq. 2]

    Args:
        x: [N, D] samples of P (N ≥ 2); y: [M, D] samples of Q (M ≥ 2).

    Returns:
        The estimate (float64; may dip slightly below 0 when P = Q).
    """
    x, y = x.detach().to(_F64).cpu(), y.detach().to(_F64).cpu()
    return float(2 * _mean_pairwise(x, y, False) - _mean_pairwise(x, x, True)
                 - _mean_pairwise(y, y, True))


def sample_distance(x: Tensor, target: GaussianMixture, generator: torch.Generator,
                    metric: str = "energy", n_ref: int | None = None) -> float:
    """Distance of samples ``x`` [N, D] to ``n_ref`` (default N) exact draws of ``target``.

    Args:
        x: samples to judge.
        target: the exact law (e.g. ``problem.target``).
        generator: draws the reference samples (and the sliced-W2 directions).
        metric: "energy" (:func:`energy_distance`) or "sw2" (sliced W2, 256 directions).
        n_ref: reference sample size; the finite-n floor depends on it, so compare runs at one n.
    """
    y = target.sample(n_ref or x.shape[0], generator, _F64)
    if metric == "energy":
        return energy_distance(x, y)
    if metric == "sw2":
        return sliced_wasserstein(x, y, generator)
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")


def floor(target: GaussianMixture, sde: SDE, generator: torch.Generator, *, n: int,
          sampler: str, steps: int, kind: str = "score", metric: str = "energy",
          eta: float | None = None, grid: str = "uniform") -> float:
    """The distance a sampler driven by the exact score of ``target`` leaves at sample size n.

    x_T ~ N(0, σ_T² I) (``sde.prior_sample``), integrated by ``samplers.sample`` with the exact
    ``kind`` prediction of ``target`` (``GaussianMixture.pred_fn``), in float64; then
    :func:`sample_distance` to n fresh exact draws. Includes the finite-n noise of the metric.
    """
    x_T = sde.prior_sample((n, target.dim), generator, _F64)
    res = sample(target.pred_fn(sde, kind), kind, sde, x_T, sampler=sampler, steps=steps,
                 eta=eta, grid=grid, generator=generator)
    return sample_distance(res.x0, target, generator, metric)


def score_error(pred_fn: Callable[[Tensor, Tensor], Tensor], kind: str, target: GaussianMixture,
                sde: SDE, generator: torch.Generator, *, n: int = 1024, n_t: int = 32,
                weight: str = "none") -> float:
    r"""E_t E_{x~p*_t} λ(t) ‖s_θ(x, t) − ∇log p*_t(x)‖² (squared norm summed over dimensions).

    t runs over the midpoints of n_t equal bins of [t_min, t_max] (a midpoint rule for the
    uniform E_t); at each t, n states x_t = m x₀ + s ε with x₀ ~ p*_β exact. λ = 1 (``weight=
    "none"``) or g(t)² (``"g2"``: ½(t_max − t_min)·result is the Girsanov path KL).

    Args:
        pred_fn: the model, ``pred_fn(x, t)`` → its ``kind`` prediction (converted to a score).
        kind: "eps", "x0", "score" or "v".
        target: p*_β (the optimum's terminal law).
        sde: the forward SDE defining p*_t.
        generator: draws x₀ and ε.
        n: states per time; n_t: number of times.
        weight: "none" or "g2".
    """
    if weight not in ("none", "g2"):
        raise ValueError(f"weight must be 'none' or 'g2'; got {weight!r}")
    lo, hi = sde.t_min, sde.t_max
    ts = lo + (torch.arange(n_t, dtype=_F64) + 0.5) / n_t * (hi - lo)
    total = 0.0
    for t in ts:
        tb = as_time(t).expand(n)
        mg = sde.marginal(tb)
        x0 = target.sample(n, generator, _F64)
        eps = torch.randn(x0.shape, generator=generator, dtype=_F64)
        x = bcast(mg.mean_coef, x0) * x0 + bcast(mg.std, x0) * eps
        with torch.no_grad():
            s_theta = to_score(pred_fn(x, tb), kind, x, tb, sde).to(_F64)
        err = (s_theta - target.score(x, tb, sde)).pow(2).sum(-1).mean()
        lam = sde.diffusion(t) ** 2 if weight == "g2" else 1.0
        total += float(lam * err)
    return total / n_t
