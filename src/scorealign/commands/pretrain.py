"""``pretrain``: denoising score matching (or consistency training) into a run directory, then
``final/``, a sample grid, ``eval.json`` and ``report.html``.

The trainer (:func:`scorealign.train.pretrain.pretrain`) returns the EMA weights; this command
exports them to ``RUN/final`` (the trainer never exports), then samples and evaluates that model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from scorealign.commands.common import Say, open_run, run_guard, silent, typed_errors


def train_and_export(cfg: Any, run: Any, resume: bool = False) -> Path:
    """Train into the open ``run`` (DSM or consistency, ``cfg.train.objective``) and export the
    EMA weights to ``RUN/final`` on the main process; returns ``RUN/final``."""
    from accelerate import PartialState

    from scorealign.train.pretrain import pretrain as train
    from scorealign.train.task import build_task

    ema = train(cfg, run, resume=resume)
    state = PartialState()
    state.wait_for_everyone()
    final = run.path / "final"
    if state.is_main_process:
        build_task(cfg.data, cfg.sde, cfg.model).export(ema, final)
    return final


def pretrain(cfg: Any, out: str | Path | None = None, resume: str | Path | None = None, *,
             say: Say | None = None) -> Path:
    """Pretrain into a run directory (new at ``out``, or ``resume``), export ``final/``, write
    ``samples/final.png``, ``eval.json`` and ``report.html``; returns the run directory.

    ``say`` receives the lines to show (the metrics, the report's path); default: none.

    A failure before the first checkpoint of a new run removes the directory it created; Ctrl-C
    raises :class:`~scorealign.commands.common.RunInterrupted` saying how to continue.

    Raises:
        UsageError: ``out`` is a file, another command's directory or a run with checkpoints;
        RunNotFoundError: ``resume`` is no run;
        ConfigError: a value the trainer rejects (the message names the run's config.yaml).
    """
    from scorealign.report.html import write_report
    from scorealign.train.bases import load_run
    from scorealign.train.evaluate import evaluate, sample_grid, write_eval

    say = say or silent
    run, footprint = open_run(cfg, out, resume, "pretrain")
    t0 = time.time()
    with run_guard("pretrain", run.path, footprint), typed_errors(prefix=f"{run.config_file}: "):
        train_and_export(cfg, run, resume=resume is not None)
    _, task, model = load_run(run.path)
    sample_grid(task, model, cfg.sample, run.samples / "final.png")
    metrics = evaluate(task, model, cfg.sample)
    write_eval(run, {**metrics, "time/pretrain_s": round(time.time() - t0, 1)}, cfg.sample)
    report = write_report(run.path, title=f"pretrain: {run.path.name}")
    say("  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    say(f"report: {report}")
    return run.path


__all__ = ["pretrain", "train_and_export"]
