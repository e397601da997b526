"""The continuous-time policy-optimization estimator, shared by ``control/`` and diffusion RL.

One estimator for both settings [Zhao+23 CTPO, arXiv:2305.18901; Jia & Zhou 2023 q-learning;
Score as Action, Zhao+25, arXiv:2502.01819, papers.md §4]:

* the **q-rate** (advantage per unit time) of step n is the one-step TD rate
  q̂_n = r_n + (e^{−βΔt_n} V(X_{n+1}) − V(X_n)) / Δt_n                          (:func:`td_q_rate`)
  — running reward rate r_n, discount β, any value estimate V; optionally smoothed over steps
  by GAE(λ) on the increments δ_n = q̂_n Δt_n (:func:`gae`, :func:`advantage_rates`);
* the **surrogate** is the time integral of the clipped rate under the occupation weights w_n
  (Δt_n, times e^{−βt_n} with discounting, divided by the number of paths):
  L = Σ_n w_n min(ρ_n q̂_n, clip(ρ_n, 1 ± ε) q̂_n)                          (:func:`ct_surrogate`)

A diffusion sampler is the special case r_n = 0, β = 0, terminal condition V(X_S) = reward:
the rates are (V_{k+1} − V_k)/Δt_k and Σ_k Δt_k q̂_k telescopes to r − V(X_0), so the
surrogate is a Riemann sum of a time integral whose value does not grow with the number of
steps. With a *constant* baseline (``batch``) no per-step value exists and the rate degenerates;
the trainer then uses the Monte Carlo advantage A = r − b at every step, for which the Δt weights
cancel (Σ_k Δt_k (A/Δt_k) = Σ_k A: summed PPO) — stated, not hidden (docs/methods/score_as_action).

``control/estimators.py`` (LSTD critic, occupation weights) and ``control/algorithms.py``
(CT-PG/PPO/TRPO) call :func:`td_q_rate`, :func:`gae` and :func:`ct_surrogate` from here; a test
casts an LQ problem as a "sampler" and checks that the diffusion path gives control's numbers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def td_q_rate(r: Tensor | float, v: Tensor, v_next: Tensor, dt: Tensor | float,
              beta: float = 0.0) -> Tensor:
    """q̂ = r + (e^{−βΔt} V(X_{n+1}) − V(X_n)) / Δt, the one-step estimate of q^π(X_n, a_n).

    Unbiased as Δt → 0 for the exact V [Jia & Zhou 2023; Zhao+23 CTPO]. ``dt`` may be a float
    or a tensor broadcastable to ``v`` (a non-uniform sampler grid).
    """
    if isinstance(dt, Tensor):
        return r + (torch.exp(-beta * dt) * v_next - v) / dt
    return r + (math.exp(-beta * dt) * v_next - v) / dt


def gae(g: Tensor, v: Tensor, v_next: Tensor, discount: float | Tensor, lam: float) -> Tensor:
    """GAE(λ): Â_n = Σ_l (κλ)^l δ_{n+l}, δ_n = g_n + κ V(X_{n+1}) − V(X_n); [N, B] (steps first).

    [Schulman+16 GAE, Eq. 16]; the truncated horizon bootstraps with V(X_N).
    """
    delta = g + discount * v_next - v
    adv = torch.zeros_like(delta)
    run = torch.zeros_like(delta[0])
    for n in range(delta.shape[0] - 1, -1, -1):
        k = discount if not isinstance(discount, Tensor) or discount.dim() == 0 else discount[n]
        run = delta[n] + k * lam * run
        adv[n] = run
    return adv


def clipped_surrogate(ratio: Tensor, adv: Tensor, clip: float | None) -> Tensor:
    """min(ρA, clip(ρ, 1 − ε, 1 + ε)A) elementwise; ρA without a clip  [Schulman+17, Eq. 7]."""
    surr = ratio * adv
    if clip is None:
        return surr
    return torch.minimum(surr, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)


def ct_surrogate(ratio: Tensor, q_rate: Tensor, weight: Tensor, clip: float | None) -> Tensor:
    """Σ w · min(ρ q̂, clip(ρ) q̂): the clipped CT-PPO local approximation (policy term).

    [Zhao+23 CTPO, local approximation L^π(π') − V^π with PPO clipping]. ``weight`` integrates
    against the occupation measure (Δt per step, e^{−βt} with discounting, 1/#paths).
    """
    return (weight * clipped_surrogate(ratio, q_rate, clip)).sum()


def advantage_rates(values: Tensor, terminal: Tensor, dt: Tensor, lam: float = 0.0) -> Tensor:
    """Per-step q-rates ``[B, S]`` of a terminal-reward sampler from per-step values.

    Args:
        values: ``[B, S]`` V(x_k, t_k) at the states each step starts from.
        terminal: ``[B]`` the reward, V(x_S) (the terminal condition).
        dt: ``[S]`` step lengths |t_{k+1} − t_k|.
        lam: GAE λ over the steps (0: pure TD rates; 1: Monte Carlo r − V_k, spread as A/Δt).
    Returns:
        q̂_k = GAE_λ(δ)_k / Δt_k with δ_k = V_{k+1} − V_k (r = 0, β = 0; :func:`td_q_rate`).
    """
    v = values.double()
    v_next = torch.cat([v[:, 1:], terminal.double()[:, None]], 1)
    d = dt.double().to(v.device)[None, :]
    inc = td_q_rate(0.0, v, v_next, d) * d  # δ_k = q̂_k Δt_k
    adv = gae(inc.T, torch.zeros_like(inc.T), torch.zeros_like(inc.T), 1.0, lam).T
    return (adv / d).to(values.dtype)
