"""A diffusion sampler bound to a model is a policy: rollout, exact log-probs, KL to a reference.

``Policy(model, sde, config, kind=…, shape=…)`` (a :class:`~scorealign.policy.config.PolicyConfig`
taken whole; or ``Policy(model, sde, kind=…, shape=…, sampler=…, …)`` naming its fields) runs :func:`scorealign.samplers.sample` (the library's
only sampling loop) with per-row noise and records a :class:`Trajectory`. Two kinds of policy
randomness are supported:

* **transition** (``exploration = 0``, a stochastic sampler): the random choice of step k is
  x_{k+1} ~ N(μ_θ(x_k, t_k), σ_k² I), the sampler's own Gaussian kernel; its log-density is the
  DDPO/LOOP/GRPO log-prob [Black+23 DDPO, §4.2; papers.md §5].
* **score action** (``exploration = λ > 0``, any solver, even a deterministic one): at each grid
  time the policy draws an action ε_a ~ N(ε_θ(x_k, t_k), λ² I) in ε-space (equivalently a score
  a = −ε_a / s(t_k) ~ N(s_θ, (λ/s(t_k))² I)) and the solver integrates with it; its log-density is
  the exploratory policy π_θ(a | t, x) of Score as Action [Zhao+25, arXiv:2502.01819, §3; papers.md
  §4]. The density ratio does not depend on the solver or the step size. The action is the
  explicit hook :meth:`Policy.act` ``(x, t, noise)``, used by both the rollout and ``log_prob``.

**Action steps** (``action_steps``, ``policy.action_steps`` in configs; full table in
:mod:`scorealign.policy.actions`): only a subset of the S steps are random choices. Non-action
steps are taken deterministically (η = 0 step / kernel mean; no action noise) and carry log-prob
0. The default ``auto`` drops the final step (a deterministic denoising step) and every
near-deterministic step (σ_k < 0.1 max σ): on the shipped digits model with 10 DDIM η = 1 steps
the last kernel std is 0.0105 against 0.29 one step earlier, and that one step carried ~99 % of
the KL. API::

    traj = pol.rollout(prompts, k, seeds=seeds, run_seed=seed, epoch=epoch)
    traj.stochastic   # [B, S] bool: steps sampled at random (the policy's actions this epoch)
    traj.action_mask  # [B, S] bool: steps trained/KL'd (DDPO fraction: a per-row subset)
    pol.log_prob(traj)      # [B, S], recomputed at the trained steps, 0 elsewhere
    pol.kl(ref, traj)       # [B, S], exact per-step KL at the random steps, 0 elsewhere

A new sampler plugs in by returning its Gaussian kernel from a registered step function (its
std must depend on the times only: :func:`~scorealign.policy.actions.kernel_stds`).

``log_prob(traj)`` recomputes whichever density the policy samples with under the current weights,
step by step with the same arithmetic as the rollout: on the rows and weights of the rollout it
reproduces ``traj.log_probs`` bit for bit. ``kl`` gives the per-step Gaussian KL to a reference
policy and ``path_kl_rate`` the integrand ½ g(t)² ‖s_θ − s_ref‖² of the path-space (Girsanov) KL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from scorealign.nets.cond import guided
from scorealign.policy.actions import (kernel_stds, parse_action_steps, stochastic_steps,
                                       trained_mask)
from scorealign.policy.config import PolicyConfig
from scorealign.policy.trajectory import Trajectory
from scorealign.rng import derive_seed, randn_per_sample
from scorealign.samplers import SAMPLERS, gaussian_log_prob, make_grid, sample
from scorealign.samplers.grids import explicit_grid
from scorealign.samplers.loop import _is_stochastic
from scorealign.samplers.steps import model_time, model_times
from scorealign.sde.base import SDE, bcast
from scorealign.sde.param import convert, to_eps, to_score

Model = Callable[[Tensor, Tensor, Any], Tensor]
# Samplers whose authors' code computes a rescaled step "log-prob" (``log_prob_units=authors``):
# yifan123/flow_grpo flow_grpo/diffusers_patch/sd3_sde_with_logprob.py, sde_type='cps':
# ``log_prob = -((prev_sample.detach() - prev_sample_mean) ** 2)`` ("remove all constants"),
# then ``.mean`` over dimensions (the mean is our ``algo.ratio_units=per_dim``).
AUTHORS_LOG_PROB = frozenset({"flow_cps"})
# Samplers whose authors' KL divides by the SDE's σ_t instead of the kernel std σ_t √|Δt|
# (flow_grpo sd3_sde_with_logprob.py sde_type='sde' returns std_dev_t = σ_t).
KL_DT_SAMPLERS = frozenset({"flow_sde"})


def authors_log_prob(x_next: Tensor, mean: Tensor) -> Tensor:
    """−Σ_d (x' − μ)² per row, fp32 (fp64 for fp64 inputs): flow_grpo's CPS "log-prob" summed
    over dimensions; equal to 2σ² (log N(x'; μ, σ² I) + D log σ + (D/2) log 2π)."""
    dt = torch.float64 if x_next.dtype == torch.float64 else torch.float32
    return -(x_next.detach().to(dt) - mean.to(dt)).pow(2).flatten(1).sum(1)


def policy_grid(sde: SDE, config: PolicyConfig) -> Tensor:
    """The grid of a policy's settings: ``config.timesteps``/``sigmas`` through the pipeline
    SDE's scheduler (``policy.schedule``), else ``make_grid(sde, steps, grid)``; ``grid: auto`` is
    the SDE's default grid (a pipeline's scheduler grid; ``uniform`` for the VP and flow SDEs)."""
    if config.timesteps is not None or config.sigmas is not None:
        fn = getattr(sde, "scheduler_grid", None)
        name = "timesteps" if config.timesteps is not None else "sigmas"
        if fn is None:
            raise ValueError(f"policy.{name} needs a diffusers pipeline policy (a scheduler); "
                             f"{type(sde).__name__} has none: use policy.grid or pass an "
                             f"explicit grid to Policy(grid=...)")
        return fn(config.steps, timesteps=config.timesteps, sigmas=config.sigmas)
    return make_grid(sde, config.steps, config.grid)


@dataclass(frozen=True)
class Action:
    """One score action at (x, t) (:meth:`Policy.act`).

    Attributes:
        pred: the prediction (of the model's kind) the solver integrates with.
        eps: the model's own ε_θ(x, t) (the mean of the action's density).
        action: ε_a = ε_θ + λ·noise at an action step; ε_θ where no noise is drawn.
    """

    pred: Tensor
    eps: Tensor
    action: Tensor


class Policy:
    """Model + SDE + sampler: the score-as-action policy.

    Args:
        model: ``model(x, t, cond) -> prediction`` of ``kind``.
        sde: the forward SDE.
        config: the policy's settings whole (:class:`~scorealign.policy.config.PolicyConfig`,
            the ``policy:`` section of a finetune config). None: built from ``settings`` over
            the bare policy's defaults (those of ``PolicyConfig`` but ``guidance=1``, no CFG).
        kind: "eps", "x0", "score" or "v".
        shape: the shape of one sample (e.g. ``(1, 8, 8)``).
        encode: ``prompts -> cond`` (None: unconditional).
        settings: ``PolicyConfig`` fields by name (over ``config`` when both are given):
            sampler (a name in ``SAMPLERS``), steps (solver steps S), eta (the sampler's η;
            None: its default), grid (a time-grid name; ``auto``: the SDE's default, a pipeline
            scheduler's own grid for pipeline policies (``policy.schedule``); or an explicit
            decreasing grid of S + 1 times, a tensor or list, whose length sets ``steps``),
            timesteps / sigmas (explicit lists through a pipeline's scheduler, as
            ``pipe(timesteps=…)`` / ``pipe(sigmas=…)``), log_prob_units (``authors``: flow_cps's
            log-prob as flow_grpo computes it, −Σ (x′ − μ)²; ``exact``), guidance
            (classifier-free guidance scale; 1: none, needs a ``Cond``), exploration (λ, std of the ε-space action noise;
            0: transition log-probs), action_steps (which steps are actions,
            :mod:`scorealign.policy.actions`), clip_sample (clamp x̂₀ to ±clip_sample in every
            step, ddim/ddpm pixel space, None: off; log-probs stay exact, the kernel is Gaussian
            given x_k, see ``ddim_step``), init_same_noise (the rows of one prompt group start
            from the same x_T, drawn from (run seed, epoch, group id), :meth:`_group_x_T`; the
            step noise stays per row).
    """

    def __init__(self, model: Model, sde: SDE, config: PolicyConfig | None = None, *,
                 kind: str, shape: Sequence[int],
                 encode: Callable[[list[str]], Any] | None = None, **settings: Any):
        explicit = None
        if not isinstance(settings.get("grid", "auto"), str):  # an explicit grid [S + 1]
            explicit = explicit_grid(settings.pop("grid"))
            n = explicit.numel() - 1
            if settings.setdefault("steps", n) != n:
                raise ValueError(f"steps={settings['steps']} but the explicit grid has "
                                 f"{n} steps")
        if config is None:
            config = PolicyConfig(**{"guidance": 1.0, **settings})
        elif settings:
            config = replace(config, **settings)
        self.config = config
        sampler, steps, eta, grid = config.sampler, config.steps, config.eta, config.grid
        guidance, exploration = config.guidance, config.exploration
        action_steps, clip_sample = config.action_steps, config.clip_sample
        init_same_noise = config.init_same_noise
        SAMPLERS.get(sampler)
        if exploration < 0:
            raise ValueError(f"exploration must be ≥ 0, got {exploration}")
        if exploration == 0 and not _is_stochastic(sampler, eta):
            raise ValueError(f"sampler {sampler!r} with eta={eta} is deterministic: it has no "
                             f"step log-probs; use a stochastic sampler or exploration > 0")
        self.model, self.sde, self.kind, self.shape = model, sde, kind, tuple(shape)
        self.sampler, self.steps, self.eta, self.grid = sampler, steps, eta, grid
        self.guidance, self.exploration, self.encode = guidance, exploration, encode
        self.clip_sample, self.init_same_noise = clip_sample, init_same_noise
        self.action_spec = parse_action_steps(action_steps)
        self.action_steps = action_steps
        self.ts = explicit if explicit is not None else policy_grid(sde, config)
        if explicit is not None:
            self.grid = "explicit"
        self.log_prob_units = config.log_prob_units
        self.kernel_stds = kernel_stds(sampler, eta, sde, self.ts, self.shape, kind)
        self.stochastic_steps(0, 0)  # validate the spec against the grid now

    # -- action steps ------------------------------------------------------------------------
    def stochastic_steps(self, run_seed: int, epoch: int) -> Tensor:
        """``[S]`` bool: the steps sampled at random in ``epoch`` of run ``run_seed``."""
        return stochastic_steps(self.action_spec, self.kernel_stds,
                                score_action=self.exploration > 0, run_seed=run_seed,
                                epoch=epoch)

    # -- model calls -------------------------------------------------------------------------
    def pred_fn(self, cond: Any, model: Model | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """``pred_fn(x, t)``: the (CFG-guided) prediction of ``model`` (default: own) under cond."""
        m = self.model if model is None else model
        if cond is None or self.guidance == 1.0:
            return lambda x, t: m(x, t, cond)
        return lambda x, t: guided(m, x, t, cond, self.guidance)

    def cond_for(self, prompts: list[str]) -> Any:
        """The model condition of ``prompts`` (None for an unconditional policy)."""
        return None if self.encode is None else self.encode(list(prompts))

    # -- rollout -----------------------------------------------------------------------------
    def _noise(self, seeds: Tensor, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
        """Per-row draws (x_T, step noise [S, B, *D], action noise [B, S, *D])."""
        S = self.steps
        z = randn_per_sample(seeds.tolist(), (2 * S + 1, *self.shape), "policy-rollout")
        z = z.to(device)
        x_T = z[:, 0] * self.sde.prior_std
        return x_T, z[:, 1:S + 1].transpose(0, 1).contiguous(), z[:, S + 1:]

    def _group_x_T(self, ids: Tensor, run_seed: int, epoch: int) -> Tensor:
        """One x_T per group id, shared by its rows ``[B, *D]``: DanceGRPO's ``init_same_noise``
        (XueZeyue/DanceGRPO ``fastvideo/train_grpo_flux.py``: one ``torch.randn`` latent for
        the whole group when ``args.init_same_noise``; scripts/finetune/finetune_flux_grpo.sh
        sets it, as does MixGRPO's script). Keyed by (run seed, epoch, id), so it does not depend
        on chunking, process count or resume."""
        seeds = [derive_seed(run_seed, "group-x_T", epoch, int(i)) for i in ids.tolist()]
        return randn_per_sample(seeds, self.shape, "policy-rollout-group") * self.sde.prior_std

    def rollout(self, prompts: Sequence[str], k: int = 1, *, seeds: Tensor,
                prompt_ids: Tensor | None = None, device: torch.device | str = "cpu",
                run_seed: int = 0, epoch: int = 0, keep_graph: bool = False,
                deterministic: bool = False, x_T: Tensor | None = None,
                grads: Any = None) -> Trajectory:
        """K trajectories per prompt, rows ``[p0]*K + [p1]*K + …``.

        Args:
            prompts: P prompts.
            k: rollouts per prompt K.
            seeds: ``[P·K]`` int64 per-row seeds (all of a row's randomness derives from it).
            prompt_ids: ``[P·K]`` group ids (default: the prompt's position, repeated K times).
            device: where the model runs.
            run_seed, epoch: key of the epoch's random action steps (window, branch modes) and
                of the shared initial noise (``init_same_noise``).
            keep_graph: evaluate the model with autograd at the steps any row trains and return
                those steps' log-probs with their graphs in ``Trajectory.logp_graph`` (states
                detached between steps, so each step's graph is that of one model call, as in
                :meth:`log_prob`). Valid for an update at the rollout's weights only (on-policy:
                one optimizer step per rollout batch), where it equals :meth:`log_prob` and its
                gradient, so the training forward can be skipped.
            deterministic: take every step without noise (the sampler's η = 0 step, DDIM η = 0
                / the flow ODE's Euler step; no action noise): the policy's deterministic
                sampler, what ``pipe(...)`` runs with η = 0. No step is random (log-probs 0).
            x_T: ``[P·K, *D]`` initial states instead of the ones drawn from ``seeds`` (e.g. the
                ``latents`` handed to a pipeline); the step noise still derives from ``seeds``.
            grads: a :class:`~scorealign.nets.per_sample_grads.PerSampleLinearGrads` of the
                policy's model: at each step any row trains, the model runs with autograd, the
                step's log-prob (summed over rows) is backpropagated at once and the per-sample
                gradients ∇_θ log π_θ(x_{k+1}^i | x_k^i) land in ``grads.store[param][k]``
                (``[P·K, *shape]``; step k listed in ``grads.recorded``); the graph is freed
                before the next step. As
                ``keep_graph``, valid for an update at the rollout's weights only; memory is one
                step's graph. Needs ``exploration`` 0.
        Returns:
            Trajectory with ``log_probs`` of the policy's random choices (see module docstring).
        """
        if grads is not None and (keep_graph or self.exploration > 0):
            raise ValueError("rollout(grads=...) takes neither keep_graph nor an exploring "
                             "policy (exploration > 0: the log-prob is the action's)")
        with torch.set_grad_enabled(keep_graph or grads is not None):
            if grads is None:
                return self._rollout(prompts, k, seeds, prompt_ids, device, run_seed, epoch,
                                     keep_graph, deterministic, x_T)
            with grads.recording(len(seeds), slots=self.steps):
                return self._rollout(prompts, k, seeds, prompt_ids, device, run_seed, epoch,
                                     False, deterministic, x_T, grads=grads)

    def initial_state(self, seeds: Tensor, device: torch.device | str = "cpu") -> Tensor:
        """The x_T ``[B, *D]`` a rollout with these row seeds starts from (no shared noise)."""
        return self._noise(seeds, device)[0]

    def step_noise(self, seeds: Tensor, device: torch.device | str = "cpu") -> Tensor:
        """The standard normal step noise ``[S, B, *D]`` a rollout with these row seeds uses."""
        return self._noise(seeds, device)[1]

    def _rollout(self, prompts, k, seeds, prompt_ids, device, run_seed, epoch, keep_graph,
                 deterministic=False, x_T0=None, grads=None):
        rows = [p for p in prompts for _ in range(k)]
        if seeds.shape != (len(rows),):
            raise ValueError(f"seeds must be [{len(rows)}] (P·K), got {tuple(seeds.shape)}")
        ids = torch.arange(len(prompts)).repeat_interleave(k) if prompt_ids is None else prompt_ids
        with torch.no_grad():  # as the recomputation sees it: a constant condition
            cond = self.cond_for(rows)
        cond = cond.to(device) if cond is not None else None
        x_T, noise, act_noise = self._noise(seeds, device)
        if self.init_same_noise:
            x_T = self._group_x_T(ids, run_seed, epoch).to(x_T)
        if x_T0 is not None:
            if tuple(x_T0.shape) != tuple(x_T.shape):
                raise ValueError(f"x_T must be {list(x_T.shape)}, got {list(x_T0.shape)}")
            x_T = x_T0.to(x_T)
        base, lam = self.pred_fn(cond), self.exploration
        rand = self.stochastic_steps(run_seed, epoch)
        if deterministic:
            rand = torch.zeros_like(rand)
        mask = trained_mask(self.action_spec, rand, seeds.cpu())
        graphs = keep_graph or grads is not None
        need = mask.any(0).tolist() if graphs else [False] * self.steps
        if graphs:  # a graph at the trained steps only
            def base(x: Tensor, t: Tensor, _fn=base) -> Tensor:
                with torch.set_grad_enabled(need[state["k"]]):
                    return _fn(x, t)
        state = {"k": 0, "first": True}
        actions: list[Tensor] = []
        eps_model: list[Tensor] = []

        def explore(x: Tensor, t: Tensor) -> Tensor:
            pred = base(x, t)
            if lam == 0 or not state["first"]:  # Heun's 2nd evaluation: the model's own output
                return pred
            state["first"] = False
            k = state["k"]  # not an action step: the model's own ε, no noise
            act = self.act(x, t, act_noise[:, k] if bool(rand[k]) else None, pred=pred)
            actions.append(act.action)
            eps_model.append(act.eps)
            return act.pred

        def advance(i: int, t: Tensor, x: Tensor) -> None:
            state["k"], state["first"] = i + 1, True

        def backward_step(i: int, st: Any, lp_i: Tensor) -> None:
            if not (need[i] and bool(rand[i])):
                return
            if self._authors_log_prob:
                lp_i = authors_log_prob(st.x_next.detach(), st.mean)
            grads.at(i)
            if lp_i.requires_grad:  # one step's graph, freed by this backward
                lp_i.sum().backward()
            grads.recorded.append(i)

        det = ~rand if lam == 0 or deterministic else None
        out = sample(explore, self.kind, self.sde, x_T, sampler=self.sampler, steps=self.steps,
                     eta=self.eta, grid=self.ts, noise=noise, record=True, callback=advance,
                     deterministic=det, clip_x0=self.clip_sample, detach_states=graphs,
                     step_hook=None if grads is None else backward_step)
        b = len(rows)
        stoch = rand[None, :].expand(b, -1).to(out.xs.device)
        mask = mask.to(out.xs.device)
        step_lp = out.log_probs
        if self._authors_log_prob:  # the authors' rescaled "log-prob" (same arithmetic below)
            step_lp = torch.stack([authors_log_prob(out.xs[:, i + 1], out.means[:, i])
                                   for i in range(self.steps)], 1)
        lp = torch.where(stoch, step_lp, torch.zeros_like(step_lp))
        if lam > 0:
            acts = torch.stack(actions, 1).detach()
            lp = self._action_log_prob(acts, torch.stack(eps_model, 1))
            lp = torch.where(stoch, lp, torch.zeros_like(lp))
        graph = None
        if keep_graph:  # as log_prob(traj): the trained steps, 0 elsewhere
            graph = torch.where(torch.tensor(need, device=lp.device)[None], lp,
                                torch.zeros_like(lp))
        lp = lp.detach()
        traj = Trajectory(xs=out.xs, ts=out.ts, means=out.means.detach(), stds=out.stds,
                          log_probs=lp, prompts=rows, prompt_ids=ids.to(torch.int64),
                          seeds=seeds.to(torch.int64), cond=cond, stochastic=stoch,
                          action_mask=mask, logp_graph=graph)
        if lam == 0:
            return traj
        return Trajectory(**{**traj.__dict__, "actions": acts, "action_log_probs": lp})

    def act(self, x: Tensor, t: Tensor, noise: Tensor | None, *, cond: Any = None,
            pred: Tensor | None = None) -> Action:
        """The score action at (x, t): ε_a = ε_θ(x, t) + λ·noise [Zhao+25 Score as Action, §3].

        Args:
            x: ``[B, *D]`` states.
            t: ``[B]`` times, as the model sees them (the rollout's and the recomputation's
                arithmetic agree bit for bit when both pass the same times).
            noise: ``[B, *D]`` standard normal action noise, or None (not an action step:
                ε_a = ε_θ and the solver integrates the model's own prediction).
            cond: the model condition, used when ``pred`` is None.
            pred: the (guided) model prediction at (x, t), if already evaluated.
        Returns:
            :class:`Action` (prediction to integrate, ε_θ, ε_a); its density is
            N(ε_a; ε_θ, λ² I) (:meth:`_action_log_prob`).
        """
        if pred is None:
            pred = self.pred_fn(cond)(x, t)
        eps = to_eps(pred, self.kind, x, t, self.sde)
        if noise is None:
            return Action(pred, eps, eps)
        a = eps + self.exploration * noise
        return Action(convert(a, "eps", self.kind, x, t, self.sde), eps, a)

    def _action_log_prob(self, actions: Tensor, eps: Tensor) -> Tensor:
        """log N(actions; eps, λ² I) per step, ``[B, S]`` fp32 (summed over dimensions)."""
        b, s = actions.shape[:2]
        std = torch.full((b * s,), self.exploration, dtype=torch.float32, device=actions.device)
        return gaussian_log_prob(actions.flatten(0, 1), eps.flatten(0, 1), std).view(b, s)

    # -- recomputation -----------------------------------------------------------------------
    def step_preds(self, traj: Trajectory, steps: Sequence[int] | None = None,
                   model: Model | None = None, fold: bool = False) -> list[Tensor]:
        """The (guided) prediction at (xs[:, k], t_k) for each step k, with grad if enabled.

        ``fold``: the steps go through the model as one batch of B·len(steps) rows (fewer,
        larger calls; the same predictions up to the network's batch-size rounding).
        """
        ks = list(range(traj.num_steps) if steps is None else steps)
        if fold and len(ks) > 1:
            b = traj.batch_size
            x = traj.xs[:, ks].transpose(0, 1).flatten(0, 1)  # step-major [n·B, *D]
            t = torch.cat([traj.ts[k].expand(b) for k in ks])
            cond = traj.cond
            if isinstance(cond, Tensor):
                cond = cond.repeat(len(ks), *([1] * (cond.dim() - 1)))
            elif cond is not None:
                cond = type(cond).cat([cond] * len(ks))
            return list(self.pred_fn(cond, model)(x, model_time(t, x)).split(b))
        fn = self.pred_fn(traj.cond, model)
        mts = model_times(traj.ts, traj.xs[:, 0]) if ks else None  # one copy, not one per step
        return [fn(traj.xs[:, k], mts[k]) for k in ks]

    def log_prob(self, traj: Trajectory, steps: Sequence[int] | None = None,
                 model: Model | None = None, fold: bool = False) -> Tensor:
        """Log-densities ``[B, len(steps)]`` of the recorded random choices under current weights.

        ``steps=None``: ``[B, S]``, computed at the steps any row trains (``traj.trained``)
        and 0 elsewhere, so model evaluations are spent on action steps only.

        Transition policies: log N(x_{k+1}; μ_θ(x_k, t_k), σ_k² I) from the sampler's step
        kernel (DDIM Eq. 12/16 for ``ddim``) [Black+23 DDPO, §4.2]. Score-action policies:
        log N(ε_a,k; ε_θ(x_k, t_k), λ² I) [Zhao+25 Score as Action, §3]. fp32, summed over dims.
        ``fold``: the steps' model calls as one batch (:meth:`step_preds`).
        """
        if steps is None:
            return _scatter(traj, _any_steps(traj.trained),
                            lambda ks: self.log_prob(traj, ks, model, fold))
        ks = list(steps)
        if self.exploration > 0:
            if traj.actions is None:
                raise ValueError("this policy explores in action space but the trajectory has "
                                 "no recorded actions")
            preds = self.step_preds(traj, ks, model, fold)
            # the rollout converted with the model's (fp32) time: same arithmetic, same bits
            mts = model_times(traj.ts, traj.xs[:, 0])
            eps = torch.stack([self.act(traj.xs[:, k], mts[k], None, pred=p).eps
                               for p, k in zip(preds, ks)], 1)
            return self._action_log_prob(traj.actions[:, ks], eps)
        if self._authors_log_prob:
            return torch.stack([authors_log_prob(traj.xs[:, k + 1], st.mean) for k, st in
                                zip(ks, self.kernel_steps(traj, ks, model, fold))], 1)
        return torch.stack([gaussian_log_prob(traj.xs[:, k + 1], st.mean, st.std,
                                              std_value=st.std_value) for k, st in
                            zip(ks, self.kernel_steps(traj, ks, model, fold))], 1)

    @property
    def _authors_log_prob(self) -> bool:
        """Whether step log-probs are the authors' rescaled form (``log_prob_units``)."""
        return (self.log_prob_units == "authors" and self.exploration == 0 and
                self.sampler in AUTHORS_LOG_PROB)

    def authors_kl_factors(self) -> Tensor:
        """c_k ``[S]`` (float64) with the authors' per-step KL = c_k · (exact per-step KL) / D.

        flow_grpo's ``kl_loss = mean_d (μ − μ_ref)² / (2 std_dev_t²)`` (``scripts/train_sd3.py``)
        divides by the ``std_dev_t`` its step returns: for ``sde_type='sde'`` (``flow_sde``) the
        SDE's σ_t, while the kernel std is σ_t √|Δt|, so c_k = |Δt_k|; for ``'cps'``
        (``flow_cps``) the kernel std itself, c_k = 1 (``sd3_sde_with_logprob.py``). Every other
        sampler: 1 (DanceGRPO's ``flux_step`` returns the kernel std, η √Δt).
        """
        c = torch.ones(self.steps, dtype=torch.float64)
        if self.sampler in KL_DT_SAMPLERS and self.exploration == 0:
            c = (self.ts[:-1] - self.ts[1:]).abs()
        return c

    def kernels(self, traj: Trajectory, steps: Sequence[int], model: Model | None = None,
                fold: bool = False) -> list[tuple[Tensor, Tensor]]:
        """(mean, std) of each step's Gaussian kernel at the recorded states (transition policy).
        ``fold``: the steps' first model calls as one batch (:meth:`step_preds`)."""
        return [(st.mean, st.std) for st in self.kernel_steps(traj, steps, model, fold)]

    def kernel_steps(self, traj: Trajectory, steps: Sequence[int], model: Model | None = None,
                     fold: bool = False) -> list:
        """Each step's :class:`~scorealign.samplers.kernel.GaussianStep` (``x_next = mean``) at
        the recorded states, as :meth:`kernels` (which returns its (mean, std))."""
        fn_step = SAMPLERS.get(self.sampler).fn
        fn = self.pred_fn(traj.cond, model)
        kw = {} if self.eta is None else {"eta": self.eta}
        if self.clip_sample is not None:
            kw["clip_x0"] = self.clip_sample
        steps = list(steps)
        preds = self.step_preds(traj, steps, model, fold)
        out = []
        for k, pred in zip(steps, preds):
            x = traj.xs[:, k]
            t, tn = traj.ts[k].expand(x.shape[0]), traj.ts[k + 1].expand(x.shape[0])
            out.append(fn_step(x, pred, self.kind, t, tn, self.sde, noise=None, pred_fn=fn, **kw))
        return out

    # -- divergences to a reference ----------------------------------------------------------
    def kl(self, ref: "Policy", traj: Trajectory, steps: Sequence[int] | None = None,
           recorded: bool = False, fold: bool = False) -> Tensor:
        r"""Per-step KL(p_θ(·|x_k) ‖ p_ref(·|x_k)) ``[B, S]`` at the recorded states.

        ``steps=None``: the random steps of the trajectory (``traj.random_steps``), 0 at the
        deterministic ones: the KL between the distributions the policy actually samples.

        Transition policies (equal σ_k): ‖μ_θ − μ_ref‖² / (2σ_k²)  [Fan+23 DPOK; Liu+25
        Flow-GRPO]. Score-action policies (equal λ): ‖ε_θ − ε_ref‖² / (2λ²). Differentiable in θ.

        Args:
            recorded: use the kernels recorded at rollout for θ instead of recomputing them (only
                the reference runs; valid when ``traj`` was sampled with the current weights,
                e.g. for logging; transition policies only).
        """
        if steps is None:
            return _scatter(traj, _any_steps(traj.random_steps),
                            lambda ks: self.kl(ref, traj, ks, recorded, fold))
        ks = list(steps)
        if self.exploration > 0:
            a = self.step_preds(traj, ks, fold=fold)
            b = ref.step_preds(traj, ks, fold=fold)
            d = torch.stack([(to_eps(p, self.kind, traj.xs[:, k], traj.ts[k], self.sde) -
                              to_eps(q, ref.kind, traj.xs[:, k], traj.ts[k], ref.sde))
                             for p, q, k in zip(a, b, ks)], 1)
            return d.float().pow(2).flatten(2).sum(2) / (2 * self.exploration**2)
        if recorded:
            mine = [(traj.means[:, k], traj.stds[:, k]) for k in ks]
        else:
            mine = self.kernels(traj, ks, fold=fold)
        theirs = ref.kernels(traj, ks, fold=fold)
        out = []
        for (m1, s1), (m2, s2) in zip(mine, theirs):
            if not torch.equal(s1, s2) or bool((s1 == 0).any()):
                raise ValueError("per-step KL needs equal, positive kernel stds (same sampler)")
            diff = (m1.float() - m2.float()).flatten(1)
            out.append(diff.pow(2).sum(1) / (2 * s1.float() ** 2))
        return torch.stack(out, 1)

    def eps_mse(self, ref: "Policy", traj: Trajectory, steps: Sequence[int] | None = None,
                fold: bool = False) -> Tensor:
        r"""DPOK's KL regularizer: mean over dimensions of (ε_θ − ε_ref)² (guided) per step,
        ``[B, S]`` (0 at non-random steps for ``steps=None``). Differentiable in θ.

        google-research/dpok ``pipeline_stable_diffusion_extended.py::forward_calculate_logprob``
        (``kl_regularizer = (noise_pred − old_noise_pred)**2``, ``.mean()`` in
        ``train_online_pg.py``). The exact per-step Gaussian KL is w_k · eps_mse_k with
        w_k = D c_k² / (2σ_k²), c_k = ∂μ_k/∂ε̂ (:meth:`kl`); eps_mse drops the w_k.
        """
        if steps is None:
            return _scatter(traj, _any_steps(traj.random_steps),
                            lambda ks: self.eps_mse(ref, traj, ks, fold))
        ks = list(steps)
        a, b = self.step_preds(traj, ks, fold=fold), ref.step_preds(traj, ks, fold=fold)
        d = [to_eps(p, self.kind, traj.xs[:, k], traj.ts[k], self.sde).float() -
             to_eps(q, ref.kind, traj.xs[:, k], traj.ts[k], ref.sde).float()
             for p, q, k in zip(a, b, ks)]
        return torch.stack([x.pow(2).flatten(1).mean(1) for x in d], 1)

    def path_kl_rate(self, ref: "Policy", traj: Trajectory, steps: Sequence[int] | None = None
                     ) -> Tensor:
        r"""Integrand of the path-space KL, ½ g(t_k)² ‖s_θ(x_k, t_k) − s_ref(x_k, t_k)‖², [B, S].

        KL(P^θ ‖ P^ref) = E ∫ ½ g(t)² ‖s_θ − s_ref‖² dt for the η = 1 reverse SDE (Girsanov)
        [Zhao+25 Score as Action; papers.md §4]. Solver-independent: it needs only the scores at
        the visited states; Σ_k Δt_k · rate_k is its Riemann sum (:meth:`path_kl`).
        """
        ks = list(range(traj.num_steps)) if steps is None else list(steps)
        a, b = self.step_preds(traj, ks), ref.step_preds(traj, ks)
        rates = []
        for p, q, k in zip(a, b, ks):
            x, t = traj.xs[:, k], traj.ts[k].expand(traj.batch_size)
            ds = to_score(p.double(), self.kind, x.double(), t, self.sde) - \
                to_score(q.double(), ref.kind, x.double(), t, ref.sde)
            g2 = bcast(self.sde.diffusion(t).to(x.device) ** 2, ds)
            rates.append((0.5 * g2 * ds.pow(2)).flatten(1).sum(1))
        return torch.stack(rates, 1).float()

    def path_kl(self, ref: "Policy", traj: Trajectory) -> Tensor:
        """Left-point Riemann sum Σ_k Δt_k · ½ g(t_k)² ‖s_θ − s_ref‖² per row, ``[B]``."""
        rate = self.path_kl_rate(ref, traj)
        return (rate.double() * traj.dt.to(rate.device)).sum(1).float()


def _any_steps(mask: Tensor) -> list[int]:
    """Indices of the steps that are set for at least one row of a ``[B, S]`` mask."""
    return mask.any(0).nonzero().flatten().tolist()


def _scatter(traj: Trajectory, ks: list[int], fn: Callable[[list[int]], Tensor]) -> Tensor:
    """``[B, S]`` fp32 with ``fn(ks)`` ``[B, len(ks)]`` at columns ``ks`` and 0 elsewhere."""
    out = torch.zeros(traj.batch_size, traj.num_steps, device=traj.xs.device)
    if not ks:
        return out
    vals = fn(ks)
    out = out.to(vals.dtype)
    return out.index_copy(1, torch.tensor(ks, device=out.device), vals)


__all__ = ["Action", "Policy", "PolicyConfig", "Trajectory"]
