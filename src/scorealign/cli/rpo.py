"""``scorealign rpo build-pairs``: the options of :func:`scorealign.commands.rpo.build_pairs`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scorealign.cli.common import CONFIG_OPT, DRY_OPT, HELP_CFG_OPT, OUT_OPT, SET_OPT, resolve_config

rpo_app = typer.Typer(no_args_is_help=True, add_completion=False,
                      help="Rich preference optimization: critique → edit → verify → pairs.")


@rpo_app.command("build-pairs")
def build_pairs_cmd(config: Optional[Path] = CONFIG_OPT, sets: Optional[list[str]] = SET_OPT,
                    out: Optional[Path] = OUT_OPT, dry_run: bool = DRY_OPT,
                    help_config: bool = HELP_CFG_OPT,
                    overwrite: bool = typer.Option(False, "--overwrite",
                                                   help="Replace a complete dataset at --out.")
                    ) -> None:
    """Sample the base model and write pairs.jsonl + PNGs + manifest (configs/rpo/)."""
    from scorealign.commands.rpo import build_pairs
    from scorealign.preference.rpo.config import BuildPairsConfig

    cfg = resolve_config(BuildPairsConfig, config, sets, None, dry_run, help_config)
    path, stats = build_pairs(cfg, out, overwrite=overwrite)
    s = stats.to_dict()
    typer.echo(f"{cfg.method}: {s['kept']} pairs from {s['images']} images "
               f"(flagged {s['flagged']}); findings {s['findings']}; rejections {s['rejections']}")
    typer.echo(f"dataset: {path}")


def register(app: typer.Typer) -> None:
    """Add the ``rpo`` command group to ``app``."""
    app.add_typer(rpo_app, name="rpo")
