r"""The Flow-GRPO family on the one trainer: Flow-GRPO, Flow-GRPO-Fast, MixGRPO, DanceGRPO
(registry entries of GRPO's clipped surrogate with their authors' defaults) and DiffusionNFT
(a likelihood-free, forward-process loss).

The four GRPO variants share one objective — group-normalized advantages, the PPO clip on the
per-step ratio of a flow SDE step (``samplers.flow``; per dimension, and for ``flow_cps`` in the
authors' rescaled log-prob, ``policy.log_prob_units``) and the per-step KL to the reference in
flow_grpo's units by default (``algo.kl_units: authors``: mean_d (μ_θ − μ_ref)² / (2σ_t²) =
|Δt| · KL / D for ``flow_sde``; ``exact``: KL / D; docs/conventions.md, Units) — and differ in
*which steps are random and trained*,
which is the policy's ``action_steps`` setting (issue 10), not the loss:

=================  =================  =======================================================
method             sampler            ``policy.action_steps``
=================  =================  =======================================================
Flow-GRPO          ``flow_sde`` a=0.7  every SDE step (``auto``/``all``)
Flow-GRPO-Fast     ``flow_sde``        ``branch:1``/``branch:2``: ODE trajectory, SDE at 1–2
                                      random steps per epoch, only those trained
MixGRPO            ``flow_sde``        ``slide:w:e:s``: an SDE window sliding s steps every e
                                      epochs, ODE elsewhere (``window:w``: random window);
                                      ``policy.init_same_noise``
DanceGRPO          ``dance_sde`` η=0.3 ``fraction:0.6``, ``policy.init_same_noise`` (one x_T
                                      per prompt group)
=================  =================  =======================================================

DiffusionNFT trains on the forward process instead: the final samples x_0 of any solver are
re-noised, x_t = (1 − t) x_0 + t ε, and the current velocity v_θ and the rollout ("old")
velocity v_old form the implicit positive and negative policies
v⁺ = β v_θ + (1 − β) v_old, v⁻ = (1 + β) v_old − β v_θ, each regressed on the flow-matching target
with the reward-derived weight r ∈ [0, 1] (:func:`diffusion_nft`, :func:`nft_loss`); the old
model draws the rollouts and is soft-updated toward θ after each epoch (:class:`OldModel`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from scorealign.rl.losses import DEFAULT_ADVANTAGE, RL_LOSSES, LossOut, grpo

if TYPE_CHECKING:
    from scorealign.policy.trajectory import Trajectory
    from scorealign.rl.context import UpdateContext

# Defaults, with their sources.
# PPO clip on per-dimension-averaged log-probs: flow_grpo config/base.py train.clip_range = 1e-4,
# DanceGRPO scripts/finetune/finetune_flux_grpo.sh --clip_range 1e-4.
CLIP_RANGE = 1e-4
# KL weight: flow_grpo config/grpo.py (geneval_sd3, pickscore_sd3) config.train.beta = 0.04.
FLOW_GRPO_BETA = 0.04
# DanceGRPO has no KL term (peers.md §2.4; XueZeyue/DanceGRPO issue #33).
DANCE_GRPO_BETA = 0.0
# DiffusionNFT: config/nft.py _get_config: config.beta = 1.0 (NFT's β), train.beta = 1e-4 (KL),
# flow_grpo config/base.py train.adv_clip_max = 5.
NFT_BETA = 1.0
NFT_KL_BETA = 1e-4
ADV_CLIP_MAX = 5.0
# The old (sampling) model's soft update old ← d·old + (1 − d)·θ after every epoch, d =
# min(uprate·(step − flat), uphold) at optimizer step `step` (0 before `flat`):
# scripts/train_nft_sd3.py return_decay(step, decay_type) → (flat, uprate, uphold); config/nft.py
# _get_config: config.decay_type = 1 (sd3_ocr: 2).
NFT_DECAY_SCHEDULES = {0: (0, 0.0, 0.0), 1: (0, 0.001, 0.5), 2: (75, 0.0075, 0.999)}
NFT_DECAY_TYPE = 1
# The times each row trains on: NVlabs/DiffusionNFT scripts/train_nft_sd3.py
# num_train_timesteps = int(config.sample.num_steps * config.train.timestep_fraction) (9 of 10
# with config/base.py train.timestep_fraction = 0.99, config/nft.py sample.num_steps = 10), the
# first that many of a per-row random permutation of the grid times (perms_time = randperm).
NFT_TIMESTEP_FRACTION = 0.99


def nft_times(seeds: Tensor, steps: int, fraction: float = NFT_TIMESTEP_FRACTION) -> Tensor:
    """``[B, S]`` bool: the grid times t_0 … t_{S−1} row b trains on, int(S·fraction) of them
    (at least one), a random subset drawn from the row seed [DiffusionNFT: ``perms_time``]."""
    from scorealign.rng import generator

    if not 0 < fraction <= 1:
        raise ValueError(f"timestep_fraction must be in (0, 1], got {fraction}")
    n = max(int(steps * fraction), 1)
    out = torch.zeros(len(seeds), steps, dtype=torch.bool)
    for i, seed in enumerate(seeds.tolist()):
        if n == steps:
            out[i] = True
        else:
            out[i, torch.randperm(steps, generator=generator(int(seed), "nft-times"))[:n]] = True
    return out


def _grpo_entry(name: str, paper: str, equation: str, beta: float, note: str):
    def fn(logp: Tensor, logp_old: Tensor, adv: Tensor, kl: Tensor | None = None,
           mask: Tensor | None = None, *, clip: float = CLIP_RANGE, beta: float = beta,
           reduce: str = "mean") -> LossOut:
        return grpo(logp, logp_old, adv, kl, mask, clip=clip, beta=beta, reduce=reduce)

    fn.__name__ = name
    fn.__doc__ = (
        f"[{paper}] GRPO's clipped surrogate with a per-step KL term (β = {beta}).\n\n"
        "    L(θ) = −(1/B) Σ_b (1/|T_b|) Σ_{t∈T_b} [min(ρ_t A_b, clip(ρ_t, 1−ε, 1+ε) A_b)"
        " − β KL_t],\n"
        "    KL_t in ``algo.kl_units`` (authors: flow_grpo's mean_d (μ_θ − μ_ref)² / (2σ_t²) ="
        " |Δt| · KL_exact / D for flow_sde; exact: KL_exact / D), A_b group-normalized,\n"
        f"    T_b the trained steps. {note}\n\n"
        "    Arguments as :func:`scorealign.rl.losses.grpo`.\n")
    RL_LOSSES.register(name, paper=paper, equation=equation,
                       special_cases=(({}, "grpo", {"beta": beta, "clip": CLIP_RANGE}),),
                       properties=frozenset({"grad_equals_reinforce_on_policy",
                                             "flow_family"}))(fn)
    DEFAULT_ADVANTAGE[name] = "group"
    return fn


flow_grpo = _grpo_entry(
    "flow_grpo", "Liu+25 (Flow-GRPO), arXiv:2505.05470",
    "GRPO objective with the SDE step Eq. 9-12; yifan123/flow_grpo scripts/train_sd3.py",
    FLOW_GRPO_BETA, "Sampler flow_sde (a = 0.7), every SDE step trained.")
flow_grpo_fast = _grpo_entry(
    "flow_grpo_fast", "Liu+25 (Flow-GRPO-Fast), arXiv:2505.05470; yifan123/flow_grpo README",
    "as flow_grpo on 1–2 branching SDE steps of an ODE trajectory",
    FLOW_GRPO_BETA, "Use policy.action_steps=branch:1|2 (ODE elsewhere).")
mixgrpo = _grpo_entry(
    "mixgrpo", "Li+25 (MixGRPO), arXiv:2507.21802",
    "GRPO on a sliding SDE window of a mixed ODE-SDE trajectory (eq. number not verified)",
    FLOW_GRPO_BETA, "Use policy.action_steps=slide:w:e:s (or window:w; ODE outside the "
    "window) and policy.init_same_noise.")
dance_grpo = _grpo_entry(
    "dance_grpo", "Xue+25 (DanceGRPO), arXiv:2505.07818",
    "GRPO with flux_step (XueZeyue/DanceGRPO fastvideo/train_grpo_flux.py), no KL",
    DANCE_GRPO_BETA, "Sampler dance_sde (η = 0.3), policy.action_steps=fraction:0.6, shared "
    "initial noise per group.")


def nft_weight(adv: Tensor, adv_clip_max: float = ADV_CLIP_MAX) -> Tensor:
    """r = clamp((clip(A, ±m)/m)/2 + ½, 0, 1) ∈ [0, 1]: the optimality probability of NFT.

    NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py``: ``normalized_advantages_clip =
    (advantages_clip / adv_clip_max) / 2.0 + 0.5; r = clamp(…, 0, 1)``.
    """
    a = adv.float().clamp(-adv_clip_max, adv_clip_max)
    return ((a / adv_clip_max) / 2.0 + 0.5).clamp(0.0, 1.0)


@RL_LOSSES.register(
    "diffusion_nft", paper="Zheng+25 (DiffusionNFT), arXiv:2509.16117",
    equation="NFT objective (positive/negative implicit velocities); NVlabs/DiffusionNFT "
             "scripts/train_nft_sd3.py",
    properties=frozenset({"forward_process", "likelihood_free", "flow_family"}))
def diffusion_nft(v: Tensor, v_old: Tensor, v_target: Tensor, t: Tensor, adv: Tensor,
                  v_ref: Tensor | None = None, *, beta: float = NFT_BETA,
                  kl_beta: float = NFT_KL_BETA, adv_clip_max: float = ADV_CLIP_MAX,
                  adaptive: bool = True, decay_type: int = NFT_DECAY_TYPE,
                  timestep_fraction: float = NFT_TIMESTEP_FRACTION) -> LossOut:
    r"""DiffusionNFT's loss on forward-noised samples.

        v⁺ = β v_θ + (1 − β) v_old,   v⁻ = (1 + β) v_old − β v_θ,
        L⁺ = mean_d ‖t (v⁺ − v)‖² / w⁺,   L⁻ = mean_d ‖t (v⁻ − v)‖² / w⁻,
        L(θ) = m · (1/B) Σ_b [r_b L⁺_b + (1 − r_b) L⁻_b] / β + β_KL · mean ‖v_θ − v_ref‖²

    with v = ε − x_0 the flow-matching target at x_t = (1 − t) x_0 + t ε, r = :func:`nft_weight`
    of the advantage, m = ``adv_clip_max`` and w± = mean_d |t (v± − v)| (detached, ≥ 1e-5), the
    adaptive weighting of the x_0-prediction error (x̂_0 − x_0 = t (v − v±), since x_0 = x_t − t v)
    [Zheng+25 DiffusionNFT; NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py``: ``positive_loss``,
    ``negative_loss``, ``ori_policy_loss = r·positive_loss/β + (1 − r)·negative_loss/β``,
    ``policy_loss = (ori_policy_loss·adv_clip_max).mean()``, ``kl_div_loss``].

    At θ = θ_old (v_θ = v_old) the gradient is m (2r − 1)/w · ∇_θ mean_d ‖t (v_θ − v)‖² for any
    β: reward-weighted flow matching, positive rows pulled toward their samples and negative rows
    pushed away. As β → 0 without adaptive weights, L − m·mean[‖t(v_old − v)‖²_d]/β →
    2m·mean[(2r − 1)⟨t²(v_θ − v_old), v_old − v⟩_d] (tests/flow/test_nft.py).

    Args:
        v, v_old, v_target: ``[B, *D]`` current, old (rollout) and target velocities.
        t: ``[B]`` times of x_t.
        adv: ``[B]`` advantages (group-normalized).
        v_ref: ``[B, *D]`` reference velocity for the KL term, or None (then β_KL must be 0).
        beta: NFT's β > 0 (implicit policy step).
        kl_beta: weight of the velocity KL to the reference.
        adv_clip_max: m.
        adaptive: use the adaptive weights w± (the authors' default); False: w± = 1.
        decay_type: schedule of the old model's soft update (:func:`nft_decay`), applied by
            the trainer after each epoch (:class:`OldModel`); it does not enter this value.
        timestep_fraction: the share of grid times each row trains on (:func:`nft_times`,
            used by :func:`nft_loss`; the authors' 0.99, 9 of 10; 1: every time); it does not
            enter this value.
    Returns:
        LossOut with ``loss/policy``, ``loss/kl``, ``nft/r_mean``, ``nft/old_deviate``.
    """
    if not beta > 0:
        raise ValueError(f"diffusion_nft needs beta > 0, got {beta}")
    if decay_type not in NFT_DECAY_SCHEDULES:
        raise ValueError(f"decay_type must be one of {sorted(NFT_DECAY_SCHEDULES)}, "
                         f"got {decay_type}")
    if not 0 < timestep_fraction <= 1:
        raise ValueError(f"timestep_fraction must be in (0, 1], got {timestep_fraction}")
    v, v_old, v_target = v.float(), v_old.float().detach(), v_target.float()
    tt = t.float().view(-1, *([1] * (v.dim() - 1)))
    r = nft_weight(adv, adv_clip_max)
    v_pos = beta * v + (1.0 - beta) * v_old
    v_neg = (1.0 + beta) * v_old - beta * v

    def part(vp: Tensor) -> Tensor:
        err = tt * (vp - v_target)
        w = torch.ones_like(err[:, :1])
        if adaptive:
            with torch.no_grad():
                w = err.double().abs().flatten(1).mean(1).clamp_min(1e-5).float()
            w = w.view(-1, *([1] * (v.dim() - 1)))
        return (err**2 / w).flatten(1).mean(1)

    per_row = r * part(v_pos) / beta + (1.0 - r) * part(v_neg) / beta
    policy = (per_row * adv_clip_max).mean()
    metrics = {"loss/policy": policy.detach(), "nft/r_mean": r.mean(),
               "nft/old_deviate": (v.detach() - v_old).pow(2).mean()}
    if v_ref is None:
        if kl_beta != 0.0:
            raise ValueError("diffusion_nft with kl_beta > 0 needs v_ref")
        return LossOut(policy, metrics)
    kl = (v - v_ref.float().detach()).pow(2).flatten(1).mean(1).mean()
    return LossOut(policy + kl_beta * kl, {**metrics, "loss/kl": kl.detach()})


DEFAULT_ADVANTAGE["diffusion_nft"] = "group"


def nft_decay(step: int, decay_type: int = NFT_DECAY_TYPE) -> float:
    """d(step) of the old model's soft update: 0 before ``flat``, then min(uprate·(step − flat),
    uphold) [NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py`` ``return_decay``]."""
    flat, uprate, uphold = NFT_DECAY_SCHEDULES[decay_type]
    if step < flat:
        return 0.0
    return min((step - flat) * uprate, uphold)


class OldModel:
    """DiffusionNFT's old model: it draws the rollouts and gives v_old, and after each epoch
    moves toward the trained weights, old ← d·old + (1 − d)·θ with d = :func:`nft_decay` of the
    optimizer steps taken so far [NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py``: the
    ``"old"`` adapter samples (``set_adapter("old")``), and after the epoch
    ``tgt.copy_(tgt·decay + src·(1 − decay))``]. It starts equal to the initial weights. The step
    count derives from the epoch and ``ctx.steps_per_epoch``; the old weights are checkpointed
    (``nft_old``), so a resumed run continues bit for bit.
    """

    def __init__(self, ctx: "UpdateContext"):
        import copy

        model = ctx.unwrap(ctx.model)
        self.names = [k for k, p in model.named_parameters() if p.requires_grad]
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        self.policy = ctx.make_policy(self.model)
        self.decay_type = ctx.algo.loss_kwargs.get("decay_type", NFT_DECAY_TYPE)
        if self.decay_type not in NFT_DECAY_SCHEDULES:
            raise ValueError(f"algo.loss_kwargs.decay_type: must be one of "
                             f"{sorted(NFT_DECAY_SCHEDULES)}, got {self.decay_type!r}")
        self.steps_per_epoch = ctx.steps_per_epoch

    def _params(self) -> dict[str, Tensor]:
        params = dict(self.model.named_parameters())
        return {k: params[k] for k in self.names}

    def state(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self._params().items()}

    @torch.no_grad()
    def load(self, state: dict[str, Tensor]) -> None:
        params = self._params()
        if set(state) != set(params):
            raise ValueError(f"checkpoint field nft_old: {len(state)} tensors, the model has "
                             f"{len(params)} trainable ones")
        for k, v in state.items():
            params[k].copy_(v)

    @torch.no_grad()
    def soft_update(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """After epoch ``epoch`` (0-based) has taken its optimizer steps on ``model`` (the bare
        trained module)."""
        d = nft_decay((epoch + 1) * self.steps_per_epoch, self.decay_type)
        src = dict(model.named_parameters())
        for k, tgt in self._params().items():
            tgt.copy_(tgt.detach() * d + src[k].detach().clone() * (1.0 - d))
        return {"nft/old_decay": d}


def nft_loss(ctx: "UpdateContext", sub: "Trajectory", adv: Tensor, old: nn.Module) -> LossOut:
    """DiffusionNFT on rows ``sub``: re-noise their final samples at the grid times t_k each
    row trains on (:func:`nft_times`: the authors' random 9 of 10 by default, every time with
    ``timestep_fraction: 1``) with per-row noise (derived from the row seed and k), and average
    :func:`diffusion_nft` over the rows' (row, time) pairs, as the authors' loop over
    ``num_train_timesteps`` does; ``old`` is the old (sampling) model (:class:`OldModel`).

    The model is evaluated without guidance (the authors train and sample NFT with CFG 1).
    Model evaluations with gradient: rows × int(S · timestep_fraction).
    """
    from scorealign.rng import randn_per_sample

    kw = {k: v for k, v in ctx.algo.loss_kwargs.items()}
    x0 = sub.x0
    S = sub.num_steps
    eps_all = randn_per_sample(sub.seeds.tolist(), (S, *x0.shape[1:]), "nft-noise").to(x0)
    times = nft_times(sub.seeds.cpu(), S, float(kw.get("timestep_fraction",
                                                       NFT_TIMESTEP_FRACTION)))
    if bool(times.all()):
        return _nft_all_times(ctx, sub, adv, old, eps_all, kw)
    n = int(times[0].sum())
    total, metrics = None, {}
    for k in range(S):
        rows = times[:, k].nonzero().flatten()
        if rows.numel() == 0:
            continue
        w = rows.numel() / (n * sub.batch_size)  # Σ over (row, time) pairs / (rows · n)
        out = _nft_at(ctx, sub.index(rows), adv[rows.to(adv.device)], old,
                      eps_all[rows.to(x0.device), k], k, kw)
        total = out.loss * w if total is None else total + out.loss * w
        for name, val in out.metrics.items():
            metrics[name] = metrics.get(name, 0.0) + val * w
    return LossOut(total, metrics)


def _nft_at(ctx: "UpdateContext", sub: "Trajectory", adv: Tensor, old: nn.Module, eps: Tensor,
            k: int, kw: dict) -> LossOut:
    """:func:`diffusion_nft` of rows ``sub`` re-noised at t_k with noise ``eps``."""
    from scorealign.samplers.steps import model_time
    from scorealign.sde.param import convert

    pol, sde = ctx.policy, ctx.policy.sde
    kl_beta = float(kw.get("kl_beta", NFT_KL_BETA))
    x0 = sub.x0
    t64 = sub.ts[k].expand(sub.batch_size).to(x0.device)
    m = sde.marginal(t64)
    shape = (-1, *([1] * (x0.dim() - 1)))
    x_t = (m.mean_coef.view(shape) * x0.double() + m.std.view(shape) * eps.double()).to(x0.dtype)
    tm = model_time(t64, x_t)
    v_target = (eps - x0).to(x0.dtype)

    def vel(model):
        return convert(model(x_t, tm, sub.cond), pol.kind, "v", x_t, tm, sde)

    v = vel(ctx.model)
    with torch.no_grad():
        v_old = vel(old)
        v_ref = vel(ctx.ref_model) if kl_beta > 0 else None
    return diffusion_nft(v, v_old, v_target, tm, adv, v_ref, **kw)


def _nft_all_times(ctx: "UpdateContext", sub: "Trajectory", adv: Tensor, old: nn.Module,
                   eps_all: Tensor, kw: dict) -> LossOut:
    """:func:`nft_loss` with every row at every grid time (``timestep_fraction: 1``)."""
    S = sub.num_steps
    total, metrics = None, {}
    for k in range(S):
        out = _nft_at(ctx, sub, adv, old, eps_all[:, k], k, kw)
        total = out.loss if total is None else total + out.loss
        for name, val in out.metrics.items():
            metrics[name] = metrics.get(name, 0.0) + val / S
    return LossOut(total / S, metrics)


__all__ = ["ADV_CLIP_MAX", "CLIP_RANGE", "NFT_TIMESTEP_FRACTION", "OldModel", "dance_grpo",
           "diffusion_nft", "flow_grpo", "flow_grpo_fast", "mixgrpo", "nft_decay", "nft_loss",
           "nft_times", "nft_weight"]
