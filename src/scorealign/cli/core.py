"""CLI commands on a finished run: ``sample``, ``eval``, ``report`` and ``export``.

(Moving to A2's ``cli/sample.py``, ``cli/evaluate.py``, ``cli/report.py``, ``cli/export.py``;
this module goes once they land.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import fail


def _sampling_overrides(cfg, sampler, steps, eta, guidance, n):
    """Copy of a SamplingConfig with the CLI's non-None options applied."""
    from scorealign.config import FieldError
    changes = {k: v for k, v in dict(sampler=sampler, steps=steps, eta=eta, guidance=guidance,
                                     num_eval=n).items() if v is not None}
    try:
        return dataclasses.replace(cfg, **changes)
    except FieldError as e:
        fail(f"--{'n' if e.field == 'num_eval' else e.field}: {e}")


def _slug(text: str) -> str:
    """A file-name-safe form of a prompt ("a handwritten 7" → "a_handwritten_7")."""
    import re
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "prompt"


def _out_file(out: Path | None, default: Path) -> Path:
    """``--out`` (checked writable) or ``default``; exits 2 naming the path when unusable."""
    path = Path(out) if out is not None else default
    if path.is_dir():
        fail(f"--out {path}: is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        fail(f"--out {path}: cannot write there ({e.strerror or e})")
    return path


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
    loaded = _load_any(run_dir)
    kind = loaded.kind
    tag = "_".join(_slug(p) for p in prompt)[:80] if prompt else "classes"
    if kind == "dpo":
        prompts = list(prompt or ["a"])
        texts = loaded.sample(prompts, n, seed)
        path = _out_file(out, Path(run_dir) / "samples" / f"sample_{tag}_seed{seed}.txt")
        rows = [f"{p}\t{t}" for p, t in zip([p for p in prompts for _ in range(n)], texts)]
        path.write_text("\n".join(rows) + "\n")
        typer.echo("\n".join(rows))
        typer.echo(f"samples: {path}")
        return
    if kind == "control":
        path = _out_file(out, Path(run_dir) / "samples" / f"paths_seed{seed}.png")
        _control_paths(loaded, n, seed, path)
        typer.echo(f"samples: {path}")
        return
    if loaded.task is None:  # SD-style fine-tune: the policy's sampler
        prompts = list(prompt or loaded.setup.prompts[:4])
        x = loaded.sample(prompts, n, seed)
        path = _out_file(out, Path(run_dir) / "samples" / f"sample_{tag}_seed{seed}.png")
        from scorealign.report.figures import save_image_grid
        save_image_grid(x, path, nrow=n)
        typer.echo(f"samples: {path}")
        return
    _sample_digits(loaded, run_dir, prompt, n, sampler, steps, eta, guidance, seed, out, tag)


def _sample_digits(loaded, run_dir, prompt, n, sampler, steps, eta, guidance, seed, out, tag):
    import torch

    from scorealign.data import labels_from_prompts
    from scorealign.report.figures import save_image_grid
    from scorealign.train.evaluate import sample_grid

    task, model = loaded.task, loaded.model
    scfg = dataclasses.replace(_sampling_overrides(loaded.sampling, sampler, steps, eta, guidance,
                                                   None), seed=seed)
    path = _out_file(out, Path(run_dir) / "samples" /
                     f"sample_{tag}_{scfg.sampler}_{scfg.steps}_seed{seed}.png")
    if prompt and (not task.is_image or task.model_cfg.cond == "none"):
        fail(f"{run_dir} holds an unconditional model; --prompt needs a label or text model")
    if prompt:
        try:
            labels = labels_from_prompts(prompt).repeat_interleave(n)
        except ValueError as e:
            fail(str(e))
        prompts = [p for p in prompt for _ in range(n)]
        x = task.generate(model, task.cond_for(labels, prompts), len(prompts), scfg)
        save_image_grid(x, path, nrow=n)
    else:
        with torch.no_grad():
            sample_grid(task, model, scfg, path, per_class=n)
    typer.echo(f"samples: {path}")


def _control_paths(loaded, n: int, seed: int, path: Path) -> Path:
    """Plot ``n`` simulated state paths of a control policy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scorealign.control.envs import make_env
    from scorealign.control.simulate import simulate
    from scorealign.rng import generator

    cfg = loaded.config
    env = make_env(cfg.env.name, cfg.env.params)
    ro = simulate(env, loaded.model, n, cfg.dt, cfg.horizon, generator(seed, "sample-paths"))
    t = torch_arange(ro.xs.shape[0]) * cfg.dt
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for b in range(ro.xs.shape[1]):
        ax.plot(t, ro.xs[:, b, 0].numpy(), lw=0.8)
    ax.set_xlabel("time t")
    ax.set_ylabel("state X_t[0]")
    ax.set_title(f"{n} paths under the trained policy")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def torch_arange(n: int):
    import torch
    return torch.arange(n, dtype=torch.float64).numpy()


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
    from scorealign.train.evaluate import evaluate, evaluate_run, write_eval
    from scorealign.run.rundir import RunDir

    loaded = _load_any(run_dir)
    if loaded.kind == "pretrain":
        scfg = _sampling_overrides(loaded.sampling, sampler, steps, eta, guidance, n)
        metrics = evaluate(loaded.task, loaded.model, scfg)
    else:
        scfg = (_sampling_overrides(loaded.sampling, sampler, steps, eta, guidance, n)
                if loaded.sampling is not None else None)
        try:
            metrics = evaluate_run(loaded, scfg, n)
        except ValueError as e:
            fail(f"{run_dir}: {e}")
    path = write_eval(RunDir.open(run_dir), metrics, scfg, name)
    typer.echo("  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    typer.echo(f"wrote {path}")


def report_cmd(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """(Re)write RUN_DIR/report.html from its metrics, samples and evaluations."""
    from scorealign.report.html import write_report
    try:
        typer.echo(f"report: {write_report(run_dir)}")
    except FileNotFoundError as e:
        fail(str(e))


def _load_any(run_dir: Path):
    """``scorealign.load(run_dir)``; exits 2 with one line on a missing or broken run."""
    from scorealign.api import load
    from scorealign.config import ConfigError
    from scorealign.export import ExportError
    from scorealign.run.checkpoint import CheckpointError
    try:
        return load(run_dir)
    except (FileNotFoundError, ConfigError, CheckpointError, ExportError, ValueError,
            KeyError) as e:
        fail(str(e).splitlines()[0] if str(e) else repr(e))


def export_cmd(run_dir: Path = typer.Argument(..., help="A run directory of any command."),
               to: Optional[Path] = typer.Option(None, "--to", help="Target directory "
                                                 "(default RUN/final)."),
               checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="A checkpoint "
                                                        "(step_000020 or a path); default newest")
               ) -> None:
    """Export a run's model in its ecosystem's format (digits pair, diffusers LoRA or pipeline,
    transformers/peft directory, control policy), from any checkpoint."""
    from scorealign.config import ConfigError
    from scorealign.export import ExportError, export_run
    from scorealign.run.checkpoint import CheckpointError
    try:
        path = export_run(run_dir, to, checkpoint)
    except (FileNotFoundError, ConfigError, CheckpointError, ExportError, ValueError) as e:
        fail(str(e).splitlines()[0])
    except OSError as e:
        fail(f"--to {to}: cannot write ({e.strerror or e})")
    typer.echo(f"exported: {path}")


def register(app: typer.Typer) -> None:
    """Add ``sample``, ``eval``, ``report`` and ``export`` to the ``scorealign`` app."""
    app.command("sample")(sample_cmd)
    app.command("eval")(eval_cmd)
    app.command("report")(report_cmd)
    app.command("export")(export_cmd)
