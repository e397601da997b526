"""``scorealign dpo --config X`` for configs with ``task: diffusion`` (delegated from cli/dpo.py):
the options of :func:`scorealign.commands.dpo.diffusion_dpo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def diffusion_dpo_cmd(config: Optional[Path], sets: Optional[list[str]], out: Optional[Path],
                      resume: Optional[Path], dry_run: bool, help_config: bool) -> dict:
    """Diffusion-DPO from a config: run dir, checkpoints, resume, metrics.jsonl, report.html.

    Exits 2 with a message naming the file on a bad config, dataset or base model (the typed
    errors of :func:`~scorealign.commands.dpo.diffusion_dpo`, turned into exit 2 by the app).
    """
    from scorealign.cli.dpo import start_config
    from scorealign.commands.dpo import DIFFUSION_CONFIGS, diffusion_dpo
    from scorealign.preference.rpo.config import DiffusionDPOConfig

    cfg = start_config(DiffusionDPOConfig, DIFFUSION_CONFIGS, config, sets, resume, dry_run,
                       help_config)
    summary = diffusion_dpo(cfg, out, resume, say=typer.echo)
    last = summary.get("last", {})
    if last:
        typer.echo(f"step {last['step']}: loss {last['loss']:.4f}, "
                   f"rewards/accuracy {last['rewards/accuracy']:.3f}")
    for tag in ("eval_start", "eval_end"):
        if tag in summary:
            keys = ("eval/accuracy", "eval/label_prob", "eval/fd", "eval/flagged")
            typer.echo(f"{tag}: " + ", ".join(f"{k} {summary[tag][k]:.4f}" for k in keys))
    typer.echo(f"report: {summary['report']}")
    return summary
