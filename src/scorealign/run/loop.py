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
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import torch
from accelerate import Accelerator

from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from scorealign.run.progress import progress_bar
from scorealign.run.rundir import RunDir

Decay = Literal["constant", "linear", "cosine"]


def lr_at(step: int, lr: float, total: int, warmup: int = 0, decay: Decay = "constant",
          floor: float = 0.0, ratio_first: bool = False) -> float:
    """Learning rate at ``step`` (0-based) of ``total``: linear warm-up over ``warmup`` steps,
    ``lr·(step+1)/warmup``, then

    * ``constant``: ``lr``;
    * ``linear``: ``lr·max(0, (total − step)/max(1, total − warmup))`` (to 0 at ``total``);
    * ``cosine``: ``lr·(floor + (1 − floor)·½(1 + cos(π·frac)))`` with
      ``frac = (step − warmup)/max(1, total − warmup)`` (to ``floor·lr`` at ``total``).

    Float order is part of the contract, so that every existing run's schedule is reproduced
    bit for bit: the warm-up is ``(lr·(step+1))/warmup`` (DSM, consistency, LM-DPO) or, with
    ``ratio_first``, ``lr·((step+1)/warmup)`` (Diffusion-DPO's order; the two differ in the
    last bit for some steps). The cosine's cos is evaluated in float32 through torch, as the
    pretraining loop always did.
    """
    if step < warmup:
        return lr * ((step + 1) / warmup) if ratio_first else lr * (step + 1) / warmup
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
    """The newest checkpoint's states and its count, or ``(None, 0)`` for a fresh run
    (:func:`resume_checkpoint` without the checkpoint's extra record)."""
    states, _, start = resume_checkpoint(run, resume, acc, unit)
    return states, start


