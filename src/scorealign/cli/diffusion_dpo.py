"""``scorealign dpo --config X`` for configs with ``task: diffusion`` (delegated from preference/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import fail


def diffusion_dpo_cmd(config: Optional[Path], sets: Optional[list[str]], out: Optional[Path],
                      resume: Optional[Path], dry_run: bool, help_config: bool) -> dict:
    """Diffusion-DPO from a config: run dir, checkpoints, resume, metrics.jsonl, report.html.

    Exits 2 with a message naming the file on a bad config, dataset or base model.
    """
    from scorealign.config import ConfigError
    from scorealign.cli.dpo import start_run
    from scorealign.report.html import write_report
    from scorealign.preference.rpo.config import DiffusionDPOConfig
    from scorealign.preference.rpo.dataset import DatasetError
    from scorealign.preference.diffusion_dpo import train
    from scorealign.run.checkpoint import CheckpointError

    cfg, run = start_run(DiffusionDPOConfig, "configs/dpo/diffusion_*.yaml", config, sets, out,
                         resume, dry_run, help_config)
    try:
        summary = train(cfg, run, resume=resume is not None)
    except (DatasetError, FileNotFoundError, CheckpointError, ConfigError) as e:
        fail(str(e))
    except ValueError as e:
        fail(f"{run.config_file}: {e}")
    report = write_report(run.path, title=f"diffusion-dpo: {run.path.name}")
    last = summary.get("last", {})
    if last:
        typer.echo(f"step {last['step']}: loss {last['loss']:.4f}, "
                   f"rewards/accuracy {last['rewards/accuracy']:.3f}")
    for tag in ("eval_start", "eval_end"):
        if tag in summary:
            keys = ("eval/accuracy", "eval/label_prob", "eval/fd", "eval/flagged")
            typer.echo(f"{tag}: " + ", ".join(f"{k} {summary[tag][k]:.4f}" for k in keys))
    typer.echo(f"report: {report}")
    return summary
