"""The preference-optimization loop: batch → log-probs → objective → step → log → checkpoint.

One loop for every objective (DPO family, SimPO, ORPO, RainbowPO, Mallows, KTO), on accelerate.
With several processes (``accelerate launch`` / ``torchrun``) each takes its slice of the same
global micro-batch, gradients are averaged by DDP, and only the main process logs, evaluates and
checkpoints; the run then matches one process at the same global batch.
Exact resume: the data order is a function of (seed, epoch), the learning rate a function of the
step, dropout is off, and checkpoints hold model and optimizer state; a run stopped after k steps
and resumed to N ends with the same weights, bit for bit (CPU fp32), as an uninterrupted run.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from scorealign.preference import setup as S
from scorealign.preference.logratio import concatenated_logps, pair_entropy
from scorealign.preference.losses import PairLogps, kto_reference_point
from scorealign.preference.mallows import auto_dispersion_scale
from scorealign.rng import generator
from scorealign.run.loop import Cadence, LogWindow, mean_over_processes, resume_states, run_steps
from scorealign.run.loop import lr_at as schedule_lr
from scorealign.run.memory import peak_gb
from scorealign.run.rundir import RunDir


def batch_indices(n: int, seed: int, step: int, micro: int, grad_accum: int, bs: int) -> list[int]:
    """Dataset positions of micro-batch ``micro`` of optimizer step ``step``.

    The stream is epoch after epoch of a permutation drawn from generator(seed, "data", epoch),
    so it depends only on (seed, step) and resumes exactly.
    """
    start = (step * grad_accum + micro) * bs
    out = []
    for pos in range(start, start + bs):
        epoch, i = divmod(pos, n)
        out.append(int(_perm(n, seed, epoch)[i]))
    return out


_PERMS: dict[tuple[int, int, int], torch.Tensor] = {}


def _perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = (n, seed, epoch)
    if key not in _PERMS:
        _PERMS.clear()
        _PERMS[key] = torch.randperm(n, generator=generator(seed, "data", epoch))
    return _PERMS[key]


def lr_at(step: int, t: Any) -> float:
    """Linear warmup to ``t.lr``, then constant or linear decay to 0 at ``t.steps``
    (:func:`scorealign.run.loop.lr_at`)."""
    return schedule_lr(step, t.lr, t.steps, t.warmup_steps, t.decay)


def paired_step(model, batch, reference, objective) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and metrics of one paired micro-batch (chosen rows, then rejected rows)."""
    pol_w, pol_l = concatenated_logps(model, batch)
    ref = reference(batch)
    lp = PairLogps(pol_w.logp, pol_l.logp, pol_w.n_tokens, pol_l.n_tokens,
                   ref[0].logp if ref else None, ref[1].logp if ref else None,
                   pair_entropy(*ref) if ref else None)
    out = objective(lp)
    margin = out.reward_w - out.reward_l
    return out.losses.mean(), {
        "rewards/chosen": out.reward_w.mean(), "rewards/rejected": out.reward_l.mean(),
        "rewards/accuracy": (margin > 0).float().mean(), "rewards/margin": margin.mean(),
        "logps/chosen": pol_w.logp.detach().mean(), "logps/rejected": pol_l.logp.detach().mean()}


