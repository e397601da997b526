"""``scorealign demo``: the options of :func:`scorealign.commands.demo.demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import SET_OPT


def demo_cmd(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
             set_: Optional[list[str]] = SET_OPT,
             overwrite: bool = typer.Option(False, "--overwrite", help="Redo a finished demo "
                                            "run at --out.")) -> None:
    """The main job on its embedded default: LOOP fine-tuning of the shipped digits model
    toward an aesthetic proxy with a KL term to the base, prompt alignment held out as gold.

    Uses ``configs/finetune/demo.yaml``; pretrains a small base first when no shipped checkpoint
    is present. A killed demo continues where it stopped; a finished one is kept (rerun with
    --overwrite to redo it); a directory that is not a demo run is never touched.
    """
    from scorealign.commands.demo import demo
    # a new run ends with the before → after table and the report's path; a finished one says
    # where its report is
    demo(out, set_, say=typer.echo, overwrite=overwrite)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``scorealign`` app."""
    app.command("demo")(demo_cmd)
