"""Policy-gradient losses for diffusion fine-tuning, as pure functions of per-step tensors.

Every loss returns :class:`LossOut` (a scalar loss and detached metrics) and takes per-step tensors:

* ``logp``     ``[B, T]`` log-density of each sampler step under the current weights (fp32);
* ``logp_old`` ``[B, T]`` the same under the rollout weights (no gradient);
* ``adv``      ``[B]`` one advantage per trajectory, or ``[B, T]`` per step (value baselines);
* ``kl``       ``[B, T]`` per-step KL to the reference model (DPOK, GRPO);
* ``mask``     ``[B, T]`` optional, 1 for the steps that are trained (DDPO's timestep fraction).

Calling convention (the trainer relies on it): parameters before ``*`` are data tensors, the
keyword-only parameters after ``*`` are the algorithm's hyper-parameters (:func:`split_signature`).
Registry ``special_cases`` are ``(kwargs, other, other_kwargs)``: with those hyper-parameters the
entry has the same gradient as ``other`` on-policy (ρ = 1, same inputs); tests check every one.

Reductions are explicit (``reduce``): ``"mean"`` averages each sample's valid steps and then the
batch, (1/B) Σ_b (1/|T_b|) Σ_t, as DDPO and LOOP write their objectives; ``"sum"`` sums the steps
and averages the batch, (1/B) Σ_b Σ_t, as REINFORCE and DPOK do. ``score_as_action`` instead
weights step k by Δt_k and uses TD q-rates (``rl/ct.py``): a Riemann sum of a time integral.

Units: the trainer passes log-probs divided by the sample dimension D to the ratio losses
(``algo.ratio_units=per_dim``, the default), as ddpo-pytorch and flow_grpo average them, so
one clip ε (default 1e-4: kvablack/ddpo-pytorch ``config/base.py`` ``train.clip_range``,
yifan123/flow_grpo ``config/base.py`` ``train.clip_range``) means the same at any resolution.

Reading path for LOOP: ``rl/advantages.py::leave_one_out`` → :func:`ppo_clip` → the trainer.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from scorealign.registry import Registry

RL_LOSSES = Registry("RL loss")

Reduce = Literal["mean", "sum"]

# |log ρ| is clamped here before exp(): fp32 overflows at ρ = e^88.7, and 0 · inf in the backward
# pass of an unselected min() branch would turn a finite loss into NaN gradients.
LOG_RATIO_MAX = 20.0

# Advantage estimator each algorithm is defined with (names in ``rl.advantages.ADVANTAGES``).
DEFAULT_ADVANTAGE: dict[str, str | None] = {
    "reinforce": "batch", "ppo_clip": "per_prompt", "loop": "leave_one_out", "grpo": "group",
    "dpok": "value", "score_as_action": "batch", "reward_backprop": None,
    "adjoint_matching": None,
}


@dataclass(frozen=True)
class LossOut:
    """A scalar loss to minimize and detached scalar metrics (cleanrl-style names)."""

    loss: Tensor
    metrics: dict[str, Tensor]


@functools.lru_cache(maxsize=None)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature`` once per function: the update asks per micro-batch and step, and
    re-reading it was ≈ 2 % of a tiny lean epoch (docs/finetune.md, the TRL comparison)."""
    return inspect.signature(fn)


def split_signature(fn: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Split ``fn``'s parameters into data inputs and hyper-parameters with their defaults.

    Returns:
        (names of the parameters before ``*``, {keyword-only name: default or ``inspect._empty``}).
    """
    params = _signature(fn).parameters.values()
    data = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    hyper = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    return data, hyper


def _fp32(x: Tensor) -> Tensor:
    """Upcast half precision to fp32; fp32 and fp64 (gradcheck) pass through."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _valid(like: Tensor, mask: Tensor | None) -> Tensor:
    """The step mask as a float tensor shaped like ``like`` ([B, T])."""
    if mask is None:
        return torch.ones_like(like)
    if mask.shape != like.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(like.shape)}")
    return mask.to(like.dtype)


def reduce_steps(x: Tensor, mask: Tensor | None = None, reduce: Reduce = "mean") -> Tensor:
    """Reduce per-step values ``[B, T]`` to a scalar: over valid steps, then mean over the batch.

    Args:
        x: per-step values ``[B, T]``.
        mask: ``[B, T]``, 1 for steps that count; None counts every step.
        reduce: ``"mean"`` = (1/B) Σ_b (1/|T_b|) Σ_{t∈T_b} x; ``"sum"`` = (1/B) Σ_b Σ_{t∈T_b} x.
    Returns:
        scalar tensor. A sample with no valid step contributes 0 (and still counts in B).
    """
    m = _valid(x, mask)
    per_sample = (x * m).sum(dim=1)
    if reduce == "mean":
        per_sample = per_sample / m.sum(dim=1).clamp_min(1.0)
    elif reduce != "sum":
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    return per_sample.mean()


