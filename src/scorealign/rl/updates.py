"""The loss of one micro-batch: registry losses on recomputed log-probs, or reward backprop.

``policy_loss`` feeds a registered loss exactly the data arguments its signature names (``logp``,
``logp_old``, ``adv``, ``kl``, ``dt``, ``mask``) and its configured hyper-parameters: ``mask`` is
the trajectory's action steps (``Trajectory.trained``), ``kl`` the per-step KL of the policy
actually sampled over its random steps (``algo.kl``), and ratio losses get per-dimension
log-probs (``algo.ratio_units``).
``backprop_loss`` is DRaFT-K: sample without gradients down to the last K steps, then
differentiate through them and the reward [Clark+24 DRaFT, §4].
``adjoint_matching_loss`` is Adjoint Matching: the lean adjoint of the base model from −∇r/λ along
the recorded rollout, regressed on at K sampled steps [Domingo-Enrich+25, Alg. 1].

Each takes the run's :class:`~scorealign.rl.context.UpdateContext` (``ctx``), never the trainer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from scorealign.policy.trajectory import Trajectory
from scorealign.rl.losses import LossOut, kl_required, reward_backprop, split_signature
from scorealign.samplers import sample

if TYPE_CHECKING:
    from scorealign.rl.context import UpdateContext


def cat_trajectories(trajs: list[Trajectory]) -> Trajectory:
    """Row-wise concatenation of trajectories on the same grid."""
    from scorealign.nets.cond import Cond

    if len(trajs) == 1:
        return trajs[0]
    cat = {}
    for name in ("xs", "means", "stds", "log_probs", "prompt_ids", "seeds", "actions",
                 "action_log_probs", "stochastic", "action_mask", "logp_graph"):
        vals = [getattr(t, name) for t in trajs]
        cat[name] = None if vals[0] is None else torch.cat(vals)
    conds = [t.cond for t in trajs]
    cond = None if conds[0] is None else (torch.cat(conds) if isinstance(conds[0], Tensor)
                                         else Cond.cat(conds))
    return Trajectory(ts=trajs[0].ts, prompts=[p for t in trajs for p in t.prompts], cond=cond,
                      **cat)


def policy_loss(ctx: "UpdateContext", sub: Trajectory, adv: Tensor, logp: Tensor | None = None,
                kl: Tensor | None = None, fold: bool = False) -> LossOut:
    """The registered loss of ``ctx.algo`` on the rows ``sub`` with advantages ``adv``.

    ``logp`` / ``kl`` (``[B, S]``): use these instead of recomputing them (the rollout's graph
    of an on-policy update, or :func:`chunked_policy_loss`'s per-chunk inputs); ``fold``: the
    recomputation's steps in one batched model call (``Policy.step_preds``).
    """
    cfg = ctx.algo
    kw = dict(cfg.loss_kwargs)
    names = ctx.data_args
    if logp is None:
        logp = ctx.policy.log_prob(sub, fold=fold)
    logp_old = sub.log_probs.to(logp.device)
    if "logp_old" in names and cfg.ratio_units == "per_dim":
        # dimension-free trust region: ρ, clip and approx-KL on log-probs per dimension
        d = math.prod(ctx.policy.shape)
        logp, logp_old = logp / d, logp_old / d
    data: dict[str, Tensor | None] = {"logp": logp, "logp_old": logp_old,
                                      "adv": adv, "mask": sub.trained.to(logp.device)}
    if "dt" in names:  # score_as_action turns advantages into q-rates itself (rl/ct.py)
        data["dt"] = sub.dt.to(logp.device).float()
    if "kl" in names:
        data["kl"] = kl if kl is not None or not needs_kl(ctx) else step_kl(ctx, sub, fold=fold)
        flow = data["kl"] is not None and "flow_family" in ctx.entry.properties
        if flow and (cfg.ratio_units == "per_dim" or cfg.kl_units == "authors"):
            # the Flow-GRPO family's β weighs the KL averaged over dimensions, like the ratio:
            # yifan123/flow_grpo scripts/train_sd3.py kl_loss = ((μ − μ_ref)²).mean(dim=(1,2,3))
            # / (2σ²) beside log_prob.mean(dims) (flow_grpo/diffusers_patch/sd3_sde_with_logprob.py)
            data["kl"] = data["kl"] / math.prod(ctx.policy.shape)
        if flow and cfg.kl_units == "authors":  # their σ: c_k = |Δt_k| for flow_sde (Policy)
            c = ctx.policy.authors_kl_factors().to(data["kl"].device, data["kl"].dtype)
            data["kl"] = data["kl"] * c[None, :]
    return ctx.entry.fn(**{n: data[n] for n in names if n in data}, **kw)


def needs_kl(ctx: "UpdateContext") -> bool:
    """Whether the loss takes a differentiable per-step KL: β > 0 (the loss's own default β
    included: flow_grpo's is 0.04), or a loss whose ``kl`` argument has no default (DPOK)."""
    return loss_needs_kl(ctx.entry, ctx.algo.loss_kwargs)


def loss_needs_kl(entry, loss_kwargs) -> bool:
    """:func:`needs_kl` of a registered loss ``entry`` with configured ``loss_kwargs``."""
    if "kl" not in split_signature(entry.fn)[0]:
        return False
    beta = float({**split_signature(entry.fn)[1], **loss_kwargs}.get("beta", 0.0) or 0.0)
    return beta > 0 or kl_required(entry)


def step_kl(ctx: "UpdateContext", sub: Trajectory, steps: list[int] | None = None,
            fold: bool = False) -> Tensor:
    """The per-step KL term ``[B, S]`` (``[B, len(steps)]``) of ``algo.kl``: ``exact`` (Gaussian
    KL of the sampled kernel or action, nats) or ``eps_mse`` (DPOK's code: mean_d (ε_θ −
    ε_ref)², guided)."""
    if ctx.algo.kl == "eps_mse":
        return ctx.policy.eps_mse(ctx.ref_policy, sub, steps, fold=fold)
    return ctx.policy.kl(ctx.ref_policy, sub, steps, fold=fold)


def chunked_policy_loss(ctx: "UpdateContext", sub: Trajectory, adv: Tensor, chunk: int, fold: bool,
                        backward: Callable[[Tensor, bool], None]) -> LossOut:
    """:func:`policy_loss` with the backward pass taken per chunk of ``chunk`` trained steps, so
    only one chunk's graphs are alive at a time (TRL's DDPOTrainer backpropagates per step).

    Every registered log-prob loss is a sum over steps of per-step terms (a mask-weighted mean
    with constant weights; tests/rl/test_memory_options.py checks that their step-mixed second
    derivatives vanish), so the gradient of chunk c's loss, evaluated with the other columns held
    at constants, is exactly chunk c's share of the full gradient, and the chunks' gradients sum
    to :func:`policy_loss`'s. ``backward(loss, last)`` is called once per chunk (``last``: the
    final chunk). The returned loss and metrics are those of the full loss at the recomputed
    values (no graph).
    """
    steps = _trained_steps(sub)
    chunk = chunk if chunk > 0 else max(len(steps), 1)
    logp_old = sub.log_probs.to(sub.xs.device)
    logp = torch.zeros_like(logp_old)
    kl = torch.zeros_like(logp_old) if needs_kl(ctx) else None
    held = torch.where(sub.trained.to(logp.device), logp_old, torch.zeros_like(logp_old))
    for c in range(0, len(steps), chunk):
        ks = steps[c:c + chunk]
        idx = torch.tensor(ks, device=logp.device)
        lp_c = ctx.policy.log_prob(sub, ks, fold=fold)
        kl_c = step_kl(ctx, sub, ks, fold=fold) if kl is not None else None
        lp_in = held.to(lp_c.dtype).index_copy(1, idx, lp_c)
        kl_in = None if kl is None else kl.to(kl_c.dtype).index_copy(1, idx, kl_c)
        backward(policy_loss(ctx, sub, adv, logp=lp_in, kl=kl_in).loss, c + chunk >= len(steps))
        logp = logp.to(lp_c.dtype).index_copy(1, idx, lp_c.detach())
        if kl is not None:
            kl = kl.to(kl_c.dtype).index_copy(1, idx, kl_c.detach())
    with torch.no_grad():
        out = policy_loss(ctx, sub, adv, logp=logp, kl=kl)
    return LossOut(out.loss.detach(), out.metrics)


def _trained_steps(sub: Trajectory) -> list[int]:
    return sub.trained.any(0).nonzero().flatten().tolist()


def backprop_loss(ctx: "UpdateContext", sub: Trajectory, epoch: int) -> LossOut:
    """DRaFT-K: −mean reward of samples re-generated from the same noise, with gradients
    through the last K solver steps only (the first S − K run without a graph).

    The rows reuse the recorded state x_{S−K} (exactly what the rollout visited) and their own
    per-row noise, so the re-generated samples equal the rollout's when the weights are unchanged.
    ``epoch`` goes to the reward's metadata.
    """
    pol, K = ctx.policy, ctx.algo.backprop_steps
    S = sub.num_steps
    if not 1 <= K <= S:
        raise ValueError(f"algo.backprop_steps must be in [1, {S}], got {K}")
    _, noise, _ = pol._noise(sub.seeds, sub.xs.device)
    x_start = sub.xs[:, S - K]
    out = sample(pol.pred_fn(sub.cond), pol.kind, pol.sde, x_start, sampler=pol.sampler,
                 steps=K, eta=pol.eta, grid=sub.ts[S - K:], noise=noise[S - K:],
                 deterministic=~sub.random_steps[0, S - K:].cpu(), clip_x0=pol.clip_sample)
    images = ctx.rewards.prepare(ctx.decode(out.x0))
    r = ctx.rewards.optimized(images, sub.prompts, {"epoch": epoch})
    if r.shape != (sub.batch_size,):
        raise ValueError(f"reward returned shape {tuple(r.shape)}, expected [{sub.batch_size}]")
    return reward_backprop(r.float())


def reward_gradient(ctx: "UpdateContext", sub: Trajectory, epoch: int) -> tuple[Tensor, Tensor]:
    """(∇_x r(decode(x_0)), r) of the rows' final samples ``sub.x0`` under the optimized reward
    (clamped as every reward sees samples, ``RewardSet.prepare``), each ``[B, *D]`` / ``[B]``.

    Raises:
        RewardError: the reward's value carries no graph to the samples (naming it).
    """
    from scorealign.rewards.base import RewardError, check_reward_output, reward_name

    with torch.enable_grad():
        x = sub.x0.detach().float().requires_grad_(True)
        images = ctx.rewards.prepare(ctx.decode(x))
        name = reward_name(ctx.rewards.optimized)
        r = check_reward_output(ctx.rewards.optimized(images, sub.prompts, {"epoch": epoch}),
                                sub.batch_size, name)
        if not r.requires_grad:
            raise RewardError(f"reward {name!r} returned a value without a gradient in the "
                              f"samples; algo.loss={ctx.algo.loss} needs a differentiable reward")
        (g,) = torch.autograd.grad(r.sum(), x)  # rows are independent: row b's own ∇r
    return g.to(sub.xs.dtype), r.detach()


def adjoint_matching_loss(ctx: "UpdateContext", sub: Trajectory, epoch: int, call: int
                          ) -> LossOut:
    """Adjoint Matching on the recorded rollout ``sub`` [Domingo-Enrich+25, Alg. 1: sample with
    the memoryless schedule (40), lean adjoint (41), regression (42); numbers as quoted by
    third-party readings, docs/methods/adjoint_matching.md].

    1. ∇r(x_0) of the rows' samples (:func:`reward_gradient`); ã_S = −∇r/λ (the terminal
       condition ã(1) = ∇g = −∇r/λ of the lean adjoint, eqs. (37)–(39); the authors'
       ``am_trainer.py:158``).
    2. The lean adjoint ã_i = (∂μ_base(x_i)/∂x_i)ᵀ ã_{i+1} by one VJP per step through the *base*
       model (``ctx.ref_policy``: the frozen reference, i.e. LoRA off), ``sde.soc.lean_adjoint``
       with ``samplers.memoryless.base_step_mean``; no backpropagation through the sampler
       (as microsoft/soc-fine-tuning-sd ``am_trainer.py:161–169``).
       The base step means are kept for step 3 (no second base forward).
    3. K step indices among ``rl.adjoint_matching.trained_steps`` (all S, or S − 1 when the
       last step onto t = 0 has std 0) by ``rl.adjoint_matching.sample_time_indices`` (the
       authors' stratified draw, ``am_trainer.py:189–225``; generator keyed by the first row's
       seed, ``epoch`` and ``call``), θ's step means
       there with gradient (``Policy.kernels``), control w = (μ_θ − μ_base)/σ_k.
    4. The registered ``adjoint_matching`` loss with ã_{k+1} (docs/methods/adjoint_matching.md).

    CFG: both drifts use the policy's guided prediction (``policy.guidance``), i.e. the authors'
    ``guidance_in_adjoint_computation`` and ``guidance_in_control_computation`` both on (their
    README.md:100, "full CFG fine-tuning"; flags ``config_utils.py:60–61``). Their SD 1.5 configs
    set both off with ``guidance_scale: 7.5`` (``configs/multi_prompt.yaml:36–38``: CFG
    trajectories only, README.md:98), which is not implemented; ``policy.guidance: 1`` is their
    "fine-tuning without guidance" (README.md:99).
    """
    from scorealign.rl.adjoint_matching import discrete_control, sample_time_indices
    from scorealign.rl.adjoint_matching import AM_DEFAULT_LAM, AM_DEFAULT_TIMES, trained_steps
    from scorealign.rng import generator
    from scorealign.samplers.memoryless import base_step_mean
    from scorealign.sde.soc import lean_adjoint

    pol, ref = ctx.policy, ctx.ref_policy
    kw = {"lam": AM_DEFAULT_LAM, "times": AM_DEFAULT_TIMES, **ctx.algo.loss_kwargs}
    lam, S = float(kw["lam"]), sub.num_steps
    grad_r, r = reward_gradient(ctx, sub, epoch)
    step = base_step_mean(ref.pred_fn(sub.cond), pol.kind, pol.sde, pol.sampler,
                          1.0 if pol.eta is None else pol.eta)
    base_means: dict[int, Tensor] = {}

    def recorded(x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:  # called for i = S−1 … 0
        mean = step(x, t, t_next)
        base_means[S - 1 - len(base_means)] = mean.detach()
        return mean

    adj = lean_adjoint(sub.xs, sub.ts, recorded, grad_r, lam)
    g = generator(int(sub.seeds[0]), "adjoint-matching-times", epoch, call)
    ks = sample_time_indices(trained_steps(sub.stds), int(kw["times"]), g).tolist()
    mean_ft = torch.stack([m for m, _ in pol.kernels(sub, ks)], 1)
    mean_base = torch.stack([base_means[k] for k in ks], 1)
    std = sub.stds[:, ks].to(sub.xs.device)
    control = discrete_control(mean_ft, mean_base, std)
    nxt = [k + 1 for k in ks]
    out = ctx.entry.fn(control, adj[:, nxt], std, **kw)
    metrics = {**out.metrics, "am/grad_r_norm": grad_r.flatten(1).norm(dim=1).mean(),
               "am/reward_mean": r.mean()}
    return LossOut(out.loss, metrics)
