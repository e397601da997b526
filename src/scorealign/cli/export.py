"""``scorealign export RUN``: a run's model in its ecosystem's format (``commands.export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import fail
from scorealign.cli.sample import first_line


def export_cmd(run_dir: Path = typer.Argument(..., help="A run directory of any command."),
               to: Optional[Path] = typer.Option(None, "--to", help="Target directory "
                                                 "(default RUN/final)."),
               checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="A checkpoint "
                                                        "(step_000020 or a path); default newest"),
               overwrite: bool = typer.Option(False, "--overwrite", help="Replace --to even when "
                                              "it is a directory scorealign did not write."),
               with_base: bool = typer.Option(False, "--with-base", help="A complete diffusers "
                                              "pipeline (base + trained weights) that loads "
                                              "without scorealign."),
               adapter: bool = typer.Option(False, "--adapter", help="With --with-base: keep "
                                            "LoRA adapters unfused (load_lora_weights(DIR)).")
               ) -> None:
    """Export a run's model in its ecosystem's format (digits pair, diffusers LoRA or pipeline,
    transformers/peft directory, control policy), from any checkpoint; with --with-base, a
    complete diffusers pipeline that loads without scorealign. An existing file at --to, or a
    non-empty directory that is not an export, is an error (unless --overwrite)."""
    from scorealign.commands.export import export_run
    from scorealign.errors import ScorealignError
    try:
        path = export_run(run_dir, to, checkpoint, overwrite, with_base, adapter)
    except (ScorealignError, FileNotFoundError, ValueError) as e:
        fail(first_line(e))
    except OSError as e:
        fail(f"--to {to}: cannot write ({e.strerror or e})")
    typer.echo(f"exported: {path}")


def register(app: typer.Typer) -> None:
    """Add ``export`` to the ``scorealign`` app."""
    app.command("export")(export_cmd)
