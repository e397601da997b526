"""``scorealign report RUN``: (re)write RUN/report.html (``commands.report``)."""

from __future__ import annotations

from pathlib import Path

import typer

from scorealign.cli.common import fail


def report_cmd(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """(Re)write RUN_DIR/report.html from its metrics, samples and evaluations."""
    from scorealign.commands.report import report
    try:
        typer.echo(f"report: {report(run_dir)}")
    except FileNotFoundError as e:
        fail(str(e))


def register(app: typer.Typer) -> None:
    """Add ``report`` to the ``scorealign`` app."""
    app.command("report")(report_cmd)
