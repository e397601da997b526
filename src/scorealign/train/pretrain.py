"""Denoising-score-matching pretraining: the one loop for digits and 2-D toys.

Each step draws its batch indices, times, noise and condition dropout from a generator seeded by
(run seed, step, process), so a run killed at any point and resumed from its last checkpoint
continues bit-for-bit (CPU, fp32): the checkpoint holds model, EMA and optimizer state, and the
learning rate is a pure function of the step. accelerate places the model on CPU, one GPU or
several processes (each process takes its slice of the same global batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from accelerate import Accelerator

from scorealign.config import FieldError, OptimConfig, Tracker, tracker_field
from scorealign.nets import ModelConfig
from scorealign.rng import generator
from scorealign.sde.dsm import dsm_loss, sample_t
from scorealign.train.consistency import ConsistencyConfig, consistency_pretrain
from scorealign.run.loop import Cadence, optimizer_step, resume_states, run_steps
from scorealign.run.loop import lr_at as schedule_lr
from scorealign.run.rundir import RunDir
from scorealign.train.task import (DataConfig, SamplingConfig, SDEConfig, Task, build_task,
                                   check_task)


@dataclass(frozen=True)
class TrainConfig(OptimConfig):
    """Optimization settings of the pretraining loop (the shared :class:`OptimConfig` fields
    lr, weight_decay, grad_clip, then the loop's own)."""

    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    steps: int = field(default=2000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=128, metadata={"help": "global batch size"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    decay: Literal["constant", "cosine"] = field(default="cosine", metadata={"help": "lr decay"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of the weights"})
    weighting: str = field(default="eps", metadata={"help": "DSM weighting λ(t) (sde/dsm.py)"})
    t_schedule: str = field(default="uniform", metadata={
        "help": "training times: uniform | stratified | logsnr (uniform in log s/m)"})
    objective: Literal["dsm", "cd", "ct"] = field(default="dsm", metadata={
        "help": "dsm: denoising score matching; cd / ct: consistency distillation / training "
                "(train/consistency.py, settings under consistency:)"})
    seed: int = field(default=0, metadata={"help": "run seed: all randomness derives from it"})
    log_every: int = field(default=25, metadata={"help": "metrics.jsonl interval (steps)"})
    ckpt_every: int = field(default=500, metadata={"help": "checkpoint interval (steps)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept"})

    def __post_init__(self) -> None:
        from scorealign.sde.dsm import WEIGHTINGS
        if self.weighting not in WEIGHTINGS:
            raise FieldError("weighting", f"unknown weighting {self.weighting!r}; choose one of "
                                          f"{sorted(WEIGHTINGS)}")
        from scorealign.sde.dsm import SCHEDULES
        if self.t_schedule not in SCHEDULES:
            raise FieldError("t_schedule", f"unknown time schedule {self.t_schedule!r}; choose "
                                           f"one of {list(SCHEDULES)}")
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise FieldError("lr" if self.lr <= 0 else "warmup_steps",
                             f"need lr > 0 and warmup_steps >= 0, got {self.lr}, "
                             f"{self.warmup_steps}")
        super().__post_init__()


@dataclass(frozen=True)
class PretrainConfig:
    """``scorealign pretrain``: data, forward SDE, network, optimization, sampling."""

    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "training data"})
    sde: SDEConfig = field(default_factory=SDEConfig, metadata={"help": "forward process"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "network"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "optimization"})
    sample: SamplingConfig = field(default_factory=SamplingConfig,
                                   metadata={"help": "sampling for previews and evaluation"})
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig, metadata={
        "help": "consistency models (train.objective cd | ct)"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "device"})
    tracker: Tracker = tracker_field()

    def __post_init__(self) -> None:
        check_task(self.data, self.model)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay to 10%
    (:func:`scorealign.run.loop.lr_at` with ``floor=0.1``)."""
    return schedule_lr(step, cfg.lr, cfg.steps, cfg.warmup_steps, cfg.decay, floor=0.1)


def make_accelerator(device: str) -> Accelerator:
    """An Accelerator on the requested device (``auto``: CUDA when present)."""
    return Accelerator(cpu=device == "cpu" or (device == "auto" and not torch.cuda.is_available()))


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float, step: int) -> None:
    """θ_ema ← d θ_ema + (1 − d) θ with warm-up d = min(decay, (1+step)/(10+step))."""
    d = min(decay, (1 + step) / (10 + step))
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(d).add_(v.detach().to(ema[k].device), alpha=1 - d)
        else:
            ema[k].copy_(v)


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
        return {"loss/dsm": loss.item(), "opt/lr": lr_at(i, tc), "opt/grad_norm": gnorm}

    run_steps(run=run, acc=acc, cadence=Cadence(tc.steps, tc.log_every, tc.ckpt_every,
                                                 tc.keep_checkpoints),
              start=start, step=step, label="pretrain", lr=lambda i: lr_at(i, tc),
              optimizers=opt, bar_field="loss/dsm",
              states=lambda: {"model": acc.unwrap_model(model).state_dict(), "ema": ema,
                              "optimizer": opt.state_dict()})
    acc.wait_for_everyone()
    return ema
