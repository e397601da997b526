"""``scorealign control``: the options of :func:`scorealign.commands.control.control`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import (CONFIG_OPT, DRY_OPT, HELP_CFG_OPT, OUT_OPT, RESUME_OPT, SET_OPT,
                                   resolve_config)


def control_cmd(config: Optional[Path] = CONFIG_OPT, set_: Optional[list[str]] = SET_OPT,
                out: Optional[Path] = OUT_OPT, resume: Optional[Path] = RESUME_OPT,
                dry_run: bool = DRY_OPT, help_config: bool = HELP_CFG_OPT) -> None:
    """Train a policy on a controlled SDE (ct_pg, ct_trpo, ct_ppo[_penalty]; dt_pg, dt_ppo)."""
    from scorealign.commands.control import control
    from scorealign.control.train import ControlConfig
    cfg = resolve_config(ControlConfig, config, set_, resume, dry_run, help_config)
    control(cfg, out, resume, say=typer.echo)


def register(app: typer.Typer) -> None:
    """Add the ``control`` command to the ``scorealign`` app."""
    app.command("control")(control_cmd)
