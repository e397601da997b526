"""``scorealign pretrain``: the options of :func:`scorealign.commands.pretrain.pretrain`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import (CONFIG_OPT, DRY_OPT, HELP_CFG_OPT, OUT_OPT, RESUME_OPT, SET_OPT,
                                   resolve_config)


def pretrain_cmd(config: Optional[Path] = CONFIG_OPT, set_: Optional[list[str]] = SET_OPT,
                 out: Optional[Path] = OUT_OPT, resume: Optional[Path] = RESUME_OPT,
                 dry_run: bool = DRY_OPT, help_config: bool = HELP_CFG_OPT) -> None:
    """Pretrain a diffusion model by denoising score matching, then sample, evaluate, report."""
    from scorealign.commands.pretrain import pretrain
    from scorealign.train.pretrain import PretrainConfig
    cfg = resolve_config(PretrainConfig, config, set_, resume, dry_run, help_config)
    pretrain(cfg, out, resume, say=typer.echo)


def register(app: typer.Typer) -> None:
    """Add ``pretrain`` to the ``scorealign`` app."""
    app.command("pretrain")(pretrain_cmd)