def adamw_resumed(model: torch.nn.Module, lr: float, weight_decay: float, run: RunDir | None,
                  resume: bool, acc: Accelerator) -> tuple[torch.nn.Module, torch.optim.Optimizer,
                                                           int]:
    """AdamW over ``model``'s trainable parameters, both restored from the newest checkpoint on
    resume (:func:`resume_states`), then ``acc.prepare``-d: ``(prepared model, optimizer, start
    step)``. The model's states are loaded before ``prepare`` (every process reads the same
    checkpoint)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    states, start = resume_states(run, resume, acc)
    if states is not None:
        model.load_state_dict(states["model"])
        opt.load_state_dict(states["optimizer"])
    prepared, opt = acc.prepare(model, opt)
    return prepared, opt, start


def resume_checkpoint(run: RunDir | None, resume: bool, acc: Accelerator | None = None,
                      unit: str = "step") -> tuple[dict | None, dict, int]:
    """The newest checkpoint's ``(states, extra record, count)``, or ``(None, {}, 0)``.

    On resume, metrics logged after that count are dropped (all of them when there is no
    checkpoint yet: the run starts over) so the resumed run appends each count exactly once;
    only the main process rewrites the log.
    """
    if run is None or not resume:
        return None, {}, 0
    main = acc is None or acc.is_main_process
    if (ckpt := latest_checkpoint(run.checkpoints)) is None:
        if main:
            run.truncate_metrics(-1)
        return None, {}, 0
    states, extra = load_checkpoint(ckpt)
    start = int(extra[unit])
    if main:
        run.truncate_metrics(start)
    if acc is not None:
        acc.print(f"resuming {run.path} from {unit} {start}")
    return states, extra, start


def optimizer_step(acc: Accelerator, model: torch.nn.Module, opt: torch.optim.Optimizer,
                   loss: torch.Tensor, grad_clip: float) -> float | None:
    """Backward, optional gradient clipping and one optimizer step; returns the grad norm."""
    opt.zero_grad(set_to_none=True)
    acc.backward(loss)
    gnorm = acc.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    opt.step()
    return None if gnorm is None else float(gnorm)


def mean_over_processes(metrics: Mapping[str, float], acc: Accelerator) -> dict[str, float]:
    """Metrics averaged over processes (equal batch shares), for the main process's log line;
    a collective: every process calls it."""
    keys = sorted(metrics)
    vals = acc.reduce(torch.tensor([metrics[k] for k in keys], device=acc.device),
                      reduction="mean")
    return dict(zip(keys, vals.tolist()))


def set_lr(optimizers: Any, value: float) -> None:
    """Set every param group of ``optimizers`` (one optimizer or several) to ``value``."""
    for opt in (optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]):
        for group in opt.param_groups:
            group["lr"] = value


class LogWindow:
    """The counts since the last log line: their metrics' mean and the counts per second.

    ``add(metrics)`` after each count; at a log count ``mean()`` is each metric's mean over the
    window (``sum(float(v)) / n``, summed in the order the counts came) and ``close(row)``
    returns ``row`` with ``perf/steps_per_s`` appended, then starts a new window.
    """

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._n = 0
        self._tic = time.perf_counter()

    def add(self, metrics: Mapping[str, Any]) -> None:
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._n += 1

    def mean(self) -> dict[str, float]:
        return {k: v / self._n for k, v in self._sums.items()}

    def close(self, row: Mapping[str, Any]) -> dict[str, Any]:
        now = time.perf_counter()
        out = {**row, "perf/steps_per_s": self._n / (now - self._tic)}
        self._sums, self._n, self._tic = {}, 0, now
        return out


def run_steps(*, run: RunDir | None, acc: Accelerator | None, cadence: Cadence, start: int,
              step: Callable[[int], Mapping[str, Any]],
              states: Callable[[], dict[str, Any]],
              label: str = "train",
              lr: Callable[[int], float] | None = None, optimizers: Any = (),
              bar_field: str | Callable[[Mapping[str, Any]], dict[str, float]] | None = None,
              after_checkpoint: Callable[[int], None] | None = None,
              extra: Callable[[int], dict[str, Any]] | None = None,
              sync_every_step: bool = False,
              stop: int | None = None, checkpoint_at_stop: bool = True,
              on_log: Callable[[int, Mapping[str, Any]], Mapping[str, Any]] | None = None,
              after_step: Callable[[int], None] | None = None,
              progress: bool = True) -> Mapping[str, Any]:
    """Run counts ``start … end − 1`` of a loop; returns the last count's metrics.

    ``end`` is ``cadence.total``, or ``stop`` when given and smaller: the invocation ends there
    while the schedule (``lr``) still spans ``cadence.total``, as a kill would; ``--resume``
    continues it. For each count ``i``:

    1. the learning rate ``lr(i)`` is set on ``optimizers`` (when given);
    2. ``step(i)`` does the loop's work and returns its metrics;
    3. at a log count (every ``log_every`` counts, and at ``end``) ``on_log(i + 1, metrics)``,
       when given, runs on *every* process (it may use collectives, e.g. a mean over
       processes or over the counts since the last log line, :class:`LogWindow`) and returns
       the row to log; the main process logs the row (default: the metrics) as count ``i + 1``;
       metrics whose value is None are not logged;
    4. ``after_step(i + 1)`` runs on the main process (evaluations along training);
    5. every ``ckpt_every`` counts and at ``cadence.total`` (also at ``stop`` when
       ``checkpoint_at_stop``), the main process checkpoints ``states()`` (built only when
       written) with ``extra(i + 1)`` (default ``{unit: i + 1}``) as its record, keeping the
       newest ``keep``; ``after_checkpoint(i + 1)`` runs after it (sample grids);
    6. ``sync_every_step`` waits for every process (loops whose processes must not run ahead of
       the main one's checkpoint).

    ``acc`` None runs one process without accelerate (the control loop); ``run`` None trains
    without a run directory (nothing is logged or written); ``progress=False`` hides the bar.
    """
    c = cadence
    end = c.total if stop is None else min(c.total, stop)
    main = acc is None or acc.is_main_process
    last: Mapping[str, Any] = {}
    with progress_bar(label, total=c.total, start=start, disable=not (main and progress)) as bar:
        for i in range(start, end):
            if lr is not None:
                set_lr(optimizers, lr(i))
            last = step(i)
            done = i + 1
            if done % c.log_every == 0 or done == end:
                row = on_log(done, last) if on_log is not None else last
                if main and run is not None:
                    run.log(done, **{k: v for k, v in row.items() if v is not None})
            if main and after_step is not None:
                after_step(done)
            if main and run is not None and (done % c.ckpt_every == 0 or done == c.total or
                                             (done == end and checkpoint_at_stop)):
                save_checkpoint(run.checkpoints, done, states(),
                                extra=extra(done) if extra else {c.unit: done}, keep=c.keep)
                if after_checkpoint is not None:
                    after_checkpoint(done)
            if sync_every_step and acc is not None:
                acc.wait_for_everyone()
            if bar_field is None:
                bar.advance()
            elif callable(bar_field):
                bar.advance(**bar_field(last))
            else:
                bar.advance(**{bar_field: float(last[bar_field])})
    return last
