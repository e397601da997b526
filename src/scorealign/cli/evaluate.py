"""``scorealign eval RUN``: evaluate a trained run of any kind (``commands.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import fail
from scorealign.cli.sample import first_line


def eval_cmd(run_dir: Path = typer.Argument(..., help="A run directory of any command."),
             sampler: Optional[str] = typer.Option(None, "--sampler"),
             steps: Optional[int] = typer.Option(None, "--steps"),
             eta: Optional[float] = typer.Option(None, "--eta"),
             guidance: Optional[float] = typer.Option(None, "--guidance"),
             n: Optional[int] = typer.Option(None, "--n", help="Number of samples."),
             name: str = typer.Option("eval", "--name", help="Writes RUN/<name>.json.")) -> None:
    """Evaluate a trained run. Pretraining: class accuracy and Fréchet distance (digits), sliced
    W2 (2-D). Finetune: reward, gold reward (and on digits class accuracy and FD) of the trained
    and of the base model. dpo: the demo's win rate, else preference accuracy on the data.
    control: J(π)."""
    from scorealign.commands.evaluate import evaluate
    from scorealign.errors import ScorealignError
    try:
        done = evaluate(run_dir, sampler, steps, eta, guidance, n, name)
    except (ScorealignError, FileNotFoundError, ValueError, KeyError) as e:
        fail(first_line(e))
    typer.echo("  ".join(f"{k} {v:.4g}" for k, v in done.metrics.items()
                         if isinstance(v, float)))
    typer.echo(f"wrote {done.path}")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``scorealign`` app."""
    app.command("eval")(eval_cmd)
