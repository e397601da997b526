r"""The optimal reward–KL frontier of a testbed problem.

R*(κ) = max{E_q[r] : KL(q‖p₀) ≤ κ} is attained by the Gibbs tilt p*_β with KL(p*_β‖p₀) = κ
[Donsker & Varadhan 75; Csiszár 75]; β ↦ (KL(p*_β‖p₀), E_{p*_β}[r]) is decreasing in both
coordinates, so R*(κ) is found by bisection on log β. The frontier's KL is the *terminal* one;
a run's path KL upper-bounds its terminal KL (data processing), so R* at the run's path KL is an
upper bound on the reward it could have reached with its terminal KL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorealign.testbed.problems import Problem

_F64 = torch.float64
BETA_RANGE = (1e-4, 1e6)  # the bisection bracket for β(κ)
_BISECT_ITERS = 80  # 2⁻⁸⁰ of the bracket's log-width: below float64 resolution


@dataclass(frozen=True)
class Frontier:
    """Points of the frontier, sorted by increasing KL (decreasing β); float64 [N] each."""

    betas: Tensor
    kl: Tensor
    reward: Tensor


def frontier(problem: Problem, betas: Tensor | list[float]) -> Frontier:
    """(KL(p*_β‖p₀), E_{p*_β}[r]) at each β; exact for rewards with ``exact`` closed forms.

    Args:
        problem: any problem whose reward tilts in closed form at every β (not the multi-modal
            reward, which is closed form at its own β₀ only).
        betas: the β values, any order.

    Returns:
        :class:`Frontier` sorted by decreasing β.
    """
    b = torch.as_tensor(betas, dtype=_F64).sort(descending=True).values
    pts = [problem.at(float(x)) for x in b]
    return Frontier(b, torch.tensor([p.kl() for p in pts], dtype=_F64),
                    torch.tensor([p.expected_reward() for p in pts], dtype=_F64))


def beta_at_kl(problem: Problem, kl: float) -> float:
    """β with KL(p*_β‖p₀) = kl, by bisection on log β within ``BETA_RANGE``.

    Raises ValueError where kl lies outside the KLs of the bracket's ends.
    """
    lo, hi = math.log(BETA_RANGE[0]), math.log(BETA_RANGE[1])
    k_lo, k_hi = problem.at(math.exp(lo)).kl(), problem.at(math.exp(hi)).kl()
    if not k_hi <= kl <= k_lo:
        raise ValueError(f"KL {kl} is outside the frontier's range [{k_hi}, {k_lo}] over "
                         f"β ∈ {BETA_RANGE}")
    for _ in range(_BISECT_ITERS):
        mid = 0.5 * (lo + hi)
        if problem.at(math.exp(mid)).kl() > kl:  # KL falls as β grows
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def frontier_reward(problem: Problem, kl: float) -> float:
    """R*(κ): the best expected reward at KL(q‖p₀) ≤ κ (E_{p₀}[r] at κ ≤ 0).

    Beyond the KL of β = ``BETA_RANGE[0]`` it is that end's reward (R* is non-decreasing and
    flat there up to 1e-4 of β: a run whose path KL exceeds it, e.g. Diffusion-DPO's, is
    compared with the frontier's end); NaN for a NaN κ (a diverged run).
    """
    if math.isnan(kl):
        return float("nan")
    end = problem.at(BETA_RANGE[0])
    if kl >= end.kl():
        return end.expected_reward()
    if kl <= problem.at(BETA_RANGE[1]).kl():
        return problem.base_reward() if kl <= 0 else problem.at(BETA_RANGE[1]).expected_reward()
    return problem.at(beta_at_kl(problem, kl)).expected_reward()


def reward_gap(problem: Problem, kl: float, reward: float) -> float:
    """R*(κ) − reward for a run at KL κ with mean reward ``reward`` (≥ 0 up to estimation error)."""
    return frontier_reward(problem, kl) - reward