def _adv_steps(adv: Tensor, logp: Tensor) -> Tensor:
    """Broadcast advantages ``[B]`` (per trajectory) or ``[B, T]`` (per step) against ``logp``."""
    adv = _fp32(adv).detach()
    if adv.shape == logp.shape:
        return adv
    if adv.dim() == 1 and adv.shape[0] == logp.shape[0]:
        return adv[:, None]
    raise ValueError(f"adv has shape {tuple(adv.shape)}; expected [B]={logp.shape[0]} or "
                     f"[B, T]={tuple(logp.shape)}")


def _log_ratio(logp: Tensor, logp_old: Tensor) -> Tensor:
    """log ρ = log p_θ − log p_old per step, clamped to ±LOG_RATIO_MAX (see the constant)."""
    if logp.dim() != 2 or logp_old.shape != logp.shape:
        raise ValueError(f"logp and logp_old must both be [B, T]; got {tuple(logp.shape)} and "
                         f"{tuple(logp_old.shape)}")
    return (_fp32(logp) - _fp32(logp_old).detach()).clamp(-LOG_RATIO_MAX, LOG_RATIO_MAX)


def _masked_mean(x: Tensor, m: Tensor) -> Tensor:
    return (x * m).sum() / m.sum().clamp_min(1.0)


@torch.no_grad()
def ratio_metrics(log_ratio: Tensor, mask: Tensor | None, clip: float | None) -> dict[str, Tensor]:
    """Importance-ratio diagnostics over the valid steps.

    Returns ``policy/ratio_mean``, ``policy/ratio_max``, ``policy/clipfrac`` (share of steps with
    |ρ − 1| > ε; 0 without a clip), ``policy/approx_kl_k3`` = mean((ρ − 1) − log ρ), Schulman's
    unbiased, non-negative estimator of KL(p_old ‖ p_θ) from rollout samples, and
    ``policy/approx_kl_k2`` = mean(½ (log ρ)²), the one DDPO logs.
    """
    m = _valid(log_ratio, mask)
    ratio = log_ratio.exp()
    clipped = (ratio - 1).abs() > clip if clip is not None else torch.zeros_like(m).bool()
    return {
        "policy/ratio_mean": _masked_mean(ratio, m),
        "policy/ratio_max": torch.where(m > 0, ratio, torch.zeros_like(ratio)).max(),
        "policy/clipfrac": _masked_mean(clipped.to(m.dtype), m),
        "policy/approx_kl_k3": _masked_mean((ratio - 1) - log_ratio, m),
        "policy/approx_kl_k2": _masked_mean(0.5 * log_ratio**2, m),
    }


@RL_LOSSES.register(
    "reinforce", paper="Williams 1992 (REINFORCE); Black+23 (DDPO), arXiv:2305.13301",
    equation="DDPO_SF score-function gradient, §4.3 (eq. number not verified)",
    properties=frozenset({"grad_is_score_function"}))
def reinforce(logp: Tensor, adv: Tensor, mask: Tensor | None = None, *,
              reduce: Reduce = "sum") -> LossOut:
    r"""REINFORCE surrogate whose gradient is the score-function policy gradient.

    L(θ) = −(1/B) Σ_b Σ_t log p_θ(x_{t−1} | x_t, c) · A_b,
    ∇L = −E[Σ_t ∇ log p_θ(x_{t−1} | x_t, c) · A]   [Black+23 DDPO, DDPO_SF; Williams 1992]

    Args:
        logp: ``[B, T]`` step log-probs under the current weights.
        adv: ``[B]`` or ``[B, T]`` advantages (detached here).
        mask: ``[B, T]`` steps to train, or None for all.
        reduce: ``"sum"`` over steps (the estimator above) or ``"mean"`` (divides it by T).
    Returns:
        LossOut with ``loss/policy`` and ``adv/mean``.
    """
    logp = _fp32(logp)
    a = _adv_steps(adv, logp)
    # Score-function surrogate: its value is meaningless, its gradient is REINFORCE.
    loss = reduce_steps(-logp * a, mask, reduce)
    return LossOut(loss, {"loss/policy": loss.detach(), "adv/mean": a.mean()})


