"""The one RL fine-tuning loop: rollout → reward → advantages → inner epochs → log → checkpoint.

Every algorithm is a registry entry (``rl.losses.RL_LOSSES`` + ``rl.advantages.ADVANTAGES``),
never a subclass. Each epoch draws P prompts and K rollouts per prompt (B = P·K rows); row i's seed is
derived from (run seed, epoch, i), so a row's trajectory does not depend on how the batch is split
across processes or chunks. accelerate places the model on CPU, a GPU or several processes: each
process rolls out and trains the rows i ≡ rank (mod world); rewards are gathered so advantages
(LOO/GRPO groups, DDPO's per-prompt statistics) are computed on the global batch; losses are batch
means, so DDP's gradient average equals the single-process gradient at the same global batch.

An estimator with property ``needs_values`` (``value``, DPOK's baseline) gets V_φ(x_t, t, c) of
every (row, step) from the run's :class:`~scorealign.rl.value.ValueBaseline`, computed under
no_grad before the update; V_φ is then regressed on the epoch's (gathered) rewards, so the
advantages A_{b,t} = r_b − V_φ(x_t^b, t, c_b) always use the pre-update V_φ.

What differs between methods is the update kind (log-prob surrogate, reward backprop,
DiffusionNFT), a strategy chosen once from the loss's registry entry (``rl.update_kinds``) over a
small frozen :class:`~scorealign.rl.context.UpdateContext`; the trainer never branches on the
method's name. The epoch loop is :func:`scorealign.run.loop.run_steps` (unit ``epoch``).

Exact resume: a checkpoint (atomic, ``run.checkpoint``) holds the trainable weights, optimizer,
EMA, advantage-estimator state and the value network with its optimizer; everything random derives from (seed, epoch, ...), so a resumed
run continues bit-for-bit. A reward returning NaN/inf or a wrong shape raises ``RewardError``
before any update of that epoch; checkpoints already written are untouched.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from accelerate import Accelerator

from scorealign.config import FieldError
from scorealign.nets.per_sample_grads import PerSampleGradsUnsupported, PerSampleLinearGrads
from scorealign.rewards.compose import build_reward_set
from scorealign.rl.advantages import ADVANTAGES, build_advantage
from scorealign.rl.config import FinetuneConfig
from scorealign.rl.context import UpdateContext
from scorealign.rl.losses import RL_LOSSES, split_signature
from scorealign.rl.setup import Setup, build_setup
from scorealign.rl.update_kinds import UpdateKind, build_update
from scorealign.rl.updates import cat_trajectories, policy_loss
from scorealign.rl.value import ValueBaseline, x0_rewards
from scorealign.rng import derive_seed, generator
from scorealign.run.loop import Cadence, resume_states, run_steps
from scorealign.run.memory import peak_gb
from scorealign.run.rundir import RunDir
from scorealign.train.pretrain import make_accelerator

def epoch_rows(cfg: FinetuneConfig, prompts: list[str], epoch: int
               ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The global batch of ``epoch``: P prompts (drawn with replacement), K rows each.

    Returns:
        (P prompts, ``[P·K]`` group ids, ``[P·K]`` row seeds).
    """
    p, k, seed = cfg.prompts.per_epoch, cfg.prompts.k, cfg.train.seed
    idx = torch.randint(len(prompts), (p,), generator=generator(seed, "prompts", epoch))
    chosen = [prompts[int(i)] for i in idx]
    ids = torch.arange(p).repeat_interleave(k)
    seeds = torch.tensor([derive_seed(seed, "row", epoch, i) for i in range(p * k)])
    return chosen, ids, seeds


