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
               prompt: Optional[list[str]] = typer.Option(
                   None, "--prompt", help="A prompt, e.g. \"a handwritten 7\" (repeatable; "
                   "default: a grid with one row per class, or the run's prompts). Not for "
                   "control runs."),
               n: int = typer.Option(10, "--n", help="Samples per prompt (per class for the "
                                     "grid); completions per prompt (dpo); paths (control)."),
               sampler: Optional[str] = typer.Option(
                   None, "--sampler", help="A registered sampler (ddim, ddpm, euler_maruyama, "
                   "heun_ode, consistency, ...; `scorealign finetune --help-config` lists them)"
                   "; default: the run's."),
               steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps "
                                                   "(default: the run's)."),
               eta: Optional[float] = typer.Option(None, "--eta", help="DDIM noise level η "
                                                   "(0: deterministic, 1: DDPM-like); default: "
                                                   "the run's."),
               guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-"
                                                        "free guidance scale (default: the "
                                                        "run's)."),
               seed: int = typer.Option(0, "--seed", help="Seed of the draw; the file name "
                                        "carries it, so another seed writes another file."),
               out: Optional[Path] = typer.Option(
                   None, "--out", help="Output file (default: RUN/samples/<prompt>_<sampler>_"
                   "<steps>_seed<seed>.png).")) -> None:
    """Draw samples from a trained run: a grid per class, or for the given prompts (diffusion
    runs; images clamped to the data range [-1, 1], as `scorealign.load(RUN).sample` returns
    them); completions (dpo runs); simulated paths (control runs). File names carry the prompt."""
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
