"""A diffusion sampler bound to a model is a policy: rollout, exact log-probs, KL to a reference.

``Policy(model, sde, kind=…, sampler=…)`` runs :func:`scorealign.samplers.sample` (the library's
only sampling loop) with per-row noise and records a :class:`Trajectory`. Two kinds of policy
randomness are supported:

* **transition** (``exploration = 0``, a stochastic sampler): the random choice of step k is
  x_{k+1} ~ N(μ_θ(x_k, t_k), σ_k² I), the sampler's own Gaussian kernel; its log-density is the
  DDPO/LOOP/GRPO log-prob [Black+23 DDPO, §4.2; papers.md §5].
* **score action** (``exploration = λ > 0``, any solver, even a deterministic one): at each grid
  time the policy draws an action ε_a ~ N(ε_θ(x_k, t_k), λ² I) in ε-space (equivalently a score
  a = −ε_a / s(t_k) ~ N(s_θ, (λ/s(t_k))² I)) and the solver integrates with it; its log-density is
  the exploratory policy π_θ(a | t, x) of Score as Action [Zhao+25, arXiv:2502.01819, §3; papers.md
  §4]. The density ratio does not depend on the solver or the step size.

``log_prob(traj)`` recomputes whichever density the policy samples with under the current weights,
step by step with the same arithmetic as the rollout: on the rows and weights of the rollout it
reproduces ``traj.log_probs`` bit for bit. ``kl`` gives the per-step Gaussian KL to a reference
policy and ``path_kl_rate`` the integrand ½ g(t)² ‖s_θ − s_ref‖² of the path-space (Girsanov) KL.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from scorealign.nets.cond import guided
from scorealign.policy.trajectory import Trajectory
from scorealign.rng import randn_per_sample
from scorealign.samplers import SAMPLERS, gaussian_log_prob, sample
from scorealign.samplers.loop import _is_stochastic
from scorealign.samplers.steps import model_time
from scorealign.sde.base import SDE, bcast
from scorealign.sde.param import convert, to_eps, to_score

Model = Callable[[Tensor, Tensor, Any], Tensor]


class Policy:
    """Model + SDE + sampler: the score-as-action policy.

    Args:
        model: ``model(x, t, cond) -> prediction`` of ``kind``.
        sde: the forward SDE.
        kind: "eps", "x0", "score" or "v".
        shape: the shape of one sample (e.g. ``(1, 8, 8)``).
        sampler: a name in ``SAMPLERS``.
        steps: solver steps S.
        eta: the sampler's η (None: its default).
        grid: a time-grid name.
        guidance: classifier-free guidance scale (1: none; needs a ``Cond``).
        exploration: λ, std of the ε-space action noise (0: transition log-probs).
        encode: ``prompts -> cond`` (None: unconditional).
    """

    def __init__(self, model: Model, sde: SDE, *, kind: str, shape: Sequence[int],
                 sampler: str = "ddim", steps: int = 20, eta: float | None = 1.0,
                 grid: str = "uniform", guidance: float = 1.0, exploration: float = 0.0,
                 encode: Callable[[list[str]], Any] | None = None):
        SAMPLERS.get(sampler)
        if exploration < 0:
            raise ValueError(f"exploration must be ≥ 0, got {exploration}")
        if exploration == 0 and not _is_stochastic(sampler, eta):
            raise ValueError(f"sampler {sampler!r} with eta={eta} is deterministic: it has no "
                             f"step log-probs; use a stochastic sampler or exploration > 0")
        self.model, self.sde, self.kind, self.shape = model, sde, kind, tuple(shape)
        self.sampler, self.steps, self.eta, self.grid = sampler, steps, eta, grid
        self.guidance, self.exploration, self.encode = guidance, exploration, encode

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

    @torch.no_grad()
    def rollout(self, prompts: Sequence[str], k: int = 1, *, seeds: Tensor,
                prompt_ids: Tensor | None = None, device: torch.device | str = "cpu"
                ) -> Trajectory:
        """K trajectories per prompt, rows ``[p0]*K + [p1]*K + …``.

        Args:
            prompts: P prompts.
            k: rollouts per prompt K.
            seeds: ``[P·K]`` int64 per-row seeds (all of a row's randomness derives from it).
            prompt_ids: ``[P·K]`` group ids (default: the prompt's position, repeated K times).
            device: where the model runs.
        Returns:
            Trajectory with ``log_probs`` of the policy's random choices (see module docstring).
        """
        rows = [p for p in prompts for _ in range(k)]
        if seeds.shape != (len(rows),):
            raise ValueError(f"seeds must be [{len(rows)}] (P·K), got {tuple(seeds.shape)}")
        ids = torch.arange(len(prompts)).repeat_interleave(k) if prompt_ids is None else prompt_ids
        cond = self.cond_for(rows)
        cond = cond.to(device) if cond is not None else None
        x_T, noise, act_noise = self._noise(seeds, device)
        base, lam = self.pred_fn(cond), self.exploration
        state = {"k": 0, "first": True}
        actions: list[Tensor] = []
        eps_model: list[Tensor] = []

        def explore(x: Tensor, t: Tensor) -> Tensor:
            pred = base(x, t)
            if lam == 0 or not state["first"]:  # Heun's 2nd evaluation: the model's own output
                return pred
            state["first"] = False
            eps = to_eps(pred, self.kind, x, t, self.sde)
            a = eps + lam * act_noise[:, state["k"]]
            actions.append(a)
            eps_model.append(eps)
            return convert(a, "eps", self.kind, x, t, self.sde)

        def advance(i: int, t: Tensor, x: Tensor) -> None:
            state["k"], state["first"] = i + 1, True

        out = sample(explore, self.kind, self.sde, x_T, sampler=self.sampler, steps=self.steps,
                     eta=self.eta, grid=self.grid, noise=noise, record=True, callback=advance)
        traj = Trajectory(xs=out.xs, ts=out.ts, means=out.means, stds=out.stds,
                          log_probs=out.log_probs, prompts=rows, prompt_ids=ids.to(torch.int64),
                          seeds=seeds.to(torch.int64), cond=cond)
        if lam == 0:
            return traj
        acts = torch.stack(actions, 1)
        lp = self._action_log_prob(acts, torch.stack(eps_model, 1))
        return Trajectory(**{**traj.__dict__, "actions": acts, "log_probs": lp,
                             "action_log_probs": lp})

    def _action_log_prob(self, actions: Tensor, eps: Tensor) -> Tensor:
        """log N(actions; eps, λ² I) per step, ``[B, S]`` fp32 (summed over dimensions)."""
        b, s = actions.shape[:2]
        std = torch.full((b * s,), self.exploration, dtype=torch.float32, device=actions.device)
        return gaussian_log_prob(actions.flatten(0, 1), eps.flatten(0, 1), std).view(b, s)

    # -- recomputation -----------------------------------------------------------------------
    def step_preds(self, traj: Trajectory, steps: Sequence[int] | None = None,
                   model: Model | None = None) -> list[Tensor]:
        """The (guided) prediction at (xs[:, k], t_k) for each step k, with grad if enabled."""
        fn = self.pred_fn(traj.cond, model)
        ks = range(traj.num_steps) if steps is None else steps
        out = []
        for k in ks:
            x = traj.xs[:, k]
            out.append(fn(x, model_time(traj.ts[k].expand(x.shape[0]), x)))
        return out

    def log_prob(self, traj: Trajectory, steps: Sequence[int] | None = None,
                 model: Model | None = None) -> Tensor:
        """Log-densities ``[B, len(steps)]`` of the recorded random choices under current weights.

        Transition policies: log N(x_{k+1}; μ_θ(x_k, t_k), σ_k² I) from the sampler's step
        kernel (DDIM Eq. 12/16 for ``ddim``) [Black+23 DDPO, §4.2]. Score-action policies:
        log N(ε_a,k; ε_θ(x_k, t_k), λ² I) [Zhao+25 Score as Action, §3]. fp32, summed over dims.
        """
        ks = list(range(traj.num_steps)) if steps is None else list(steps)
        if self.exploration > 0:
            if traj.actions is None:
                raise ValueError("this policy explores in action space but the trajectory has "
                                 "no recorded actions")
            preds = self.step_preds(traj, ks, model)
            # the rollout converted with the model's (fp32) time: same arithmetic, same bits
            eps = torch.stack([to_eps(p, self.kind, traj.xs[:, k], model_time(traj.ts[k].expand(
                traj.batch_size), traj.xs[:, k]), self.sde) for p, k in zip(preds, ks)], 1)
            return self._action_log_prob(traj.actions[:, ks], eps)
        return torch.stack([gaussian_log_prob(traj.xs[:, k + 1], m, s) for k, (m, s) in
                            zip(ks, self.kernels(traj, ks, model))], 1)

    def kernels(self, traj: Trajectory, steps: Sequence[int], model: Model | None = None
                ) -> list[tuple[Tensor, Tensor]]:
        """(mean, std) of each step's Gaussian kernel at the recorded states (transition policy)."""
        fn_step = SAMPLERS.get(self.sampler).fn
        fn = self.pred_fn(traj.cond, model)
        kw = {} if self.eta is None else {"eta": self.eta}
        out = []
        for k in steps:
            x = traj.xs[:, k]
            t, tn = traj.ts[k].expand(x.shape[0]), traj.ts[k + 1].expand(x.shape[0])
            st = fn_step(x, fn(x, model_time(t, x)), self.kind, t, tn, self.sde, noise=None,
                         pred_fn=fn, **kw)
            out.append((st.mean, st.std))
        return out

    # -- divergences to a reference ----------------------------------------------------------
    def kl(self, ref: "Policy", traj: Trajectory, steps: Sequence[int] | None = None,
           recorded: bool = False) -> Tensor:
        r"""Per-step KL(p_θ(·|x_k) ‖ p_ref(·|x_k)) ``[B, S]`` at the recorded states.

        Transition policies (equal σ_k): ‖μ_θ − μ_ref‖² / (2σ_k²)  [Fan+23 DPOK; Liu+25
        Flow-GRPO]. Score-action policies (equal λ): ‖ε_θ − ε_ref‖² / (2λ²). Differentiable in θ.

        Args:
            recorded: use the kernels recorded at rollout for θ instead of recomputing them (only
                the reference runs; valid when ``traj`` was sampled with the current weights,
                e.g. for logging; transition policies only).
        """
        ks = list(range(traj.num_steps)) if steps is None else list(steps)
        if self.exploration > 0:
            a = self.step_preds(traj, ks)
            b = ref.step_preds(traj, ks)
            d = torch.stack([(to_eps(p, self.kind, traj.xs[:, k], traj.ts[k], self.sde) -
                              to_eps(q, ref.kind, traj.xs[:, k], traj.ts[k], ref.sde))
                             for p, q, k in zip(a, b, ks)], 1)
            return d.float().pow(2).flatten(2).sum(2) / (2 * self.exploration**2)
        if recorded:
            mine = [(traj.means[:, k], traj.stds[:, k]) for k in ks]
        else:
            mine = self.kernels(traj, ks)
        theirs = ref.kernels(traj, ks)
        out = []
        for (m1, s1), (m2, s2) in zip(mine, theirs):
            if not torch.equal(s1, s2) or bool((s1 == 0).any()):
                raise ValueError("per-step KL needs equal, positive kernel stds (same sampler)")
            diff = (m1.float() - m2.float()).flatten(1)
            out.append(diff.pow(2).sum(1) / (2 * s1.float() ** 2))
        return torch.stack(out, 1)

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


__all__ = ["Policy", "Trajectory"]