def unpaired_step(model, batch, reference, objective, gather=None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and metrics of one KTO micro-batch (matched rows, then mismatched rows).

    ``gather`` (``accelerator.gather`` with several processes) makes z₀ the global-batch estimate.
    """
    pol, pol_mis = concatenated_logps(model, batch)
    ref, ref_mis = reference(batch)
    z0 = kto_reference_point(pol_mis.logp.detach(), ref_mis.logp, gather)
    losses, rewards = objective.fn(pol.logp, ref.logp, batch["label"], z0=z0, **objective.params)
    d = batch["label"]
    mean = lambda x, m: x[m].mean() if bool(m.any()) else torch.zeros(())  # noqa: E731
    return losses.mean(), {"rewards/chosen": mean(rewards, d), "rewards/rejected": mean(rewards, ~d),
                           "kl": z0, "logps/completion": pol.logp.detach().mean()}


def train(cfg: Any, run: RunDir, *, resume: bool = False,
          export_final: bool = True) -> dict[str, Any]:
    """Run (or continue) preference optimization; returns the last logged metrics and evals,
    with the trained ``model`` (unwrapped) and its ``tokenizer``.

    Trainers never export: the ``dpo`` command writes ``RUN/final`` and report.html
    (``export_final`` is ignored, kept for callers that pass it).
    """
    from accelerate import Accelerator

    t = cfg.train
    accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=t.mixed_precision)
    objective = cfg.loss.resolved()
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    with accelerator.main_process_first():  # the main process writes the demo and reference caches
        setup = S.build(cfg, run.path)
        model = setup.model.to(accelerator.device)
        reference = S.build_reference(cfg, setup, run.path, accelerator.device,
                                      objective.needs_entropy)
    summary: dict[str, Any] = {}
    if objective.auto_dispersion:  # λ with mean c(x) = 1 over the reference cache (all processes)
        lam = auto_dispersion_scale(S.reference_entropies(setup, reference, accelerator.device))
        objective = objective.bind(dispersion_scale=lam)
        summary["dispersion_scale"] = lam
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    states, start = resume_states(run, resume, accelerator)
    if states is not None:
        accelerator.unwrap_model(model).load_state_dict(states["model"])
        optimizer.load_state_dict(states["optimizer"])
    step_fn = paired_step
    if objective.unpaired:
        step_fn = functools.partial(unpaired_step, gather=accelerator.gather if world > 1 else None)
    summary["start_step"] = start
    if start == 0 and setup.evaluate is not None and main:
        summary["eval_start"] = _evaluate(run, 0, setup, model, accelerator)
    end = min(t.steps, t.stop_after_steps or t.steps)
    n, window = len(setup.items), LogWindow()

    def step(i: int) -> dict[str, float]:
        acc: dict[str, float] = {}
        for micro in range(t.grad_accum):
            # This process's share of the global micro-batch (the whole of it on one process).
            idx = batch_indices(n, cfg.seed, i, micro, t.grad_accum, t.batch_size * world)
            idx = idx[rank * t.batch_size:(rank + 1) * t.batch_size]
            batch = {k: v.to(accelerator.device) for k, v in
                     setup.collate([setup.items[j] for j in idx], idx).items()}
            with accelerator.autocast():
                loss, metrics = step_fn(model, batch, reference, objective)
            accelerator.backward(loss / t.grad_accum)
            for k, v in {"loss": loss, **metrics}.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach()) / t.grad_accum
        if t.grad_clip > 0:
            acc["grad_norm"] = float(accelerator.clip_grad_norm_(params, t.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.add({})
        return acc

    def on_log(done: int, acc: dict[str, float]) -> dict[str, float]:
        acc = mean_over_processes(acc, accelerator) if world > 1 else dict(acc)
        row = window.close({**acc, "perf/lr": lr_at(done - 1, t)})
        row["mem/peak_gb"] = peak_gb(accelerator.device)  # run/memory.py
        summary["last"] = {"step": done, **row}
        return row

    def after_step(done: int) -> None:
        if setup.evaluate is not None and t.eval_every and done % t.eval_every == 0 \
                and done < end:
            _evaluate(run, done, setup, model, accelerator)

    def states() -> dict[str, Any]:
        sd = accelerator.unwrap_model(model).state_dict()
        # Tied weights (GPT-2 wte/lm_head) share storage, which safetensors refuses: clone each.
        return {"model": {k: v.detach().clone() for k, v in sd.items()},
                "optimizer": optimizer.state_dict()}

    run_steps(run=run, acc=accelerator,
              cadence=Cadence(t.steps, t.log_every, t.ckpt_every, t.keep_checkpoints),
              start=start, stop=end, step=step, states=states, label="dpo",
              lr=lambda i: lr_at(i, t), optimizers=optimizer, on_log=on_log,
              after_step=after_step, progress=t.progress,
              bar_field=lambda m: {"loss": m["loss"], "acc": m.get("rewards/accuracy", 0.0)})
    accelerator.wait_for_everyone()
    if setup.evaluate is not None and end == t.steps and end > start and main:
        summary["eval_end"] = _evaluate(run, end, setup, model, accelerator)
    summary["end_step"] = end
    summary["model"], summary["tokenizer"] = accelerator.unwrap_model(model), setup.tokenizer
    return summary


def _evaluate(run: RunDir, step: int, setup: S.Setup, model, accelerator) -> dict[str, float]:
    result = setup.evaluate(accelerator.unwrap_model(model))
    run.log(step, **result)
    return result
