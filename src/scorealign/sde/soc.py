r"""Stochastic optimal control (SOC) view of sampling: memoryless σ(t) and the lean adjoint.

Adjoint Matching [Domingo-Enrich+25, arXiv:2409.08861] writes generation as the controlled SDE

    dX_τ = (b(X_τ, τ) + σ(τ) u(X_τ, τ)) dτ + σ(τ) dB_τ,   X_0 ~ p_noise,

in *its* time τ ∈ [0, 1] (noise at τ = 0, data at τ = 1) and fine-tunes with the cost
E[∫₀¹ ½‖u‖² dτ − r(X_1)/λ] (the SOC problem eqs. (12)–(13) with running cost f = 0 and terminal
cost g = −r/λ; its control cost is KL(p^u(X|X_0) ‖ p_base(X|X_0)), eq. (18); target
p_base e^{r/λ}, eq. (1) — numbers as quoted by AIQ-Kitware/aiq-drsb-formalization
prose/sb-matching-generative.md, not checked against the paper's PDF; see
docs/methods/adjoint_matching.md). Here (docs/conventions.md) data sit at t = 0 and noise at
t = T, so τ = T − t, and the base generative drift in our time is the η = 1 reverse drift
D(x, t) = f(x, t) − g(t)² ∇log p_t(x) of ``SDE.reverse_drift`` (integrated with dt < 0); in the
paper's time b = −D and σ(τ) = g(T − τ).

λ convention: λ is a *temperature*, target p*(x) ∝ p_base(x) e^{r(x)/λ}; the authors' code
(microsoft/soc-fine-tuning-sd @ 489f904, ``src/trainers/am_trainer.py:158`` in
``compute_adjoints``, ``a = -reward_multiplier * reward_grads``) multiplies the reward instead:
reward_multiplier = 1/λ (default 100, ``configs/multi_prompt.yaml:34``).

Everything here is layer ``sde`` (no sampler import): the lean adjoint takes the base step map
as a callable; ``samplers/memoryless.py`` builds it from a registered sampler step.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from scorealign.sde.base import SDE, as_time, bcast

#: ``step_mean(x, t, t_next) -> mean``: the base model's sampler-step mean (noise = 0), differentiable in x.
StepMean = Callable[[Tensor, Tensor, Tensor], Tensor]
_F64 = torch.float64


def flow_memoryless_sigma(tau: Tensor) -> Tensor:
    r"""The memoryless noise schedule of the rectified-flow interpolant, in the paper's time.

    σ(τ) = sqrt(2 (1 − τ) / τ)  [Domingo-Enrich+25, the memoryless noise schedule σ(t) = sqrt(2η_t)
    of Prop. 1 / Thm. 1 (§4.3), η_t = β_t(α̇_t β_t/α_t − β̇_t), for the interpolant
    X_t = α_t X_1 + β_t X_0 with α_t = t, β_t = 1 − t: η_t = (1 − t)/t; Prop. 1 allows
    σ² = 2η_t + χ(t) under its condition (25) — numbers as quoted by third-party readings,
    docs/methods/adjoint_matching.md]. A reproduction reports that the paper's experiments use
    sqrt(2(1 − t + h)/(t + h)), h = 1/40 (App. G.1); here the exact-Gaussian ``ddpm`` step on
    ``FlowSDE`` needs no offset.
    In our time t = 1 − τ this is g(t) = sqrt(2t/(1 − t)) of ``FlowSDE.diffusion``: the
    memoryless generative SDE of a flow is the reverse SDE (η = 1) of the forward noising SDE.
    Infinite at τ = 0 (pure noise); float64.
    """
    tau = as_time(tau)
    return (2.0 * (1.0 - tau) / tau).sqrt()


def flow_score_from_velocity(x: Tensor, v: Tensor, t: Tensor) -> Tensor:
    r"""∇log p_t(x) = −(x + (1 − t) v)/t for x_t = (1 − t) x_0 + t ε, v = ε − x_0 (our convention).

    ε̂ = x + (1 − t) v̂ and ∇log p_t = −ε̂/t (``samplers/flow.py`` module docstring). float64.
    """
    t = bcast(as_time(t, x).to(x.device), x)
    return -(x.to(_F64) + (1.0 - t) * v.to(_F64)) / t


def flow_memoryless_drift(x: Tensor, v_paper: Tensor, tau: Tensor) -> Tensor:
    r"""b(x, τ) = v(x, τ) + σ(τ)²/2 · ∇log p_τ(x) in the paper's time and velocity convention.

    [Domingo-Enrich+25, the family of SDEs with the flow's marginals, b = κ_t x + (σ²/2 + η_t) s
    with κ_t = α̇_t/α_t, i.e. v + σ²/2 ∇log p (equation number not found), at the memoryless σ
    of :func:`flow_memoryless_sigma`]. v_paper is dx/dτ = x_0 − ε (data minus noise), minus our
    v; the score is computed from it by :func:`flow_score_from_velocity`. Equal to −D(x, 1 − τ)
    with D the η = 1 reverse drift of ``FlowSDE`` (tests/soc/test_memoryless.py). float64.
    """
    tau = as_time(tau, x).to(x.device)
    score = flow_score_from_velocity(x, -v_paper, 1.0 - tau)
    return v_paper.to(_F64) + 0.5 * bcast(flow_memoryless_sigma(tau), x) ** 2 * score


def memoryless_diffusion(sde: SDE, t: Tensor) -> Tensor:
    """σ at our time t: g(t) of the forward SDE (the η = 1 reverse SDE's noise scale), float64.

    For VP this is the paper's memoryless DDIM/DDPM schedule σ(τ)² = ᾱ̇_τ/ᾱ_τ (Thm. 1 for DDIM
    per the authors' README:89; "Alg. 2" as a reproduction reports it) = β(t) in our time."""
    return sde.diffusion(as_time(t))


@torch.no_grad()
def lean_adjoint(xs: Tensor, ts: Tensor, step_mean: StepMean, grad_r: Tensor, lam: float
                 ) -> Tensor:
    r"""The lean adjoint ã along a recorded trajectory, by vector–Jacobian products of the base step.

    Continuous form [Domingo-Enrich+25, the lean adjoint ODE and its terminal condition, within
    eqs. (37)–(39), solved in Alg. 1 eq. (41); numbers as quoted by third-party readings,
    docs/methods/adjoint_matching.md], paper time, with f = 0 and g = −r/λ:

        dã/dτ = −ã(τ)ᵀ ∇_x b_base(X_τ, τ),   ã(1) = ∇_x g(X_1) = −∇_x r(X_1)/λ.

    It is the full adjoint (eqs. (29)–(31)) minus the terms whose conditional mean vanishes at
    the optimum (eqs. (35)–(36)): no ∇_x u term.

    In our time (data at t = 0, dx = D dt with dt < 0, b = −D) this reads dã/dt = −(∇_x D)ᵀ ã,
    integrated *upwards* from ã(t_min) = −∇r(X_{t_min})/λ. Discretely we use the exact adjoint of
    the base sampler step, as the authors' code does (microsoft/soc-fine-tuning-sd
    ``am_trainer.py:64–97`` in ``grad_inner_product``: ∇_x ⟨step(x; ε = 0) − x, ã⟩, added to ã
    at ``am_trainer.py:161–169``, started at ``a = −reward_multiplier · ∇r``, line 158):

        ã_S = −∇r(x_S)/λ,   ã_i = (∂ μ_base(x_i, t_i, t_{i+1}) / ∂x_i)ᵀ ã_{i+1},

    with μ_base the base model's step mean. With the Euler–Maruyama step μ = x − h D(x, t) this is
    explicit Euler on the ODE above. Only the *base* drift enters (no ∇u term: "lean"), and the
    states come from the current fine-tuned model without gradient. When the control is zero ã_i
    is exactly ∂(−r(X_S)/λ)/∂x_i through the sampler with its noise held fixed
    (tests/soc/test_lean_adjoint.py).

    Args:
        xs: states [B, S + 1, *D] (``SampleResult.xs``); xs[:, i] at time ts[i].
        ts: the decreasing grid [S + 1] (t_max → t_min).
        step_mean: ``step_mean(x, t, t_next)`` → base step mean (``samplers.memoryless.base_step_mean``).
        grad_r: ∇r(x_S) [B, *D].
        lam: the temperature λ > 0 (target ∝ p_base e^{r/λ}).

    Returns:
        ã [B, S + 1, *D] in xs.dtype, detached; ã[:, i] pairs with xs[:, i].

    Cost: S base-model evaluations with a backward pass each (a VJP), no graph kept across steps.
    """
    if lam <= 0:
        raise ValueError(f"lam (the temperature λ) must be > 0, got {lam}")
    steps = xs.shape[1] - 1
    if ts.shape[0] != steps + 1:
        raise ValueError(f"ts has {ts.shape[0]} times for {steps + 1} states")
    out = torch.empty_like(xs)
    a = -grad_r.to(xs.dtype) / lam
    out[:, steps] = a
    for i in range(steps - 1, -1, -1):
        with torch.enable_grad():
            x = xs[:, i].detach().requires_grad_(True)
            t = ts[i].expand(x.shape[0])
            tn = ts[i + 1].expand(x.shape[0])
            mean = step_mean(x, t, tn)
            (a,) = torch.autograd.grad(mean, x, grad_outputs=a.to(mean.dtype))
        out[:, i] = a
    return out
