r"""Adjoint Matching [Domingo-Enrich+25, arXiv:2409.08861]: the control, the regression loss, time sampling.

The loss regresses the control of the fine-tuned model on the lean adjoint (``sde.soc.lean_adjoint``):

    L(θ) = E_{X ~ p^{ū}} [ ∫ ‖u_θ(X_τ, τ) + σ(τ)ᵀ ã(τ, X)‖² dτ ],   ū = stopgrad(u_θ)

(the Adjoint Matching loss, eq. (37), discretized in Alg. 1 eq. (42) [numbers as quoted by
AIQ-Kitware/aiq-drsb-formalization prose/sb-matching-generative.md; the paper's body was not
readable here, docs/methods/adjoint_matching.md "Where the paper's numbers come from"]; the
paper writes ½∫, the authors' code has no ½ — we follow the code). Its unique critical point
(Prop. 7) is u*(x, τ) = −σ(τ)ᵀ E[ã(τ) | X_τ = x] = −σᵀ∇V, the optimal control (eq. (17)).

Discrete form used by the authors (microsoft/soc-fine-tuning-sd @ 489f904,
``src/trainers/am_trainer.py:320–323`` in ``compute_loss``, control from
``src/trainers/soc_trainer.py:244``): a sampler step x' = μ_base(x) + δ σ u + sqrt(δ) σ z gives
``control`` w = sqrt(δ) u = (μ_θ − μ_base)/std and target sqrt(δ) σ ã = std · ã with std = sqrt(δ) σ
the step's noise scale, so the loss per step is ‖(μ_θ − μ_base)/std + std · ã‖² (the implicit
weight δ per step is the Riemann sum of the time integral; on a uniform grid every sampled time
weighs the same, as in eq. (42)).

Differences from the authors' code (docs/methods/adjoint_matching.md): the adjoint paired with
step i → i+1 is ã_{i+1} (the state the step produces), the exact discrete fixed point
(tests/soc/test_adjoint_matching_lq.py); the authors pair it with ã_i (``am_trainer.py:299``, an
O(δ) shift). A step with std 0 (the flow pipelines' last step onto t = 0) is not regressed on
(:func:`trained_steps`).

Registered in ``rl.losses.RL_LOSSES`` as ``adjoint_matching`` (:func:`adjoint_matching`, imported by
``scorealign.rl`` as the flow methods are); its inputs are built by the update kind
``adjoint_matching`` (``rl.update_kinds``, ``rl.updates.adjoint_matching_loss``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorealign.rl.losses import RL_LOSSES, LossOut
from scorealign.samplers.memoryless import MEMORY_TOL
from scorealign.sde.base import SDE, as_time, bcast

# The authors' stratified time sampling: half the indices from the first 60% of the sampler steps
# (high noise), half from the rest (microsoft/soc-fine-tuning-sd am_trainer.py:207,
# ``middle_timestep = round(num_timesteps * 0.6)``).
AUTHORS_SPLIT = 0.6


def control_from_scores(score_ft: Tensor, score_base: Tensor, t: Tensor, sde: SDE) -> Tensor:
    r"""u(x, t) = g(t) (s_θ(x, t) − s_base(x, t)), the control of a fine-tuned score model.

    The memoryless generative drift in the paper's time is b = −f + g² ∇log p (the η = 1 reverse
    drift, ``SDE.reverse_drift``, with the time reversed), σ = g, so u = (b_θ − b_base)/σ =
    g (s_θ − s_base) [Domingo-Enrich+25, controlled SDE eq. (13): b + σu; for diffusion the
    memoryless σ is g, the DDPM noise — Thm. 1 / Alg. 2, docs/methods/adjoint_matching.md].
    float64 [B, *D].
    """
    g = sde.diffusion(as_time(t, score_ft)).to(score_ft.device)
    return bcast(g, score_ft) * (score_ft.to(torch.float64) - score_base.to(torch.float64))


def control_from_velocities(v_ft: Tensor, v_base: Tensor, t: Tensor) -> Tensor:
    r"""u(x, t) = −sqrt(2(1 − t)/t) (v_θ − v_base) for ``FlowSDE`` (our t, our v = ε − x_0).

    From :func:`control_from_scores` with ∇log p_t = −(x + (1 − t) v)/t, so Δs = −(1 − t)/t · Δv and
    g Δs = sqrt(2t/(1 − t)) · (−(1 − t)/t) Δv. In the paper's time τ = 1 − t and velocity
    v_p = −v this is u = (2/σ(τ)) (v_p,θ − v_p,base), σ(τ) = sqrt(2(1 − τ)/τ), the control in
    the paper's flow-matching loss [Domingo-Enrich+25, Alg. 1 eq. (42), as transcribed by
    third-party readings (docs/methods/adjoint_matching.md)]. Checked against
    :func:`control_from_scores` in tests/soc/test_memoryless.py::test_velocity_control.
    float64 [B, *D].
    """
    t = bcast(as_time(t, v_ft).to(v_ft.device), v_ft)
    return -(2.0 * (1.0 - t) / t).sqrt() * (v_ft.to(torch.float64) - v_base.to(torch.float64))


def discrete_control(mean_ft: Tensor, mean_base: Tensor, std: Tensor) -> Tensor:
    """w = (μ_θ − μ_base)/std = sqrt(δ) u: the control of a sampler step in noise units, float64.

    The authors' ``control_times_sqrt_dt = prev_sample_diff / std_dev_t``
    (microsoft/soc-fine-tuning-sd ``src/trainers/soc_trainer.py:244, 424``)."""
    std = std.to(torch.float64)
    return (mean_ft.to(torch.float64) - mean_base.to(torch.float64)) / bcast(std, mean_ft)


def trained_steps(stds: Tensor) -> int:
    """The steps adjoint matching can regress on, ``[0, S')``: all S, or S − 1 when the last
    step is deterministic (std 0 on every row: the step onto the data end t = 0).

    That step is the discrete image of σ(τ) = sqrt(2η_τ) → 0 at the data end (Thm. 1
    [Domingo-Enrich+25]); the loss divides by the step's std, so there is nothing to regress
    there (in continuous time the optimal Δv = σu*/2 → 0 at the data end). The lean adjoint
    still passes through it. Others: the authors' SD code never has such a step
    (``final_alpha_cumprod = (1 + ᾱ[t_last])/2``, microsoft/soc-fine-tuning-sd
    ``soc_trainer.py:91–94``, keeps the last std > 0, and it is regressed like any other); a
    third-party reading of the paper's App. G.1 offsets σ and takes the final noise-free step
    with the *base* velocity. Here the rollout takes it with θ, unregressed
    (docs/methods/adjoint_matching.md, difference 8)."""
    S = stds.shape[1]
    return S - 1 if bool((stds[:, -1] == 0).all()) else S


def sample_time_indices(steps: int, k: int, generator: torch.Generator,
                        split: float = AUTHORS_SPLIT) -> Tensor:
    """k distinct step indices in [0, steps), sorted: ⌊k/2⌋ from the first ``split`` of the steps.

    The authors' stratified sampling (microsoft/soc-fine-tuning-sd ``am_trainer.py:189–225``;
    there index 0 is the noisiest step, as here; their K = 4 of 50,
    ``configs/multi_prompt.yaml:20``).
    The paper's own draw (App. G.2, as a third-party reproduction reports it: the last 10 of 40
    steps plus 10 random from the first 30) is not implemented. ``k ≥ steps`` returns every
    step. int64 [k].
    """
    if k >= steps:
        return torch.arange(steps)
    mid = round(steps * split)
    k1 = min(k // 2, mid)
    k2 = k - k1
    if k2 > steps - mid:
        k2, k1 = steps - mid, k - (steps - mid)
    first = torch.randperm(mid, generator=generator)[:k1]
    second = mid + torch.randperm(steps - mid, generator=generator)[:k2]
    return torch.cat([first, second]).sort().values


def adjoint_matching_loss(control: Tensor, adjoint: Tensor, sigma: Tensor, *,
                          clip: float | None = None) -> LossOut:
    r"""Adjoint-matching regression: mean over (batch, times) of Σ_dims (u + σ ã)².

    L = (1/(B K)) Σ_{b,k} ‖u_θ(X_k, t_k) + σ_k ã_k‖²   [Domingo-Enrich+25, Adjoint Matching loss
    eq. (37), discretized as Alg. 1 eq. (42); reduction as microsoft/soc-fine-tuning-sd
    ``am_trainer.py:320–323, 367``: sum over dims, mean over batch × times; no ½].

    Args:
        control: u [B, K, *D] with gradient (``control_from_scores`` / ``…_velocities``), or the
            discrete w = sqrt(δ) u (``discrete_control``).
        adjoint: ã [B, K, *D] from ``sde.soc.lean_adjoint`` (no gradient).
        sigma: σ(t_k) [K] or [B, K] (with the discrete w: the step std, sqrt(δ) σ).
        clip: drop the (b, k) terms whose ‖u + σ ã‖ exceeds ``clip`` (the authors' per-sample
            quantile clipping, ``am_trainer.py:343–362``, ``per_sample_threshold_quantile: 0.9``,
            with the threshold — an EMA (decay 0.9, ``am_trainer.py:31, 178–187``) of a batch
            quantile in their code — supplied by the caller; the paper's min(L_CT, ·), App. G.3
            as reported, has the same zero gradient on clipped terms). None: keep all.

    Returns:
        LossOut with metrics ``control_norm`` (mean ‖u‖²), ``target_norm`` (mean ‖σ ã‖²) and
        ``clip_frac``.
    """
    b, k = control.shape[:2]
    if adjoint.shape != control.shape:
        raise ValueError(f"adjoint {list(adjoint.shape)} must match control {list(control.shape)}")
    sig = sigma.to(control.dtype).to(control.device)
    sig = sig.expand(b, k) if sig.dim() == 1 else sig
    target = -bcast(sig, adjoint) * adjoint.to(control.dtype).detach()
    err = (control - target).flatten(2).pow(2).sum(-1)  # [B, K]
    keep = torch.ones_like(err) if clip is None else (err.detach().sqrt() < clip).to(err.dtype)
    loss = (err * keep).mean()
    metrics = {"control_norm": control.detach().flatten(2).pow(2).sum(-1).mean(),
               "target_norm": target.flatten(2).pow(2).sum(-1).mean(),
               "clip_frac": 1.0 - keep.mean()}
    return LossOut(loss, metrics)


#: The authors' temperature: ``reward_multiplier: 100.0`` (λ = 1/100) in the SD 1.5 configs of
#: microsoft/soc-fine-tuning-sd @ 489f904 (``configs/multi_prompt.yaml:34``, ImageReward; used
#: as ``a = -reward_multiplier * reward_grads``, ``am_trainer.py:158``). Trained steps: 5 of 50
#: is the fork shawnye1994/soc-fine-tuning-sd's ``num_timesteps_to_load_train``; upstream
#: (``configs/multi_prompt.yaml:20``) has 4.
AM_DEFAULT_LAM = 0.01
AM_DEFAULT_TIMES = 5


@RL_LOSSES.register(
    "adjoint_matching", paper="Domingo-Enrich+25 (Adjoint Matching), arXiv:2409.08861",
    equation="L = E Σ_k ‖u_θ(X_k) + σ_k ã_{k+1}‖², ã from the lean adjoint of the base drift "
             "started at −∇r(X_0)/λ (Alg. 1; eq. numbers not verified; docs/methods/"
             "adjoint_matching.md)",
    properties=frozenset({"needs_differentiable_reward", "lean_adjoint"}))
def adjoint_matching(control: Tensor, adjoint: Tensor, sigma: Tensor, *,
                     lam: float = AM_DEFAULT_LAM, times: int = AM_DEFAULT_TIMES,
                     clip: float | None = None, memoryless: bool = True,
                     memory_tol: float = MEMORY_TOL) -> LossOut:
    r"""Adjoint Matching regression (``rl.adjoint_matching.adjoint_matching_loss``).

    L(θ) = (1/(B K)) Σ_{b,k} ‖w_θ(X_k) + σ_k ã_{k+1}‖²,   w = (μ_θ − μ_base)/σ_k
    [Domingo-Enrich+25 Adjoint Matching loss eq. (37) / Alg. 1 eq. (42); the authors'
    reduction, ``am_trainer.py:320–323``].

    The update kind ``adjoint_matching`` (``rl.update_kinds``) builds the inputs; the
    hyper-parameters it reads are declared here so that ``algo.loss_kwargs`` is validated.

    Args:
        control: w ``[B, K, *D]`` with gradient (``rl.adjoint_matching.discrete_control``).
        adjoint: ã ``[B, K, *D]`` of the states the K steps produce (no gradient).
        sigma: step noise stds ``[B, K]``.
        lam: the temperature λ > 0: target ∝ p_base e^{r/λ}; the adjoint starts at −∇r/λ.
            Default 0.01 = 1/``reward_multiplier`` of the authors' SD 1.5 config
            (``configs/multi_prompt.yaml:34``).
        times: K, steps trained per trajectory (``sample_time_indices``; authors: 4 of 50
            upstream, 5 in the fork).
        clip: drop (row, step) terms with ‖w + σ ã‖ above it (None: keep all).
        memoryless: read by the update kind: True (default) refuses a sampler that is not
            memoryless (``rl.update_kinds.check_memoryless``); False runs the same loss on any
            stochastic sampler — the ablation that shows the initial-value-function bias
            [Domingo-Enrich+25, Thm. 1; the bias of §4.2] (tests/testbed/
            test_adjoint_matching_testbed.py). Not used by the loss itself.
        memory_tol: read by the update kind: the largest residual signal m/s at the start
            accepted as memoryless (default ``samplers.memoryless.MEMORY_TOL`` = 1e-2). SD-style
            scaled_linear schedules end at ᾱ_T = 0.0047 (m/s = 0.068) and cannot reach full noise
            for an ε-model; the authors fine-tune SD 1.5 with DDIM η = 1 on it all the same
            (``configs/multi_prompt.yaml:16``, ``soc_trainer.py:68–74``), which here is
            ``memory_tol: 0.1``
            (configs/finetune/sd_tiny_adjoint_matching_lora.yaml).
    Returns:
        LossOut with ``loss/am``, ``am/control_norm``, ``am/target_norm``, ``am/clip_frac``.
    """
    if not lam > 0:
        raise ValueError(f"adjoint_matching: lam (the temperature λ) must be > 0, got {lam}")
    out = adjoint_matching_loss(control, adjoint, sigma, clip=clip)
    metrics = {"loss/am": out.loss.detach(), **{f"am/{k}": v for k, v in out.metrics.items()}}
    return LossOut(out.loss, metrics)


__all__ = ["AM_DEFAULT_LAM", "AM_DEFAULT_TIMES", "AUTHORS_SPLIT", "adjoint_matching", "control_from_scores", "control_from_velocities", "discrete_control",
           "sample_time_indices", "adjoint_matching_loss"]
