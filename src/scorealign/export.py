"""Transitional: the names of the dissolved ``scorealign.export``, for the callers not yet moved.

The export of each run kind is its record in :mod:`scorealign.commands` (``export_run`` in
``commands/export.py``, the format writers in ``commands/formats.py``, the atomic directory in
``run/atomic.py``). This module only re-exports those names for the trainers' end-of-run export
calls and ``api.py`` until they move to ``scorealign.commands.export.export_run`` (issue 21); it is
deleted once nothing imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scorealign.commands.export import export_run
from scorealign.commands.formats import (export_digits, export_flow, export_lm, export_sd,
                                         merged_copy)
from scorealign.commands.kind_control import export_policy as export_control
from scorealign.commands.kind_finetune import export_finetuner, export_setup, finetune_setup
from scorealign.commands.kinds import kind_of as run_kind
from scorealign.commands.runs import read_run_config
from scorealign.commands.runs import run_checkpoint as _checkpoint
from scorealign.errors import ExportError


def finish_lm_run(run: Any, model: Any, tokenizer: Any, title: str | None = None) -> Path:
    """End of a ``dpo`` run: ``RUN/final`` (transformers dir or peft adapters) and report.html."""
    from scorealign.report.html import write_report

    export_lm(model, tokenizer, Path(run.path) / "final")
    return write_report(run.path, title=title or f"dpo: {Path(run.path).name}")


def finish_control_run(run: Any, policy: Any, title: str | None = None) -> Path:
    """End of a ``control`` run: ``RUN/final/policy.safetensors`` and report.html."""
    from scorealign.report.html import write_report

    export_control(dict(policy.state_dict()), Path(run.path) / "config.yaml",
                   Path(run.path) / "final")
    return write_report(run.path, title=title or f"control: {Path(run.path).name}")


__all__ = ["ExportError", "run_kind", "merged_copy", "export_digits", "export_sd", "export_flow",
           "export_setup", "export_finetuner", "export_lm", "export_control", "export_run",
           "finetune_setup", "read_run_config", "finish_lm_run", "finish_control_run",
           "_checkpoint"]
