"""``scorealign sample RUN``: samples of a trained run of any kind (``commands.sample``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import fail


def first_line(e: BaseException) -> str:
    """The first line of an error's message (its repr when it has none)."""
    return str(e).splitlines()[0] if str(e) else repr(e)


def sample_cmd(run_dir: Path = typer.Argument(..., help="A run directory of any command."),
               prompt: Optional[list[str]] = typer.Option(None, "--prompt", help="Prompt(s)."),
               n: int = typer.Option(10, "--n", help="Samples per prompt."),
               sampler: Optional[str] = typer.Option(None, "--sampler"),
               steps: Optional[int] = typer.Option(None, "--steps"),
               eta: Optional[float] = typer.Option(None, "--eta"),
               guidance: Optional[float] = typer.Option(None, "--guidance"),
               seed: int = typer.Option(0, "--seed"),
               out: Optional[Path] = typer.Option(None, "--out", help="Output file.")) -> None:
    """Draw samples from a trained run: a grid per class, or for the given prompts (diffusion
    runs); completions (dpo runs); simulated paths (control runs). File names carry the prompt."""
    from scorealign.commands.sample import sample
    from scorealign.errors import ScorealignError
    try:
        done = sample(run_dir, prompt, n, sampler, steps, eta, guidance, seed, out)
    except (ScorealignError, FileNotFoundError, ValueError, KeyError) as e:
        fail(first_line(e))
    if done.lines:
        typer.echo("\n".join(done.lines))
    typer.echo(f"samples: {done.path}")


def register(app: typer.Typer) -> None:
    """Add ``sample`` to the ``scorealign`` app."""
    app.command("sample")(sample_cmd)
