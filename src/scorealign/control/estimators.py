"""Value, q-function and advantage estimators for continuous-time and discrete-time RL.

Continuous time [Zhao+23 CTPO, arXiv:2305.18901; Jia & Zhou 2023 (q-learning)]:

* value: V^π(x) = E ∫₀^∞ e^{−βt}(r − γ log π) dt, Monte Carlo with occupation weights, or a
  linear critic fitted by LSTD on the discretized martingale condition
  E[(r − γ log π)Δt + e^{−βΔt} V(X_{n+1}) − V(X_n) | X_n] = O(Δt²);
* q-function: q^π(x, a) = H(x, a, ∂V, ∂²V) − βV(x), whose one-step estimate is the TD rate
  q̂_n = r_n + (e^{−βΔt} V(X_{n+1}) − V(X_n)) / Δt  (unbiased as Δt → 0 for the exact V);
* soft advantage A_n = q̂_n − γ log π(a_n|X_n), with E_{a∼π}[q − γ log π] = 0 (Feynman–Kac).

Discrete time (the baselines): per-step rewards g_n, per-step discount, GAE(λ) advantages
[Schulman+16 GAE, Eq. 16], normalized per batch as in common PPO implementations.

A :class:`PolicyBatch` flattens the (step, path) grid into rows with a weight each: for the CT
family the weights integrate against the occupation measure per initial state (Σ weight ≈ 1/β),
so CT surrogates are in value units; for the DT family the weights are uniform (sum 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorealign.control.policy import (GaussianPolicy, LinearCritic, gaussian_entropy,
                                       monomial_exponents, q_features, q_features_mean)
from scorealign.control.simulate import Rollout, occupation_weights
from scorealign.ct import gae, td_q_rate  # the CT estimator shared with diffusion RL


@dataclass(frozen=True)
class PolicyBatch:
    """Rows (X_n, a_n) with log π_old, advantage and weight; mean_old/log_std_old for KL terms.

    x: [R, d]; a: [R, m]; logp_old: [R]; adv: [R]; weight: [R]; mean_old: [R, m];
    log_std_old: [m]; gamma: entropy temperature γ of the objective.
    """

    x: Tensor
    a: Tensor
    logp_old: Tensor
    adv: Tensor
    weight: Tensor
    mean_old: Tensor
    log_std_old: Tensor
    gamma: float


def discounted_return(ro: Rollout, beta: float, gamma: float, mode: str = "discount") -> Tensor:
    """Per-path Σ_n w_n (r_n − γ log π_n): a Monte Carlo draw of V^π(X₀), [B].

    With ``mode="exponential"`` it is the undiscounted integral up to τ ~ Exp(β) (no truncation).
    """
    w = occupation_weights(ro, beta, mode)
    return (w * (ro.rewards - gamma * ro.log_probs)).sum(0)


def lstd_value(phi: Tensor, phi_next: Tensor, g: Tensor, weight: Tensor, discount: float,
               ridge: float = 1e-8) -> Tensor:
    """Weighted LSTD(0): solve Σ w φ (φ − κ φ')ᵀ θ = Σ w φ g for a linear critic V = θ·φ.

    [Bradtke & Barto 96, LSTD]; with g = (r − γ log π)Δt and κ = e^{−βΔt} this is the
    discretized martingale condition of V^π. Args: phi, phi_next [R, F]; g, weight [R].
    ``ridge`` is relative to the mean diagonal of the system matrix.
    """
    wphi = phi * weight[:, None]
    A = wphi.T @ (phi - discount * phi_next)
    b = wphi.T @ g
    reg = ridge * A.diagonal().abs().mean().clamp_min(1e-300)
    return torch.linalg.solve(A + reg * torch.eye(A.shape[0], dtype=A.dtype), b)


def _rows(ro: Rollout, policy: GaussianPolicy, adv: Tensor, weight: Tensor,
          gamma: float) -> PolicyBatch:
    keep = weight.reshape(-1) > 0
    x = ro.xs[:-1].reshape(-1, ro.xs.shape[-1])[keep]
    with torch.no_grad():
        mean_old = policy.mean(x)
    return PolicyBatch(x, ro.actions.reshape(-1, ro.actions.shape[-1])[keep],
                       ro.log_probs.reshape(-1)[keep], adv.reshape(-1)[keep],
                       weight.reshape(-1)[keep], mean_old, policy.log_std.detach().clone(), gamma)


def weighted_least_squares(feat: Tensor, y: Tensor, weight: Tensor, ridge: float = 1e-8) -> Tensor:
    """argmin_c Σ w (y − feat·c)² (+ relative ridge), via the normal equations; [F]."""
    wf = feat * weight[:, None]
    A = wf.T @ feat
    reg = ridge * A.diagonal().abs().mean().clamp_min(1e-300)
    return torch.linalg.solve(A + reg * torch.eye(A.shape[0], dtype=A.dtype), wf.T @ y)


def regression_advantage(x: Tensor, a: Tensor, q_hat: Tensor, logp: Tensor, weight: Tensor,
                         policy: GaussianPolicy, gamma: float, degree: int = 2,
                         ridge: float = 1e-8) -> Tensor:
    """Soft advantage from a fitted q-function: q_c(x,a) − γ log π(a|x) − E_{a'∼π}[q_c − γ log π].

    q_c = c·ψ(x, a) is the weighted least-squares fit of the TD rates q̂ (E[q̂|x,a] → q^π(x,a)),
    quadratic in a; the subtracted state baseline E_π q_c(x,·) + γ Entropy(π(·|x)) is analytic,
    so the advantage has mean zero under π at every state, as the true one does. Unlike q̂,
    whose per-sample noise grows like Δt^{−1/2}, the fit pools all samples. Shapes [R].
    """
    exps = monomial_exponents(x.shape[-1], degree)
    c = weighted_least_squares(q_features(x, a, exps), q_hat, weight, ridge)
    with torch.no_grad():
        mean = policy.mean(x)
        base = (q_features_mean(x, mean, policy.log_std, exps) @ c
                + gamma * gaussian_entropy(policy.log_std))
    return q_features(x, a, exps) @ c - gamma * logp - base


def build_ct_batch(ro: Rollout, policy: GaussianPolicy, critic: LinearCritic, beta: float,
                   gamma: float, mode: str = "discount", q_estimator: str = "td",
                   q_degree: int = 2, ridge: float = 1e-8) -> tuple[PolicyBatch, dict[str, float]]:
    """Fit V by LSTD on the occupation-weighted transitions, estimate q, form soft advantages.

    ``q_estimator``: ``td`` uses A_n = q̂_n − γ log π_n row by row; ``regression`` uses
    :func:`regression_advantage`. Weights are w_n / B (Σ ≈ 1/β), so Σ_rows weight·f ≈
    ∫ d^π_{μ₀}(dy) f(y) [Zhao+23 CTPO].
    """
    w = occupation_weights(ro, beta, mode) / ro.xs.shape[1]
    phi, phi_next = critic.features(ro.xs[:-1]), critic.features(ro.xs[1:])
    F = phi.shape[-1]
    g = (ro.rewards - gamma * ro.log_probs) * ro.dt
    critic.w = lstd_value(phi.reshape(-1, F), phi_next.reshape(-1, F), g.reshape(-1),
                          w.reshape(-1), math.exp(-beta * ro.dt), ridge)
    v, v_next = phi @ critic.w, phi_next @ critic.w
    q = td_q_rate(ro.rewards, v, v_next, ro.dt, beta)
    adv = q - gamma * ro.log_probs
    if q_estimator == "regression":
        d, m = ro.xs.shape[-1], ro.actions.shape[-1]
        adv = regression_advantage(ro.xs[:-1].reshape(-1, d), ro.actions.reshape(-1, m),
                                   q.reshape(-1), ro.log_probs.reshape(-1), w.reshape(-1),
                                   policy, gamma, q_degree, ridge)
    elif q_estimator != "td":
        raise ValueError(f"q_estimator must be 'td' or 'regression', got {q_estimator!r}")
    diag = {"critic/v0_mean": float(v[0].mean()), "occupation/mass": float(w.sum())}
    return _rows(ro, policy, adv, w, gamma), diag


def build_dt_batch(ro: Rollout, policy: GaussianPolicy, critic: LinearCritic, discount: float,
                   lam: float, entropy_per_step: float, normalize: bool = True,
                   ridge: float = 1e-8, advantage: str = "gae",
                   q_degree: int = 2) -> tuple[PolicyBatch, dict[str, float]]:
    """Ordinary discrete-time batch: g_n = r_n Δt − α log π_n, LSTD critic, GAE(λ), uniform rows.

    Args:
        discount: per-step discount κ.  lam: GAE λ.  entropy_per_step: α, the soft-reward
        weight per step (α = γΔt reproduces the continuous objective).  normalize: standardize
        advantages over the batch (the usual PPO practice).  advantage: ``gae`` uses Â_n row by
        row; ``regression`` is the discrete twin of the CT fitted-q critic
        (:func:`regression_advantage` with uniform weights and temperature α): fit
        q_c(x, a) to Â_n + α log π_n (the GAE advantage without its sampled entropy term),
        then Â = q_c − α log π − E_π[q_c − α log π]. With κ = e^{−βΔt}, α = γΔt and λ = 0 the
        fitted targets are Δt·q̂_n, Δt times those of the CT estimator.
    """
    g = ro.rewards * ro.dt - entropy_per_step * ro.log_probs
    phi, phi_next = critic.features(ro.xs[:-1]), critic.features(ro.xs[1:])
    F = phi.shape[-1]
    ones = torch.ones_like(g)
    critic.w = lstd_value(phi.reshape(-1, F), phi_next.reshape(-1, F), g.reshape(-1),
                          ones.reshape(-1), discount, ridge)
    adv = gae(g, phi @ critic.w, phi_next @ critic.w, discount, lam)
    if advantage == "regression":
        d, m = ro.xs.shape[-1], ro.actions.shape[-1]
        logp = ro.log_probs.reshape(-1)
        adv = regression_advantage(ro.xs[:-1].reshape(-1, d), ro.actions.reshape(-1, m),
                                   adv.reshape(-1) + entropy_per_step * logp, logp,
                                   ones.reshape(-1), policy, entropy_per_step, q_degree,
                                   ridge).reshape(g.shape)
    elif advantage != "gae":
        raise ValueError(f"advantage must be 'gae' or 'regression', got {advantage!r}")
    raw_std = float(adv.std())
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-12)
    diag = {"critic/v0_mean": float((phi[0] @ critic.w).mean()), "adv/raw_std": raw_std}
    return _rows(ro, policy, adv, ones / ones.numel(), policy_gamma(entropy_per_step, ro.dt)), diag


def policy_gamma(entropy_per_step: float, dt: float) -> float:
    """The temperature γ = α/Δt that a per-step soft-reward weight α implies."""
    return entropy_per_step / dt
