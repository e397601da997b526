"""``scorealign finetune``: the options of :func:`scorealign.commands.finetune.finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import (CONFIG_OPT, DRY_OPT, HELP_CFG_OPT, OUT_OPT, RESUME_OPT, SET_OPT,
                                   resolve_config)


def finetune_cmd(config: Optional[Path] = CONFIG_OPT, set_: Optional[list[str]] = SET_OPT,
                 out: Optional[Path] = OUT_OPT, resume: Optional[Path] = RESUME_OPT,
                 dry_run: bool = DRY_OPT, help_config: bool = HELP_CFG_OPT) -> None:
    """RL fine-tuning of a diffusion model toward a reward (REINFORCE, DDPO, LOOP, GRPO, DPOK,
    Score as Action, reward backprop), then before/after samples and a report."""
    from scorealign.commands.finetune import finetune
    from scorealign.rl.config import FinetuneConfig
    cfg = resolve_config(FinetuneConfig, config, set_, resume, dry_run, help_config)
    finetune(cfg, out, resume)  # ends with the before → after table and the report's path


def register(app: typer.Typer) -> None:
    """Add ``finetune`` to the ``scorealign`` app."""
    app.command("finetune")(finetune_cmd)