@RL_LOSSES.register(
    "ppo_clip", paper="Black+23 (DDPO-IS), arXiv:2305.13301; Schulman+17 (PPO), arXiv:1707.06347",
    equation="PPO Eq. 7 (L^CLIP) applied per denoising step as in DDPO_IS §4.3 (DDPO eq. number "
             "not verified)",
    special_cases=(({}, "reinforce", {"reduce": "mean"}),),
    properties=frozenset({"grad_equals_reinforce_on_policy"}))
def ppo_clip(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor | None = None, *,
             clip: float = 1e-4, reduce: Reduce = "mean") -> LossOut:
    r"""Clipped importance-sampling surrogate over every sampler step (DDPO-IS).

    ρ_t = p_θ(x_{t−1} | x_t, c) / p_old(x_{t−1} | x_t, c),
    L(θ) = −(1/B) Σ_b (1/T) Σ_t min(ρ_t A_b, clip(ρ_t, 1−ε, 1+ε) A_b)
    [Schulman+17 PPO, Eq. 7; Black+23 DDPO, DDPO_IS]

    Args:
        logp: ``[B, T]`` step log-probs under the current weights.
        logp_old: ``[B, T]`` step log-probs recorded at rollout (detached here).
        adv: ``[B]`` or ``[B, T]`` advantages (detached here).
        mask: ``[B, T]`` steps to train, or None for all.
        clip: ε. ``inf`` disables clipping.
        reduce: ``"mean"`` (DDPO, LOOP) or ``"sum"`` over steps, then mean over the batch.
    Returns:
        LossOut with ``loss/policy`` and :func:`ratio_metrics`.

    Notes:
        ε is in ratio units and depends on how log-probs are reduced over pixels. DDPO's ε = 1e-4
        (kvablack/ddpo-pytorch ``config/base.py``) is for log-probs *averaged* over the D latent
        dimensions; the trainer passes per-dimension log-probs by default
        (``algo.ratio_units=per_dim``), so 1e-4 here is DDPO's setting; with summed log-probs
        a comparable clip is ≈ D·1e-4 (jannerm/ddpo#10, flow_grpo#143). log ρ is clamped to
        ±20 before exp() (see ``LOG_RATIO_MAX``).
    """
    log_ratio = _log_ratio(logp, logp_old)
    ratio = log_ratio.exp()
    a = _adv_steps(adv, log_ratio)
    # Pessimistic bound: the smaller of the unclipped and the clipped surrogate.
    surrogate = torch.minimum(ratio * a, ratio.clamp(1.0 - clip, 1.0 + clip) * a)
    loss = reduce_steps(-surrogate, mask, reduce)
    metrics = {"loss/policy": loss.detach(), **ratio_metrics(log_ratio, mask, clip)}
    return LossOut(loss, metrics)


@RL_LOSSES.register(
    "loop", paper="Gupta+25 (LOOP), arXiv:2503.00897",
    equation="LOOP objective = RLOO advantage + PPO clip per step (paper eq. number not verified; "
             "form as in docs/methods/loop.md), optionally + β·KL_t as GRPO's penalty",
    special_cases=(({}, "ppo_clip", {}),),
    properties=frozenset({"grad_equals_reinforce_on_policy", "needs_k_ge_2"}))
def loop(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor | None = None,
         kl: Tensor | None = None, *, clip: float = 1e-4, beta: float = 0.0,
         reduce: Reduce = "mean") -> LossOut:
    r"""LOOP: PPO clip over every step with a leave-one-out advantage, plus an optional KL.

    A_i = r_i − 1/(K−1) Σ_{j≠i} r_j   (K samples per prompt, ``advantages.leave_one_out``),
    L(θ) = −(1/K) Σ_i (1/T) Σ_t [min(ρ_t^i A_i, clip(ρ_t^i, 1−ε, 1+ε) A_i) − β KL_t^i]
    [Gupta+25 LOOP; the β term is :func:`grpo`'s, in the same per-step KL units]

    The function is the composition: it is :func:`ppo_clip` plus :func:`kl_penalty` (the code
    :func:`grpo` uses); LOOP is selected by pairing it with the ``leave_one_out`` estimator
    (``DEFAULT_ADVANTAGE["loop"]``) and K ≥ 2 rollouts per prompt. With β = 0 (the default,
    the paper's objective) it is :func:`ppo_clip`; with β > 0 it equals ``grpo`` with
    ``advantage=leave_one_out`` and the same β.

    Args:
        logp: ``[B, T]`` step log-probs under the current weights, B = P·K.
        logp_old: ``[B, T]`` rollout log-probs.
        adv: ``[B]`` leave-one-out advantages.
        mask: ``[B, T]`` steps to train, or None for all.
        kl: ``[B, T]`` per-step KL to the reference (differentiable); required when β > 0
            (after ``mask``, so the published positional call ``loop(logp, logp_old, adv,
            mask)`` keeps its meaning).
        clip: ε.
        beta: KL weight β (0: LOOP as published).
        reduce: ``"mean"`` over steps as in the paper's 1/T, or ``"sum"``.
    Returns:
        LossOut as :func:`ppo_clip`, plus ``loss/kl`` when ``kl`` is given.
    """
    out = ppo_clip(logp, logp_old, adv, mask, clip=clip, reduce=reduce)
    return kl_penalty(out, kl, mask, beta=beta, reduce=reduce, loss="loop")


