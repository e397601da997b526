"""Denoising-score-matching pretraining: the one loop for digits and 2-D toys.

Each step draws its batch indices, times, noise and condition dropout from a generator seeded by
(run seed, step, process), so a run killed at any point and resumed from its last checkpoint
continues bit-for-bit (CPU, fp32): the checkpoint holds model, EMA and optimizer state, and the
learning rate is a pure function of the step. accelerate places the model on CPU, one GPU or
several processes (each process takes its slice of the same global batch).
"""

from __future__ import annotations

import torch

from scorealign.rng import generator
from scorealign.run.loop import Cadence, optimizer_step, resume_states, run_steps
from scorealign.run.memory import peak_gb
from scorealign.run.rundir import RunDir
from scorealign.sde.dsm import dsm_loss, sample_t
from scorealign.train.config import PretrainConfig, TrainConfig  # noqa: F401 (re-export)
from scorealign.train.consistency import consistency_pretrain
from scorealign.train.optim import lr_at, make_accelerator, update_ema  # noqa: F401 (re-export)
from scorealign.train.task import Task, build_task


def train_step_batch(task: Task, cfg: TrainConfig, step: int, rank: int, world: int):
    """Draw this process's slice of the global batch for ``step`` (x0, cond, t, noise)."""
    g = generator(cfg.seed, "pretrain", step)
    idx = torch.randint(task.num_train, (cfg.batch_size,), generator=g)
    t = sample_t(cfg.batch_size, g, task.sde, cfg.t_schedule)
    x0, labels = task.train_x[idx], task.train_y[idx]
    noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    cond = task.training_cond(labels, g)
    mine = slice(rank, None, world)
    return x0[mine], task.slice_cond(cond, mine), t[mine], noise[mine]


def pretrain(cfg: PretrainConfig, run: RunDir, resume: bool = False) -> dict[str, torch.Tensor]:
    """Run the DSM loop into ``run``; returns the EMA weights (the model; the ``pretrain``
    command exports them to ``RUN/final``, see scorealign.commands.pretrain).

    ``train.objective: cd | ct`` hands the run to the consistency loop (train/consistency.py).
    """
    if cfg.train.objective != "dsm":
        return consistency_pretrain(cfg, run, resume)
    acc = make_accelerator(cfg.device)
    task = build_task(cfg.data, cfg.sde, cfg.model, device="cpu")
    model = task.model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states, start = resume_states(run, resume, acc)
    if states is not None:
        model.load_state_dict(states["model"])
        opt.load_state_dict(states["optimizer"])
        ema = {k: v.clone() for k, v in states["ema"].items()}
    model, opt = acc.prepare(model, opt)
    ema = {k: v.to(acc.device) for k, v in ema.items()}
    tc = cfg.train

    def step(i: int) -> dict[str, float | None]:
        x0, cond, t, noise = train_step_batch(task, tc, i, acc.process_index, acc.num_processes)
        x0, t, noise = x0.to(acc.device), t.to(acc.device), noise.to(acc.device)
        cond = task.cond_to(cond, acc.device)
        loss = dsm_loss(model, task.sde, x0, t, noise, cond=cond, kind=task.kind,
                        weighting=tc.weighting).mean()
        gnorm = optimizer_step(acc, model, opt, loss, tc.grad_clip)
        update_ema(ema, acc.unwrap_model(model), tc.ema_decay, i)
        return {"loss/dsm": loss.item(), "opt/lr": lr_at(i, tc), "opt/grad_norm": gnorm,
                "mem/peak_gb": peak_gb(acc.device)}

    run_steps(run=run, acc=acc, cadence=Cadence(tc.steps, tc.log_every, tc.ckpt_every,
                                                 tc.keep_checkpoints),
              start=start, step=step, label="pretrain", lr=lambda i: lr_at(i, tc),
              optimizers=opt, bar_field="loss/dsm",
              states=lambda: {"model": acc.unwrap_model(model).state_dict(), "ema": ema,
                              "optimizer": opt.state_dict()})
    acc.wait_for_everyone()
    return ema