class Finetuner:
    """State of one fine-tuning run (model, optimizer, EMA, estimator, accelerator)."""

    def __init__(self, cfg: FinetuneConfig, run: RunDir | None, setup: Setup | None = None,
                 accelerator: Accelerator | None = None):
        self.cfg, self.run = cfg, run
        self.acc = accelerator or make_accelerator(cfg.device)
        self.levers = cfg.levers(self.acc.num_processes)  # train.mode + explicit levers
        self.setup = setup or build_setup(cfg)
        params = [p for p in self.setup.model.parameters() if p.requires_grad]
        t = cfg.train
        self.opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        adv = cfg.algo.advantage_name()
        self.estimator = build_advantage(adv, **cfg.algo.advantage_kwargs) if adv else None
        self.value = None
        if self.estimator is not None and "needs_values" in self.estimator.entry.properties:
            v = cfg.algo.value
            self.value = ValueBaseline(v.hidden, v.lr, v.steps_per_epoch, self.setup.shape,
                                       self.setup.prompts, t.seed, self.acc.device)
        self.entry = RL_LOSSES.get(cfg.algo.loss)
        self.data_args, hyper = split_signature(self.entry.fn)
        unknown = set(cfg.algo.loss_kwargs) - set(hyper)
        if unknown:
            raise ValueError(f"algo.loss_kwargs: unknown {sorted(unknown)} for loss "
                             f"{cfg.algo.loss!r}; valid: {sorted(hyper)}")
        self.ema = self.setup.trainable_state() if t.ema_decay > 0 else {}
        self.model, self.opt = self.acc.prepare(self.setup.model, self.opt)
        self.setup.ref.to(self.acc.device)
        if self.setup.place is not None:  # text encoder / VAE beside the model
            self.setup.place(self.acc.device)
        self.policy = self.setup.policy(cfg, self.model)
        self.ref_policy = self.setup.policy(cfg, self.setup.ref)
        # a testbed setup brings its problem's reward (the reward section is not used)
        self.rewards = self.setup.rewards if self.setup.rewards is not None else \
            build_reward_set(cfg.reward.optimized, cfg.reward.gold, cfg.reward.clamp)
        self.epoch = 0
        # the update kind of the loss (rl/update_kinds.py), chosen once
        self.kind: UpdateKind = build_update(self.context())
        # DiffusionNFT's old (sampling) model, soft-updated after each epoch (flow_methods.py)
        self.old = getattr(self.kind, "old", None)
        x0_design = self.value is not None and cfg.algo.value.design == "x0"
        self.extra_queries_per_row = cfg.policy.steps if x0_design else 0
        self._gold_base: float | None = None   # the base's gold reward (gold_check)
        self._gold_said = False
        # train.rollout_backward: per-sample scores recorded in the rollout (or None)
        self.score_grads = self._score_recorder()
        self._scores: list[tuple[int, list]] | None = None  # this epoch's, per rollout chunk

    def _score_recorder(self) -> PerSampleLinearGrads | None:
        """The per-sample gradient recorder of ``train.rollout_backward`` (None: off). The
        config allowed it; here the model must be adapters only (nets/per_sample_grads.py), the
        update kind the log-prob surrogate on the trained policy's own rollouts, no fp16 loss
        scaling, and (when the lever is ``auto``) the gradients no larger than the model's
        weights in bytes. An explicit ``true`` that cannot run raises."""
        want = self.levers.rollout_backward
        if not want:
            return None
        why, rec = None, None
        model = self.acc.unwrap_model(self.model)
        if self.kind.sampling_policy(self.context()) is not self.policy or \
                not self.kind.uses_advantages:
            why = "the update kind does not train on the policy's own rollout log-probs"
        elif getattr(self.acc, "scaler", None) is not None:
            why = "fp16 loss scaling (mixed_precision fp16) scales the backward"
        else:
            try:
                rec = PerSampleLinearGrads(model)
            except PerSampleGradsUnsupported as e:
                why = str(e)
        if rec is not None and want == "auto":
            c = self.cfg
            store = rec.store_bytes(c.prompts.per_epoch * c.prompts.k, c.policy.steps)
            weights = sum(p.numel() * p.element_size() for p in model.parameters())
            if store > weights:
                why = (f"per-sample gradients ({store / 2**20:.1f} MiB) larger than the model's "
                       f"weights ({weights / 2**20:.1f} MiB)")
        if why is None:
            return rec
        if want == "auto":
            return None
        raise FieldError("train.rollout_backward", why)

    @property
    def algo(self):
        """``cfg.algo`` (as :class:`~scorealign.rl.context.UpdateContext` names it)."""
        return self.cfg.algo

    def context(self) -> UpdateContext:
        """The frozen :class:`~scorealign.rl.context.UpdateContext` of the run's current state
        (built at the start of each epoch; the update kind and the loss helpers see only it)."""
        cfg, t = self.cfg, self.cfg.train
        return UpdateContext(
            policy=self.policy, ref_policy=self.ref_policy, model=self.model,
            ref_model=self.setup.ref, unwrap=self.acc.unwrap_model,
            make_policy=lambda m: self.setup.policy(cfg, m), entry=self.entry,
            data_args=self.data_args, algo=cfg.algo, rewards=self.rewards,
            decode=self.setup.decode,
            steps_per_epoch=t.inner_epochs * (cfg.prompts.per_epoch * cfg.prompts.k //
                                              t.minibatch_size))

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        st = {"model": self.setup.trainable_state(self.acc.unwrap_model(self.model)),
              "optimizer": self.opt.state_dict()}
        if self.ema:
            st["ema"] = self.ema
        if self.estimator is not None and self.estimator.state_dict():
            st["advantage"] = self.estimator.state_dict()
        if self.value is not None:
            st.update(self.value.state_dicts())
        st.update(self.kind.state())
        return st

    def resume(self) -> int:
        """Load the run's latest checkpoint; returns the epoch to continue from."""
        states, start = resume_states(self.run, True, unit="epoch")
        if states is None:
            return 0
        self.setup.load_trainable(states["model"])
        self.opt.load_state_dict(states["optimizer"])
        self.ema = {k: v.to(self.acc.device) for k, v in states.get("ema", {}).items()}
        if self.estimator is not None:
            self.estimator.load_state_dict(states.get("advantage", {}))
        if self.value is not None:
            self.value.load_state_dicts(states)
        self.kind.load(states)
        self.epoch = start
        return self.epoch

    # -- one epoch -----------------------------------------------------------------------------
    def sample_and_score(self, prompts: list[str], ids: torch.Tensor, seeds: torch.Tensor):
        """This process's rows: rollouts in chunks, rewards (optionally in a background thread)."""
        rank, world = self.acc.process_index, self.acc.num_processes
        rows = torch.arange(len(seeds))[rank::world]
        row_prompts = [prompts[int(ids[i])] for i in rows]
        chunk = self.cfg.train.sample_batch_size
        trajs, futures, scored = [], [], []
        pool = ThreadPoolExecutor(1, thread_name_prefix="reward") if self.cfg.reward.background \
            else None
        policy = self.kind.sampling_policy(self.context())
        self.model.eval()
        if self.levers.reuse_rollout_graph and world > 1:
            raise ValueError("train.reuse_rollout_graph needs one process (the update's rows "
                             "are other processes' rollouts)")
        rec = self.score_grads
        self._scores = None if rec is None else []
        try:
            for s in range(0, len(rows), chunk):
                r = rows[s:s + chunk]
                traj = policy.rollout(row_prompts[s:s + chunk], 1, seeds=seeds[r],
                                           prompt_ids=ids[r], device=self.acc.device,
                                           run_seed=self.cfg.train.seed, epoch=self.epoch,
                                           keep_graph=self.levers.reuse_rollout_graph,
                                           grads=rec)
                if rec is not None:  # this chunk's per-sample scores, by step
                    self._scores.append((len(r), [(k, {p: g[k] for p, g in rec.store.items()})
                                                  for k in rec.recorded]))
                images = self.setup.decode(traj.x0).detach()
                meta = {"epoch": self.epoch}
                if pool is not None:  # score this chunk while the next one samples
                    futures.append(pool.submit(self.rewards, images, list(traj.prompts), meta))
                else:
                    scored.append(self.rewards(images, traj.prompts, meta))
                trajs.append(traj)
            scored += [f.result() for f in futures]  # re-raises the reward's error, if any
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        return rows, cat_trajectories(trajs), scored

    def train_epoch(self) -> dict[str, float]:
        cfg, acc, t0 = self.cfg, self.acc, time.time()
        ctx = self.context()
        prompts, ids, seeds = epoch_rows(cfg, self.setup.prompts, self.epoch)
        rows, traj, scored = self.sample_and_score(prompts, ids, seeds)
        r_local = torch.cat([s.optimized for s in scored]).to(acc.device)
        gold = [s.gold for s in scored]
        g_local = torch.cat(gold).to(acc.device) if gold[0] is not None else None
        r_all = _gather_rows(acc, r_local, rows.to(acc.device), len(seeds))
        metrics = {"reward/mean": r_all.mean().item(), "reward/std": r_all.std(0).item(),
                   "queries/reward": float((self.epoch + 1) * len(seeds) *
                                           (1 + self.extra_queries_per_row))}
        if g_local is not None:
            metrics["reward/gold_mean"] = _gather_rows(acc, g_local, rows.to(acc.device),
                                                       len(seeds)).mean().item()
        if cfg.train.log_kl:
            with torch.no_grad():
                # θ's kernels were recorded (not with DiffusionNFT's old sampling model)
                on_policy = cfg.policy.exploration == 0 and \
                    self.kind.sampling_policy(ctx) is self.policy
                kl_steps = self.policy.kl(self.ref_policy, traj, recorded=on_policy)
            metrics.update(kl_metrics(acc.gather(kl_steps), traj.random_steps[0]))
        if not self.kind.uses_advantages:
            adv = None
        else:
            # an estimator keyed by prompt text (per-prompt statistics across epochs) gets the
            # rows' prompts, the others the rows' group ids
            by_prompt = "keyed_by_prompt" in ADVANTAGES.get(self.estimator.name).properties
            keys = [prompts[int(i)] for i in ids] if by_prompt else ids
            values = r_x0 = None
            if self.value is not None:  # V_φ(x_t, t, c) of every (row, step), pre-update φ
                local = self.value.predict(traj)
                if cfg.algo.value.design == "x0":  # V = r(x̂₀(x_t, t)) + c_φ(x_t, t, c)
                    rx = x0_rewards(self.policy, traj, self.setup.decode, self.rewards,
                                    {"epoch": self.epoch})
                    r_x0 = _gather_rows(acc, rx, rows.to(acc.device), len(seeds))
                    local = local + rx
                values = _gather_rows(acc, local, rows.to(acc.device), len(seeds))
                metrics["value/mean"] = values.mean().item()
            adv = self.estimator(r_all.cpu(), keys, values=None if values is None
                                 else values.cpu()).to(acc.device)
        if acc.num_processes > 1:  # every process holds the global batch for the updates
            traj = gather_trajectory(acc, traj, rows.to(acc.device), len(seeds),
                                     [prompts[int(i)] for i in ids], self.policy)
        if self.value is not None:  # identical data and steps on every process: same φ
            target = r_all if r_x0 is None else r_all[:, None] - r_x0
            metrics.update(self.value.fit(traj, target))
        metrics.update(self.update(traj, adv))
        metrics.update(self.kind.after_epoch(ctx, self.epoch))
        metrics["time/epoch_s"] = time.time() - t0
        metrics["mem/peak_gb"] = peak_gb(acc.device)  # run/memory.py: CUDA max alloc or peak RSS
        return metrics

    def update(self, traj, adv) -> dict[str, float]:
        """Inner epochs of minibatch steps with gradient accumulation; mean of loss metrics.

        ``traj`` and ``adv`` are the global batch in row order. Minibatches are slices of one
        global permutation; process r trains positions r, r + world, … of each, so the set of
        rows per optimizer step does not depend on the number of processes.
        """
        t, acc, uctx = self.cfg.train, self.acc, self.context()
        chunk, fold = self.levers.step_chunk, self.levers.fold_steps
        if traj.logp_graph is not None:
            return self._update_on_graph(traj, adv, uctx)
        if self._scores is not None:
            return self._update_from_scores(traj, adv, uctx)
        n, world = traj.batch_size, acc.num_processes
        mb = t.minibatch_size
        micro = mb // world // t.grad_accum
        sums: dict[str, float] = {}
        count = 0
        clip_later: list[float] = []
        evals, frac_mb0 = 0, 0.0
        self.model.train()
        for inner in range(t.inner_epochs):
            g = generator(t.seed, "perm", self.epoch, inner)
            perm = torch.randperm(n, generator=g) if t.shuffle else torch.arange(n)
            for s in range(0, n, mb):
                self.opt.zero_grad(set_to_none=True)
                batch = perm[s:s + mb][acc.process_index::world]
                frac = 0.0
                for j in range(0, len(batch), micro):
                    idx = batch[j:j + micro]
                    last = j + micro >= len(batch)
                    sub = traj.index(idx)
                    scale = len(idx) / len(batch)
                    if self.kind.chunked(chunk, fold):
                        def backward(loss, last_chunk, last=last, scale=scale):
                            ctx = nullcontext() if last and last_chunk else \
                                acc.no_sync(self.model)
                            with ctx:
                                acc.backward(loss * scale)
                        out = self.kind.chunked_loss(uctx, sub, adv[idx], chunk, fold,
                                                     backward)
                    else:
                        ctx = acc.no_sync(self.model) if not last else nullcontext()
                        with ctx:
                            out = self.kind.loss(uctx, sub, None if adv is None else adv[idx],
                                                 self.epoch)
                            acc.backward(out.loss * scale)
                    evals += self.kind.model_evals_grad(uctx, sub)
                    for k, v in out.metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * len(idx) / len(batch)
                    frac += float(out.metrics.get("policy/clipfrac", 0.0)) * len(idx) / len(batch)
                if inner == 0 and s == 0:
                    frac_mb0 = frac
                else:
                    clip_later.append(frac)
                if t.grad_clip > 0:
                    gn = acc.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                    sums["opt/grad_norm"] = sums.get("opt/grad_norm", 0.0) + float(gn)
                self.opt.step()
                self._update_ema()
                count += 1
        self.model.eval()
        out = {k: v / max(count, 1) for k, v in sums.items()}
        if self.kind.clip_metrics:
            out["clip/frac_mb0"] = frac_mb0
        if clip_later:
            out["clip/frac_later"] = sum(clip_later) / len(clip_later)
        out["cost/model_evals_grad"] = float(evals)
        return out

    def _update_on_graph(self, traj, adv, ctx: UpdateContext) -> dict[str, float]:
        """The one optimizer step of an on-policy epoch (``train.reuse_rollout_graph``; the
        fast mode's choice when on-policy): the loss on the rollout's log-probs with their
        graphs, one backward; the gradient equals the recomputing path's
        (tests/rl/test_speed_levers.py) without its training forward."""
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        out = policy_loss(ctx, traj, adv, logp=traj.logp_graph)
        self.acc.backward(out.loss)
        return self._on_policy_step(out, traj, ctx)

    def _update_from_scores(self, traj, adv, ctx: UpdateContext) -> dict[str, float]:
        """The one optimizer step of an on-policy epoch from the rollout's per-sample scores
        (``train.rollout_backward``). At the rollout's weights the loss depends on θ through
        the log-probs only (the config checks it), so by the chain rule

            ∇_θ L = Σ_{i,k} (∂L/∂ log π_{ik}) ∇_θ log π_θ(x_{k+1}^i | x_k^i),

        with ∂L/∂ log π from autograd on the loss as a function of the recorded log-probs (for
        PPO-clip at ratio 1: −A_i·mask_{ik}/n) and ∇_θ log π_{ik} the per-sample gradients the
        rollout recorded. Equals the recomputing path's gradient up to round-off
        (tests/rl/test_rollout_backward.py) with no training forward and no kept graph."""
        chunks, self._scores = self._scores, None
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        logp = traj.log_probs.detach().clone().requires_grad_(True)
        out = policy_loss(ctx, traj, adv, logp=logp)
        (w,) = torch.autograd.grad(out.loss, logp)
        for p, g in scores_gradient(chunks, w).items():
            p.grad = g.to(p.dtype)
        return self._on_policy_step(out, traj, ctx)

    def _on_policy_step(self, out, traj, ctx: UpdateContext) -> dict[str, float]:
        """Clip, step, EMA and the metrics of an on-policy epoch's one update."""
        t, acc = self.cfg.train, self.acc
        metrics = {k: float(v) for k, v in out.metrics.items()}
        if t.grad_clip > 0:
            metrics["opt/grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(),
                                                                 t.grad_clip))
        self.opt.step()
        self._update_ema()
        self.model.eval()
        metrics["clip/frac_mb0"] = float(out.metrics.get("policy/clipfrac", 0.0))
        metrics["cost/model_evals_grad"] = float(self.kind.model_evals_grad(ctx, traj))
        return metrics

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not self.ema:
            return
        d = self.cfg.train.ema_decay
        for k, p in self.acc.unwrap_model(self.model).named_parameters():
            if k in self.ema:
                self.ema[k].mul_(d).add_(p.detach(), alpha=1 - d)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Run the remaining epochs through :func:`~scorealign.run.loop.run_steps`; returns the
        last epoch's metrics. Each epoch is logged; checkpoints every ``train.ckpt_every`` epochs
        and at the end, each followed by the epoch's sample grid; every process waits for the
        others after each epoch."""
        t = self.cfg.train

        def step(i: int) -> dict[str, float]:
            self.epoch = i
            metrics = self.train_epoch()
            self.epoch = i + 1
            return metrics

        last = run_steps(run=self.run, acc=self.acc, start=self.epoch, step=step,
                         cadence=Cadence(t.epochs, log_every=1, ckpt_every=t.ckpt_every,
                                         keep=t.keep_checkpoints, unit="epoch"),
                         states=self.state, label="finetune",
                         bar_field=lambda m: {"reward": m["reward/mean"]},
                         after_checkpoint=lambda _: self.save_epoch_grid(),
                         sync_every_step=True, on_log=self.gold_check)
        return dict(last)

    def gold_check(self, epoch: int, metrics: dict[str, float]) -> dict[str, float]:
        """The epoch's row with ``alarm/gold`` (1.0 when its gold reward fell more than the
        margin below the base's, :func:`scorealign.report.gold.gold_fell`); says so on the
        terminal, in words the first time and in one line after."""
        from scorealign.report.gold import ALARM_KEY, GOLD_KEY, GoldAlarm, base_gold, gold_fell
        gold = metrics.get(GOLD_KEY)
        if gold is None:
            return metrics
        gold = float(f"{gold:.6g}")  # as metrics.jsonl holds it: the report decides alike
        if self._gold_base is None:  # the first epoch's (rollouts of the base weights)
            logged = self.run.read_metrics() if self.run is not None else []
            self._gold_base = base_gold(logged) if base_gold(logged) is not None else gold
            self._gold_said = any(r.get(ALARM_KEY) for r in logged)
        raised = gold_fell(gold, self._gold_base)
        if raised:
            alarm = GoldAlarm(f"epoch {epoch}", gold, self._gold_base)
            self.acc.print(alarm.short() if self._gold_said else
                           alarm.sentence(_reward_name(self.cfg.reward.gold)))
            self._gold_said = True
        return {**metrics, ALARM_KEY: float(raised)}

    @torch.no_grad()
    def save_epoch_grid(self, per_prompt: int | None = None) -> None:
        """``samples/epoch_NNNN.png``: fixed-seed samples of the current weights (the report shows
        them between the before and after grids). Uses the unwrapped model on this process only
        and explicit seeds, so no random state of the run changes (exact resume holds)."""
        per_prompt = per_prompt or self.setup.figure_rows or 4
        prompts = self.setup.prompts[:10]
        # the seeds of the first ``per_prompt`` columns of the before/after grids (8 per prompt)
        seeds = (torch.arange(len(prompts))[:, None] * 8 + torch.arange(per_prompt)).flatten() \
            + 10_000
        policy = self.setup.policy(self.cfg, self.acc.unwrap_model(self.model))
        traj = policy.rollout(prompts, per_prompt, seeds=seeds, device=self.acc.device)
        images = self.setup.decode(traj.x0).float().cpu()
        grid = self.run.samples / f"epoch_{self.epoch:04d}.png"
        self.setup.save_samples(images, grid, per_prompt)
        if self.setup.save_figure is None:  # an image grid: its rows are the prompts
            from scorealign.report.figures import save_grid_rows
            save_grid_rows(grid, prompts)


def scores_gradient(chunks: list[tuple[int, list]], w: torch.Tensor
                    ) -> dict[torch.Tensor, torch.Tensor]:
    """Σ_{i,k} w_{ik} ∇_θ log π_{ik} per parameter (fp32): ``chunks`` are the rollout chunks'
    ``(rows, [(step k, {param: [rows, *shape]})])`` in row order, ``w`` the ``[B, S]`` weights
    ∂L/∂ log π (:meth:`Finetuner._update_from_scores`)."""
    total: dict[torch.Tensor, torch.Tensor] = {}
    start = 0
    for n, steps in chunks:
        for k, per_sample in steps:
            wk = w[start:start + n, k].float()
            for p, g in per_sample.items():
                part = torch.tensordot(wk.to(g.device), g, dims=1)
                total[p] = part if p not in total else total[p] + part
        start += n
    if start != w.shape[0]:
        raise ValueError(f"the recorded scores cover {start} rows, the update {w.shape[0]}")
    return total


def _reward_name(spec: Any) -> str | None:
    """The registered name of a reward spec (``name`` or ``{name: ...}``)."""
    return spec.get("name") if isinstance(spec, dict) else spec if isinstance(spec, str) else None


def kl_metrics(kl_steps: torch.Tensor, random_steps: torch.Tensor) -> dict[str, float]:
    """``kl/base`` (batch mean of Σ_k KL_k over the random steps), ``kl/step/{k:02d}`` for each
    random step k on the grid, and ``kl/max_step_share`` = max_k KL_k / Σ_k KL_k (0 when 0)."""
    per_step = kl_steps.double().mean(0)
    total = float(per_step.sum())
    out = {"kl/base": total}
    for k in random_steps.nonzero().flatten().tolist():
        out[f"kl/step/{k:02d}"] = float(per_step[k])
    out["kl/max_step_share"] = float(per_step.max()) / total if total > 0 else 0.0
    return out


def _gather_rows(acc: Accelerator, values: torch.Tensor, rows: torch.Tensor, n: int
                 ) -> torch.Tensor:
    """Values of every process's rows, put back in global row order ``[n]``."""
    v, r = (values, rows) if acc.num_processes == 1 else (acc.gather(values), acc.gather(rows))
    out = torch.empty((n, *values.shape[1:]), dtype=values.dtype, device=values.device)
    out[r] = v
    return out


def gather_trajectory(acc: Accelerator, traj, rows: torch.Tensor, n: int, prompts: list[str],
                      policy) -> "Trajectory":
    """The global batch's trajectory on every process (tensors gathered, cond re-encoded)."""
    from dataclasses import fields

    from scorealign.policy.trajectory import Trajectory
    out = {}
    for f in fields(traj):
        v = getattr(traj, f.name)
        if isinstance(v, torch.Tensor) and f.name != "ts":
            out[f.name] = _gather_rows(acc, v.to(acc.device), rows, n)
    cond = policy.cond_for(prompts)
    return Trajectory(**out, ts=traj.ts, prompts=prompts,
                      cond=cond.to(acc.device) if cond is not None else None)


def finetune(cfg: FinetuneConfig, run: RunDir | None, resume: bool = False) -> Finetuner:
    """Build a :class:`Finetuner`, resume it if asked, and run it to ``cfg.train.epochs``;
    returns it (trained weights in ``ft.setup``; the ``finetune`` command exports them)."""
    ft = Finetuner(cfg, run)
    if resume:
        start = ft.resume()
        ft.acc.print(f"resuming {run.path} from epoch {start}")
    ft.fit()
    return ft