def kl_penalty(out: LossOut, kl: Tensor | None, mask: Tensor | None, *, beta: float,
               reduce: Reduce, loss: str) -> LossOut:
    r"""``out`` plus β times the reduced per-step KL to the reference (GRPO's and LOOP's term).

    L' = L + β · reduce_t KL_t,  KL_t = KL(p_θ(·|x_t) ‖ p_ref(·|x_t))   [Shao+24 GRPO Eq. 3]

    Args:
        out: the policy term.
        kl: ``[B, T]`` per-step KL (differentiable), or None (then β must be 0).
        mask: ``[B, T]`` steps that count, or None.
        beta: β.
        reduce: how steps are reduced (:func:`reduce_steps`).
        loss: the loss's name, for the error.
    Returns:
        LossOut with ``loss/kl`` (the reduced KL, unweighted) added when ``kl`` is given.
    Raises:
        ValueError: β ≠ 0 without ``kl``.
    """
    if kl is None:
        if beta != 0.0:
            raise ValueError(f"{loss} with beta > 0 needs the per-step KL `kl` [B, T]")
        return out
    kl_term = reduce_steps(_fp32(kl), mask, reduce)
    return LossOut(out.loss + beta * kl_term, {**out.metrics, "loss/kl": kl_term.detach()})


@RL_LOSSES.register(
    "grpo", paper="Shao+24 (DeepSeekMath GRPO), arXiv:2402.03300; Liu+25 (Flow-GRPO), "
                  "arXiv:2505.05470",
    equation="GRPO objective, DeepSeekMath Eq. 3 (number from memory, not verified), with the "
             "exact per-step Gaussian KL of Flow-GRPO",
    special_cases=(({"beta": 0.0}, "ppo_clip", {}),),
    properties=frozenset({"grad_equals_reinforce_on_policy"}))
def grpo(logp: Tensor, logp_old: Tensor, adv: Tensor, kl: Tensor | None = None,
         mask: Tensor | None = None, *, clip: float = 1e-4, beta: float = 0.0,
         reduce: Reduce = "mean") -> LossOut:
    r"""GRPO: PPO clip with group-normalized advantages, plus a KL penalty to the reference.

    A_i = (r_i − mean_g r) / (std_g r + eps)   (``advantages.group``),
    L(θ) = −(1/B) Σ_b (1/T) Σ_t [min(ρ_t A_b, clip(ρ_t, 1−ε, 1+ε) A_b) − β KL_t]
    KL_t = KL(p_θ(·|x_t) ‖ p_ref(·|x_t)) = ‖μ_θ − μ_ref‖² / (2σ_t²) for Gaussian steps.

    Args:
        logp: ``[B, T]`` step log-probs under the current weights.
        logp_old: ``[B, T]`` rollout log-probs.
        adv: ``[B]`` group advantages.
        kl: ``[B, T]`` per-step KL to the reference (differentiable); required when β > 0.
        mask: ``[B, T]`` steps to train, or None for all.
        clip: ε.
        beta: KL weight β.
        reduce: reduction of both terms over steps.
    Returns:
        LossOut with the :func:`ppo_clip` metrics plus ``loss/kl`` (the reduced KL, unweighted).

    Notes:
        DeepSeekMath estimates the KL with the k3 estimator on sampled tokens; for Gaussian
        steps the exact KL is available and is used (as Flow-GRPO does).
    """
    out = ppo_clip(logp, logp_old, adv, mask, clip=clip, reduce=reduce)
    return kl_penalty(out, kl, mask, beta=beta, reduce=reduce, loss="grpo")


