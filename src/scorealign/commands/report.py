"""``report(RUN)``: (re)write ``RUN/report.html`` from its metrics, samples and evaluations.

The run's kind is looked up once and its record's ``report`` writes the page; a directory whose
kind cannot be told (no ``run.json`` and a config of no registered command, e.g. ``rpo
build-pairs`` output) gets the generic report, as before the kinds existed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from scorealign.commands.kinds import get_kind, kind_of
from scorealign.errors import ExportError


def report(run_dir: str | Path, title: Optional[str] = None) -> Path:
    """Write ``RUN/report.html``; returns its path.

    Raises:
        RunNotFoundError (a FileNotFoundError): not a run directory.
    """
    run_dir = Path(run_dir)
    try:
        rec = get_kind(kind_of(run_dir))
    except ExportError:
        from scorealign.report.html import write_report
        return write_report(run_dir, title=title)
    return rec.report(run_dir, title)


__all__ = ["report"]
