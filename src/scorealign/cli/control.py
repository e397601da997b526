"""``scorealign control``: continuous-time RL on a controlled SDE, into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import (CONFIG_OPT, DRY_OPT, HELP_CFG_OPT, OUT_OPT, RESUME_OPT, SET_OPT,
                                   default_out, fail, resolve_config)


def control_cmd(config: Optional[Path] = CONFIG_OPT, set_: Optional[list[str]] = SET_OPT,
                out: Optional[Path] = OUT_OPT, resume: Optional[Path] = RESUME_OPT,
                dry_run: bool = DRY_OPT, help_config: bool = HELP_CFG_OPT) -> None:
    """Train a policy on a controlled SDE (ct_pg, ct_trpo, ct_ppo[_penalty]; dt_pg, dt_ppo)."""
    from scorealign.control.train import ControlConfig, train_control
    from scorealign.run.checkpoint import CheckpointError

    cfg = resolve_config(ControlConfig, config, set_, resume, dry_run, help_config)
    path = resume or out or default_out("control")
    try:
        result = train_control(cfg, path, resume=resume is not None)
    except (FileExistsError, FileNotFoundError, CheckpointError) as e:
        fail(str(e))
    typer.echo("  ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)))
    typer.echo(f"run: {path}")


def register(app: typer.Typer) -> None:
    """Add the ``control`` command to the ``scorealign`` app."""
    app.command("control")(control_cmd)