@RL_LOSSES.register(
    "dpok", paper="Fan+23 (DPOK), arXiv:2305.16381",
    equation="DPOK objective: α·(−reward) + β·Σ_t KL_t (KL upper bound); eq. number not verified",
    special_cases=(({"beta": 0.0}, "reinforce", {"reduce": "sum"}),),
    properties=frozenset({"grad_equals_reinforce_on_policy"}))
def dpok(logp: Tensor, logp_old: Tensor, adv: Tensor, kl: Tensor, mask: Tensor | None = None,
         *, alpha: float = 1.0, beta: float = 0.01, clip: float | None = None,
         reduce: Reduce = "sum") -> LossOut:
    r"""DPOK: importance-weighted policy gradient plus β times the KL summed over steps.

    L(θ) = (1/B) Σ_b Σ_t [−α ρ_t A_{b,t} + β KL(p_θ(x_{t−1}|x_t, c) ‖ p_pre(x_{t−1}|x_t, c))],
    A_{b,t} = r_b − V(x_t, c, t) with a value baseline, or r_b without   [Fan+23 DPOK]

    Args:
        logp: ``[B, T]`` step log-probs under the current weights.
        logp_old: ``[B, T]`` rollout log-probs.
        adv: ``[B]`` or ``[B, T]`` (per-step value baseline, ``advantages.value``).
        kl: ``[B, T]`` per-step KL to the pretrained model (differentiable).
        mask: ``[B, T]`` steps to train, or None for all.
        alpha: reward weight α.
        beta: KL weight β.
        clip: DPOK's hard ratio clamp ε (its code: 1e-4); None leaves ρ unclamped.
        reduce: ``"sum"`` over steps as DPOK's Σ_t, or ``"mean"``.
    Returns:
        LossOut with ``loss/policy``, ``loss/kl`` (reduced, unweighted) and ratio metrics.

    Notes:
        DPOK's clamp is ``clamp(ρ)·A``, not PPO's min(): outside [1−ε, 1+ε] the step gets no
        gradient whatever the sign of A. The value network and replay buffer are the trainer's.
    """
    log_ratio = _log_ratio(logp, logp_old)
    ratio = log_ratio.exp()
    if clip is not None:
        ratio = ratio.clamp(1.0 - clip, 1.0 + clip)
    a = _adv_steps(adv, log_ratio)
    policy = reduce_steps(-alpha * ratio * a, mask, reduce)
    kl_term = reduce_steps(_fp32(kl), mask, reduce)
    metrics = {"loss/policy": policy.detach(), "loss/kl": kl_term.detach(),
               **ratio_metrics(log_ratio, mask, clip)}
    return LossOut(policy + beta * kl_term, metrics)


@RL_LOSSES.register(
    "score_as_action", paper="Zhao+25 (Score as Action), arXiv:2502.01819; Zhao+24 (Scores as "
                             "Actions), arXiv:2409.08400; Zhao, Tang, Yao 23 (CT-PPO), "
                             "arXiv:2305.18901",
    equation="CT-PPO clipped local approximation ∫ min(ρ q, clip(ρ) q) dt with TD q-rates "
             "(rl/ct.py) + β·KL of the sampled policy (papers.md §4; eq. numbers not verified)",
    properties=frozenset({"step_count_invariant"}))
