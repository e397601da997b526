"""``control``: continuous-time RL on a controlled SDE into a run directory, then
``RUN/final/policy.safetensors`` and ``report.html``.

The trainer (:func:`scorealign.control.train.train_control`) returns the final evaluation and
never exports; this command exports the policy from the run's final checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scorealign.commands.common import (Footprint, Say, check_out, default_out, run_guard, silent,
                                       typed_errors)
from scorealign.errors import RunNotFoundError


def control(cfg: Any, out: str | Path | None = None, resume: str | Path | None = None, *,
            say: Say | None = None) -> Path:
    """Train a policy (``cfg.algo``) into ``out`` (default ``runs/control-<time>``) or continue
    ``resume``, export ``RUN/final``, write ``report.html``; returns the run directory.

    ``say`` receives the final evaluation's line and the run's path.

    A failure before the first checkpoint of a new run removes the directory it created; Ctrl-C
    raises :class:`~scorealign.commands.common.RunInterrupted` saying how to continue; ``--set``
    overrides given with ``resume`` are recorded in its config.yaml.

    Raises:
        UsageError: ``out`` is a file, another command's directory or a run with checkpoints;
        RunNotFoundError: ``resume`` is no run;
        CheckpointError, RunDirError.
    """
    from scorealign.control.train import train_control
    from scorealign.commands.export import export_run
    from scorealign.report.html import write_report

    from scorealign.run.rundir import RunDir

    path = Path(resume or out or default_out("control"))
    footprint = None
    with typed_errors(values=False, missing=RunNotFoundError):
        if resume is not None:
            RunDir.open(path).record_config(cfg)
        else:
            check_out(path, "control")
            footprint = Footprint(path)
    with run_guard("control", path, footprint), \
            typed_errors(values=False, missing=RunNotFoundError):
        result = train_control(cfg, path, resume=resume is not None)
    export_run(path)
    write_report(path, title=f"control: {path.name}")
    say = say or silent
    say("  ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)))
    say(f"run: {path}")
    return path


__all__ = ["control"]
