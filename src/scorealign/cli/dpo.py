"""``scorealign dpo``: offline preference optimization of a causal LM (or, delegated, a diffusion
model) from a YAML config; the options of :mod:`scorealign.commands.dpo`.

A config (or a resumed run's ``config.yaml``) whose top level has ``task: diffusion`` is handed,
unparsed, to ``scorealign.cli.diffusion_dpo.diffusion_dpo_cmd`` (Diffusion-DPO); every other config is
parsed strictly into :class:`~scorealign.preference.config.DPOConfig`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from scorealign.cli.common import (CONFIG_OPT, DRY_OPT, HELP_CFG_OPT, OUT_OPT, RESUME_OPT, SET_OPT,
                                   fail, resolve_config)
from scorealign.commands.dpo import LM_CONFIGS, config_task, require_config
from scorealign.errors import UsageError


def start_config(schema: type, where: str, config: Path | None, sets: list[str] | None,
                 resume: Path | None, dry_run: bool, help_config: bool):
    """The config of a ``dpo`` run, LM or diffusion: exits 2 without --config or --resume
    (``where``: the shipped configs to point to), handles --help-config / --dry-run."""
    if not help_config:
        try:
            require_config(config, resume, where)
        except UsageError as e:
            fail(e)
    return resolve_config(schema, config, sets, resume, dry_run, help_config)


def register(app: typer.Typer) -> None:
    """Add the ``dpo`` command to ``app``."""

    @app.command("dpo")
    def dpo(config: Path = CONFIG_OPT, sets: list[str] = SET_OPT, out: Path = OUT_OPT,
            resume: Path = RESUME_OPT, dry_run: bool = DRY_OPT,
            help_config: bool = HELP_CFG_OPT) -> None:
        """Train with DPO / IPO / SimPO / ORPO / KTO / RainbowPO / Mallows-DPO (configs/dpo/)."""
        if config_task(config, resume) == "diffusion":
            from scorealign.cli.diffusion_dpo import diffusion_dpo_cmd

            diffusion_dpo_cmd(config, list(sets or []), out, resume, dry_run, help_config)
            return
        from scorealign.commands.dpo import lm_dpo
        from scorealign.preference.config import DPOConfig

        cfg = start_config(DPOConfig, LM_CONFIGS, config, sets, resume, dry_run, help_config)
        _report(lm_dpo(cfg, out, resume, say=typer.echo))


def _report(summary: dict) -> None:
    last = summary.get("last", {})
    if last:
        keys = ("loss", "rewards/accuracy", "rewards/margin")
        typer.echo(f"step {last['step']}: " + ", ".join(f"{k} {last[k]:.4f}" for k in keys if k in last))
    for tag in ("eval_start", "eval_end"):
        if tag in summary:
            typer.echo(f"{tag}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary[tag].items()))


__all__ = ["config_task", "start_config", "register"]