def score_as_action(logp: Tensor, logp_old: Tensor, adv: Tensor, dt: Tensor,
                    kl: Tensor | None = None, mask: Tensor | None = None, *,
                    clip: float = 1e-4, beta: float = 0.0, gae_lambda: float = 0.0) -> LossOut:
    r"""Continuous-time PPO on the score-action policy: a Riemann sum of q-rates over time.

    q̂_k = GAE_λ(δ)_k / Δt_k,  δ_k = V(x_{k+1}, t_{k+1}) − V(x_k, t_k),  V(x_S) = r
    (``rl.ct.advantage_rates``: the TD q-rate of ``control/``, r_n = 0, β_disc = 0),
    L(θ) = −(1/B) Σ_b Σ_k Δt_k min(ρ_{b,k} q̂_{b,k}, clip(ρ_{b,k}, 1 ± ε) q̂_{b,k})
           + β (1/B) Σ_b Σ_k KL_{b,k}
    [Zhao+23 CTPO local approximation; Zhao+25 Score as Action; papers.md §4].

    Args:
        logp: ``[B, T]`` log π_θ(a_k | t_k, y_k) of the score action (``policy.exploration``),
            or of the SDE transition for an η > 0 transition policy.
        logp_old: ``[B, T]`` the same under the rollout weights.
        adv: ``[B, T]`` per-step advantages r − V(x_k, t_k) of a value design (``value``,
            ``x0_value``): turned into TD rates as above. ``[B]`` (a constant baseline, e.g.
            ``batch``): no per-step value exists, the Monte Carlo rate A/Δt_k is used and the
            Δt weights cancel, i.e. summed PPO (documented limit, not the CT estimator).
        dt: ``[T]`` step lengths |t_{k+1} − t_k| (sign dropped; any grid).
        kl: ``[B, T]`` per-step KL of the policy actually sampled (``Policy.kl``: action-space
            ‖ε_θ − ε_ref‖²/(2λ²) for λ > 0; the exact kernel KL for an SDE transition policy,
            whose sum is the discretized Girsanov KL ½∫g²‖s_θ − s_ref‖²dt). Summed over steps,
            never Δt-weighted: it is the KL of the sampled discrete policy.
        mask: ``[B, T]`` action steps, or None for all.
        clip: ε on the per-dimension ratio (trainer default ``ratio_units=per_dim``).
        beta: KL weight β.
        gae_lambda: λ of GAE over the step increments (0: TD rates; 1: Monte Carlo).
    Returns:
        LossOut with ``loss/policy``, ``loss/kl`` (when ``kl`` is given) and ratio metrics.

    Notes:
        At ρ = 1 the policy term is −(1/B) Σ_b Σ_k δ_{b,k} = −(1/B) Σ_b (r_b − V_0^b) for any
        grid (telescoping): the estimator does not grow with the number of steps.
    """
    from scorealign.ct import advantage_rates, clipped_surrogate

    log_ratio = _log_ratio(logp, logp_old)
    ratio = log_ratio.exp()
    d = torch.broadcast_to(_fp32(dt).abs().to(log_ratio.dtype), log_ratio.shape)
    if adv.dim() == 2:
        a = _adv_steps(adv, log_ratio)
        q = advantage_rates(-a, torch.zeros_like(a[:, 0]), d[0], gae_lambda)
    else:
        q = _adv_steps(adv, log_ratio) / d
    # Riemann weights Δt_k on the action steps, 1/B over paths (rl.ct.ct_surrogate).
    w = d * _valid(log_ratio, mask)
    policy = -(w * clipped_surrogate(ratio, q, clip)).sum(dim=1).mean()
    metrics = {"loss/policy": policy.detach(), **ratio_metrics(log_ratio, mask, clip)}
    if kl is None:
        if beta != 0.0:
            raise ValueError("score_as_action with beta > 0 needs the per-step KL `kl` [B, T]")
        return LossOut(policy, metrics)
    kl_term = reduce_steps(_fp32(kl), mask, "sum")
    return LossOut(policy + beta * kl_term, {**metrics, "loss/kl": kl_term.detach()})


@RL_LOSSES.register(
    "reward_backprop", paper="Clark+24 (DRaFT), arXiv:2309.17400; Prabhudesai+23 (AlignProp), "
                             "arXiv:2310.03739",
    equation="max_θ E[r(sample_θ(c, noise), c)] by backprop through the (truncated) sampler "
             "(eq. number not verified)",
    properties=frozenset({"needs_differentiable_reward", "backprop_through_sampler"}))
def reward_backprop(reward: Tensor) -> LossOut:
    r"""DRaFT-K / AlignProp: minus the mean differentiable reward.

    L(θ) = −(1/B) Σ_b r(x_0^b(θ), c_b)   [Clark+24 DRaFT]

    Args:
        reward: ``[B]`` rewards that still carry the graph back to the sampler; the truncation
            to the last K steps (``detach`` before them) is the trainer's.
    Returns:
        LossOut with ``reward/mean`` and ``reward/std``.
    """
    if reward.dim() != 1:
        raise ValueError(f"reward must be [B], got {tuple(reward.shape)}")
    reward = _fp32(reward)
    loss = -reward.mean()
    std = reward.detach().std() if reward.numel() > 1 else torch.zeros_like(loss)
    return LossOut(loss, {"reward/mean": reward.detach().mean(), "reward/std": std.detach()})


def kl_required(entry) -> bool:
    """Whether the loss's ``kl`` data argument is required (no default: DPOK's Σ_t KL_t)."""
    param = _signature(entry.fn).parameters.get("kl")
    return param is not None and param.default is param.empty
