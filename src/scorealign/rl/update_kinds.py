"""RL update kinds: how one micro-batch of an epoch's rows becomes a loss, as strategies.

The one trainer (``rl.trainer.Finetuner``) runs rollout → reward → advantages → minibatch steps
for every method; what differs between methods is the *update kind*, chosen once per run from the
registered loss (:func:`update_kind_for`), never from the method's name, and built once over the
run's first context:

=================== ============================================ ==============================
kind                loss entries                                  micro-batch loss
=================== ============================================ ==============================
``log_prob``        every log-prob loss (reinforce, ppo_clip,    the registered loss on
                    LOOP, GRPO and the Flow-GRPO family, DPOK,   recomputed per-step log-probs
                    score_as_action)                             and KL (``rl.updates``),
                                                                 optionally per chunk of steps
``reward_backprop`` property ``backprop_through_sampler``        DRaFT-K: backprop through the
                    (``reward_backprop``)                        last K solver steps and the
                                                                 reward [Clark+24 DRaFT]
``adjoint_matching`` property ``lean_adjoint``                   regress the control on the
                    (``adjoint_matching``)                       lean adjoint of the base model
                                                                 [Domingo-Enrich+25 AM]
``forward_process`` property ``forward_process``                 DiffusionNFT on re-noised
                    (``diffusion_nft``)                          final samples; an old model
                                                                 samples [Zheng+25 DiffusionNFT]
=================== ============================================ ==============================

A loss with property ``needs_differentiable_reward`` (reward backprop, adjoint matching) refuses
an optimized reward that declares no gradient (``rewards.base.require_differentiable``) when its
kind is built, i.e. before any rollout.

Each kind is registered in :data:`UPDATE_KINDS` with the loss property that selects it (the
entry's ``properties``; none for the default ``log_prob``); a new kind is one class and one
decorator. Its methods take the frozen :class:`~scorealign.rl.context.UpdateContext` of the
current epoch (the trainer builds one per epoch from its state) and answer: which policy samples the rollouts,
whether advantages are needed, the micro-batch loss, its count of model evaluations with a graph,
whether its backward may be taken per chunk of steps, what it does after an epoch and what it
adds to a checkpoint.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from scorealign.policy.policy import Policy
from scorealign.policy.trajectory import Trajectory
from scorealign.registry import Entry, Registry
from scorealign.rl.context import UpdateContext
from scorealign.rl.flow_methods import NFT_TIMESTEP_FRACTION, OldModel, nft_loss, nft_times
from scorealign.rl.adjoint_matching import AM_DEFAULT_TIMES, trained_steps
from scorealign.rl.losses import LossOut
from scorealign.rl.updates import (adjoint_matching_loss, backprop_loss, chunked_policy_loss,
                                   loss_needs_kl, policy_loss)

UPDATE_KINDS = Registry("RL update kind")


class UpdateKind:
    """The default behaviour of an update kind (the log-prob surrogate's).

    Attributes:
        uses_advantages: the loss takes advantages (the trainer computes them from rewards).
        clip_metrics: the loss reports ``policy/clipfrac`` (the trainer logs ``clip/frac_mb0``).
    """

    uses_advantages = True
    clip_metrics = True

    def __init__(self, ctx: UpdateContext):
        """Build the kind for the run whose first context is ``ctx``."""

    def sampling_policy(self, ctx: UpdateContext) -> Policy:
        """The policy that draws the rollouts (θ's own unless the kind keeps another)."""
        return ctx.policy

    def chunked(self, step_chunk: int, fold_steps: bool) -> bool:
        """Whether the backward is taken per chunk of steps (``train.step_chunk``/``fold_steps``)."""
        return False

    def loss(self, ctx: UpdateContext, sub: Trajectory, adv: Tensor | None,
             epoch: int) -> LossOut:
        """The loss of the micro-batch ``sub`` with advantages ``adv`` in epoch ``epoch``."""
        raise NotImplementedError

    def chunked_loss(self, ctx: UpdateContext, sub: Trajectory, adv: Tensor, chunk: int,
                     fold: bool, backward: Callable[[Tensor, bool], None]) -> LossOut:
        """:meth:`loss` with the backward taken per chunk (only where :meth:`chunked`)."""
        raise NotImplementedError(f"{type(self).__name__} has no chunked backward")

    def model_evals_grad(self, ctx: UpdateContext, sub: Trajectory) -> int:
        """Model evaluations with a graph for the micro-batch ``sub``."""
        raise NotImplementedError

    def after_epoch(self, ctx: UpdateContext, epoch: int) -> dict[str, float]:
        """Work after the epoch's optimizer steps (0-based ``epoch``); returns metrics."""
        return {}

    def state(self) -> dict[str, Any]:
        """What the kind adds to a checkpoint's states."""
        return {}

    def load(self, states: dict[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint's states."""


@UPDATE_KINDS.register(
    "log_prob", paper="Black+23 (DDPO), arXiv:2305.13301; Fan+23 (DPOK), arXiv:2305.16381",
    equation="registered log-prob surrogate on recomputed per-step log-probs (+ β·KL)")
class LogProbUpdate(UpdateKind):
    """A registered log-prob loss on recomputed log-probs (:func:`~scorealign.rl.updates.policy_loss`),
    with the backward per chunk of trained steps when asked (``chunked_policy_loss``)."""

    def chunked(self, step_chunk: int, fold_steps: bool) -> bool:
        return step_chunk > 0 or fold_steps

    def loss(self, ctx, sub, adv, epoch) -> LossOut:
        return policy_loss(ctx, sub, adv)

    def chunked_loss(self, ctx, sub, adv, chunk, fold, backward) -> LossOut:
        return chunked_policy_loss(ctx, sub, adv, chunk, fold, backward)

    def model_evals_grad(self, ctx: UpdateContext, sub: Trajectory) -> int:
        """Rows × trained steps, again for a differentiable KL term."""
        steps = int(sub.trained.any(0).sum())
        kl = loss_needs_kl(ctx.entry, ctx.algo.loss_kwargs)
        return sub.batch_size * steps * (2 if kl else 1)


@UPDATE_KINDS.register(
    "reward_backprop", paper="Clark+24 (DRaFT), arXiv:2309.17400",
    equation="−mean r(x_0) with gradients through the last K solver steps",
    properties=frozenset({"backprop_through_sampler"}))
class RewardBackpropUpdate(UpdateKind):
    """DRaFT-K (:func:`~scorealign.rl.updates.backprop_loss`): no advantages, no ratio."""

    uses_advantages = False
    clip_metrics = False

    def loss(self, ctx, sub, adv, epoch) -> LossOut:
        return backprop_loss(ctx, sub, epoch)

    def model_evals_grad(self, ctx: UpdateContext, sub: Trajectory) -> int:
        """Rows × K (guidance counts as one evaluation)."""
        return sub.batch_size * ctx.algo.backprop_steps


@UPDATE_KINDS.register(
    "forward_process", paper="Zheng+25 (DiffusionNFT), arXiv:2509.16117",
    equation="NFT objective on forward-noised final samples; old model soft-updated per epoch",
    properties=frozenset({"forward_process"}))
class ForwardProcessUpdate(UpdateKind):
    """DiffusionNFT (:func:`~scorealign.rl.flow_methods.nft_loss`): the old model
    (:class:`~scorealign.rl.flow_methods.OldModel`) samples the rollouts and is soft-updated
    toward θ after each epoch; its weights are checkpointed as ``nft_old``."""

    def __init__(self, ctx: UpdateContext):
        super().__init__(ctx)
        self.old = OldModel(ctx)

    def sampling_policy(self, ctx: UpdateContext) -> Policy:
        return self.old.policy

    def loss(self, ctx, sub, adv, epoch) -> LossOut:
        return nft_loss(ctx, sub, adv, self.old.model)

    def model_evals_grad(self, ctx: UpdateContext, sub: Trajectory) -> int:
        """Rows × the grid times each row trains on (``nft_times``)."""
        frac = float(ctx.algo.loss_kwargs.get("timestep_fraction", NFT_TIMESTEP_FRACTION))
        return int(nft_times(sub.seeds.cpu(), sub.num_steps, frac).sum())

    def after_epoch(self, ctx: UpdateContext, epoch: int) -> dict[str, float]:
        return self.old.soft_update(ctx.unwrap(ctx.model), epoch)

    def state(self) -> dict[str, Any]:
        return {"nft_old": self.old.state()}

    def load(self, states: dict[str, Any]) -> None:
        self.old.load(states.get("nft_old", {}))


@UPDATE_KINDS.register(
    "adjoint_matching", paper="Domingo-Enrich+25 (Adjoint Matching), arXiv:2409.08861",
    equation="E Σ_k ‖(μ_θ − μ_base)/σ_k + σ_k ã_{k+1}‖² at K sampled steps; ã the lean adjoint "
             "of the base sampler step from −∇r(x_0)/λ (Alg. 1)",
    properties=frozenset({"lean_adjoint"}))
class AdjointMatchingUpdate(UpdateKind):
    """Adjoint Matching (:func:`~scorealign.rl.updates.adjoint_matching_loss`): rollouts of θ
    under the memoryless sampler, no advantages, no ratio. Refuses a sampler that is not
    memoryless when built (before any rollout), unless ``algo.loss_kwargs.memoryless`` is
    false (the bias ablation: the η < 1 sampler is still checked to be stochastic at every
    step, its loss divides by each step's std)."""

    uses_advantages = False
    clip_metrics = False

    def __init__(self, ctx: UpdateContext):
        super().__init__(ctx)
        kw = ctx.algo.loss_kwargs
        check_memoryless(ctx.policy, strict=bool(kw.get("memoryless", True)),
                         tol=kw.get("memory_tol"))
        self.epoch, self.calls = -1, 0

    def loss(self, ctx, sub, adv, epoch) -> LossOut:
        if epoch != self.epoch:  # the time draws restart each epoch: exact resume at epochs
            self.epoch, self.calls = epoch, 0
        self.calls += 1
        return adjoint_matching_loss(ctx, sub, epoch, self.calls)

    def model_evals_grad(self, ctx: UpdateContext, sub: Trajectory) -> int:
        """Rows × (K trained steps with a parameter graph + S base VJPs w.r.t. the state)."""
        times = int({"times": AM_DEFAULT_TIMES, **ctx.algo.loss_kwargs}["times"])
        return sub.batch_size * (min(times, trained_steps(sub.stds)) + sub.num_steps)


def final_step_lands_on_data(policy: Policy) -> bool:
    """Whether the grid's last node is the data end t = 0 (a pipeline flow grid, whose sigmas end
    at 0): the DDPM step onto it has std 0 (its posterior variance vanishes), the discrete form
    of the memoryless σ(t) → 0 at the data end [Domingo-Enrich+25, Prop. 1 / Thm. 1 (§4.3):
    σ(t) = sqrt(2η_t), η_t = (1 − t)/t → 0 there]. That one step carries no noise and no control
    cost (in continuous time the optimal Δv = σu*/2 vanishes there); the lean adjoint passes
    through it and the loss trains on the random steps only (:func:`trained_steps`). The
    authors' SD code has no such step (``final_alpha_cumprod = (1 + ᾱ[t_last])/2``,
    microsoft/soc-fine-tuning-sd ``soc_trainer.py:91–94``, keeps the last std > 0); a reading
    of the paper's App. G.1 takes a final noise-free step with the base velocity, whereas the
    rollout here takes it with θ (docs/methods/adjoint_matching.md, difference 8)."""
    return float(policy.ts[-1]) == 0.0


def check_memoryless(policy: Policy, strict: bool = True, tol: float | None = None) -> None:
    """Refuse a policy whose rollouts are not memoryless [Domingo-Enrich+25, Definition 1,
    Prop. 1 and Thm. 1; "any DDIM schedule with η ≥ 1 is memoryless by Prop. 1 …, η = 1 yields
    the distinguished memoryless schedule in Thm. 1", microsoft/soc-fine-tuning-sd README.md:89]:
    DDPM or DDIM η = 1 (every step random, no x̂₀ clipping, no score-action exploration) from
    full noise (``samplers.memoryless.memory`` ≤ ``MEMORY_TOL``). η > 1, also memoryless by
    Prop. 1, is refused (not needed).
    ``strict=False`` (``algo.loss_kwargs.memoryless: false``, the bias ablation) keeps only what
    the loss itself needs: every step random, no clipping, no exploration. ``tol``: the largest
    m/s accepted (``algo.loss_kwargs.memory_tol``; None: ``MEMORY_TOL``).

    Raises:
        FieldError: naming ``policy.sampler``/``policy.eta`` (or the offending field).
    """
    from scorealign.config import FieldError
    from scorealign.samplers.memoryless import MEMORY_TOL, memory

    eta = 1.0 if policy.eta is None else float(policy.eta)
    if strict and not (policy.sampler == "ddpm" or (policy.sampler == "ddim" and eta == 1.0)):
        raise FieldError("policy.sampler", f"adjoint matching needs a memoryless sampler: "
                         f"policy.sampler=ddpm, or ddim with policy.eta=1.0 (got "
                         f"sampler={policy.sampler!r}, eta={policy.eta})")
    if policy.exploration > 0:
        raise FieldError("policy.exploration", "adjoint matching samples the η = 1 SDE itself: "
                         "needs policy.exploration=0")
    if policy.clip_sample is not None:
        raise FieldError("policy.clip_sample", "adjoint matching needs the unclipped step mean "
                         "(its Jacobian is the lean adjoint's): needs policy.clip_sample=null")
    random = policy.stochastic_steps(0, 0)
    if not bool(random[:-1].all()) or not (bool(random[-1]) or final_step_lands_on_data(policy)):
        raise FieldError("policy.action_steps", f"adjoint matching samples every step of the "
                         f"SDE (its loss divides by each step's std): needs "
                         f"policy.action_steps=all (got {policy.action_steps!r})")
    mem = memory(policy.sde, float(policy.ts[0]))
    tol = MEMORY_TOL if tol is None else float(tol)
    if strict and mem > tol:
        raise FieldError("policy.sampler", f"the rollout starts at t={float(policy.ts[0]):.4g} "
                         f"with signal m/s = {mem:.3g} > {tol}: not memoryless (needs a VP or "
                         f"flow SDE sampled from full noise, or algo.loss_kwargs.memory_tol)")


def update_kind_for(entry: Entry) -> str:
    """The update kind a registered loss declares through its properties: the kind whose
    registered ``properties`` the loss has, else ``log_prob``."""
    chosen = [name for name, kind in UPDATE_KINDS.items()
              if kind.properties and kind.properties <= entry.properties]
    if len(chosen) > 1:
        raise ValueError(f"loss properties {sorted(entry.properties)} select several update "
                         f"kinds: {chosen}")
    return chosen[0] if chosen else "log_prob"


def build_update(ctx: UpdateContext) -> UpdateKind:
    """The update kind of ``ctx.entry``, built for the run whose first context is ``ctx``.

    Raises:
        RewardError: the loss needs a differentiable reward and the optimized one declares none.
    """
    if "needs_differentiable_reward" in ctx.entry.properties:
        from scorealign.rewards.base import require_differentiable
        require_differentiable(ctx.rewards.optimized, f"algo.loss={ctx.algo.loss}")
    return UPDATE_KINDS.get(update_kind_for(ctx.entry)).fn(ctx)


__all__ = ["UPDATE_KINDS", "AdjointMatchingUpdate", "ForwardProcessUpdate", "LogProbUpdate", "RewardBackpropUpdate",
           "UpdateKind", "build_update", "check_memoryless", "update_kind_for"]
