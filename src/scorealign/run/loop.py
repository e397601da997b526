"""The one training-loop skeleton: resume → lr → step → log/checkpoint → end.

Every training loop of the project (DSM and consistency pretraining, RL fine-tuning, LM-DPO,
Diffusion-DPO, continuous-time control) runs through :func:`run_steps`; each loop supplies only
its step (``step(i) -> metrics``), the states it checkpoints and how to restore them. Counting,
learning-rate setting, logging cadence, checkpoint cadence and pruning, the progress bar and the
metric-log truncation on resume are written once, here. :func:`lr_at` is the one learning-rate
schedule (linear warm-up, then constant, linear or cosine decay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import torch
from accelerate import Accelerator

from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from scorealign.run.progress import progress_bar
from scorealign.run.rundir import RunDir

Decay = Literal["constant", "linear", "cosine"]


def lr_at(step: int, lr: float, total: int, warmup: int = 0, decay: Decay = "constant",
          floor: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based) of ``total``: linear warm-up over ``warmup`` steps,
    ``lr·(step+1)/warmup``, then

    * ``constant``: ``lr``;
    * ``linear``: ``lr·max(0, (total − step)/max(1, total − warmup))`` (to 0 at ``total``);
    * ``cosine``: ``lr·(floor + (1 − floor)·½(1 + cos(π·frac)))`` with
      ``frac = (step − warmup)/max(1, total − warmup)`` (to ``floor·lr`` at ``total``).

    The cosine's cos is evaluated in float32 through torch, as the pretraining loop always did,
    so the schedule of an existing run is reproduced bit for bit.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    if decay == "constant":
        return lr
    if decay == "linear":
        return lr * max(0.0, (total - step) / max(1, total - warmup))
    if decay == "cosine":
        frac = (step - warmup) / max(1, total - warmup)
        return lr * (floor + (1 - floor) * 0.5 * (1 + torch.cos(torch.tensor(math.pi * frac)).item()))
    raise ValueError(f"unknown lr decay {decay!r}; choose constant, linear or cosine")


@dataclass(frozen=True)
class Cadence:
    """When a loop logs and checkpoints, in its own unit (steps or epochs)."""

    total: int
    log_every: int = 1
    ckpt_every: int = 1
    keep: int | None = None
    unit: str = "step"   # the key of the checkpoint's extra record: "step" or "epoch"


def resume_states(run: RunDir | None, resume: bool, acc: Accelerator | None = None,
                  unit: str = "step") -> tuple[dict | None, int]:
    """The newest checkpoint's states and its count, or ``(None, 0)`` for a fresh run.

    Metrics logged after that count are dropped so the resumed run appends exactly once.
    """
    if run is None or not resume or (ckpt := latest_checkpoint(run.checkpoints)) is None:
        return None, 0
    states, extra = load_checkpoint(ckpt)
    start = int(extra[unit])
    run.truncate_metrics(start)
    if acc is not None:
        acc.print(f"resuming {run.path} from {unit} {start}")
    return states, start


def optimizer_step(acc: Accelerator, model: torch.nn.Module, opt: torch.optim.Optimizer,
                   loss: torch.Tensor, grad_clip: float) -> float | None:
    """Backward, optional gradient clipping and one optimizer step; returns the grad norm."""
    opt.zero_grad(set_to_none=True)
    acc.backward(loss)
    gnorm = acc.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    opt.step()
    return None if gnorm is None else float(gnorm)


def set_lr(optimizers: Any, value: float) -> None:
    """Set every param group of ``optimizers`` (one optimizer or several) to ``value``."""
    for opt in (optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]):
        for group in opt.param_groups:
            group["lr"] = value


def run_steps(*, run: RunDir | None, acc: Accelerator, cadence: Cadence, start: int,
              step: Callable[[int], Mapping[str, Any]],
              states: Callable[[], dict[str, Any]],
              label: str = "train",
              lr: Callable[[int], float] | None = None, optimizers: Any = (),
              bar_field: str | Callable[[Mapping[str, Any]], dict[str, float]] | None = None,
              after_checkpoint: Callable[[int], None] | None = None,
              extra: Callable[[int], dict[str, Any]] | None = None,
              sync_every_step: bool = False) -> Mapping[str, Any]:
    """Run counts ``start … cadence.total − 1`` of a loop; returns the last step's metrics.

    For each count ``i``: the learning rate ``lr(i)`` is set on ``optimizers`` (when given);
    ``step(i)`` does the loop's work and returns its metrics; then, on the main process, the
    metrics are logged as count ``i + 1`` every ``log_every`` counts and at the end, and
    ``states()`` (built only when written) is checkpointed every ``ckpt_every`` counts and at
    the end, with ``extra(i + 1)`` (default ``{unit: i + 1}``) as its record; ``after_checkpoint``
    runs after each checkpoint (sample grids). ``sync_every_step`` waits for every process after
    each count (loops whose processes must not run ahead of the main one's checkpoint).
    Metrics whose value is None are not logged.
    """
    c = cadence
    last: Mapping[str, Any] = {}
    with progress_bar(label, total=c.total, start=start, disable=not acc.is_main_process) as bar:
        for i in range(start, c.total):
            if lr is not None:
                set_lr(optimizers, lr(i))
            last = step(i)
            done = i + 1
            if acc.is_main_process and run is not None:
                if done % c.log_every == 0 or done == c.total:
                    run.log(done, **{k: v for k, v in last.items() if v is not None})
                if done % c.ckpt_every == 0 or done == c.total:
                    save_checkpoint(run.checkpoints, done, states(),
                                    extra=extra(done) if extra else {c.unit: done},
                                    keep=c.keep)
                    if after_checkpoint is not None:
                        after_checkpoint(done)
            if sync_every_step:
                acc.wait_for_everyone()
            if bar_field is None:
                bar.advance()
            elif callable(bar_field):
                bar.advance(**bar_field(last))
            else:
                bar.advance(**{bar_field: float(last[bar_field])})
    return last


def end_of_step(acc: Accelerator, run: RunDir, tc: Any, done: int, metrics: dict[str, float],
                gnorm: float | None, states: Callable[[], dict[str, Any]]) -> None:
    """Log and checkpoint at the end of one step (the consistency loop's, until it uses
    :func:`run_steps`)."""
    if not acc.is_main_process:
        return
    if done % tc.log_every == 0 or done == tc.steps:
        run.log(done, **metrics, **({"opt/grad_norm": gnorm} if gnorm is not None else {}))
    if done % tc.ckpt_every == 0 or done == tc.steps:
        save_checkpoint(run.checkpoints, done, states(), extra={"step": done},
                        keep=tc.keep_checkpoints)


def export_final(acc: Accelerator, run: RunDir, task: Any, ema: dict) -> Any:
    """Wait for every process, then export the EMA weights to ``RUN/final`` (main process)."""
    acc.wait_for_everyone()
    final = run.path / "final"
    if acc.is_main_process:
        task.export(ema, final)
    return final
