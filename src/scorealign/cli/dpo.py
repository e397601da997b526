"""``scorealign dpo``: offline preference optimization of a causal LM (or, delegated, a diffusion
model) from a YAML config; the options of :mod:`scorealign.commands.dpo`.

A config (or a resumed run's ``config.yaml``) whose top level has ``task: diffusion`` is handed,
unparsed, to :func:`diffusion_dpo_cmd` (Diffusion-DPO, parsed into
:class:`~scorealign.preference.rpo.config.DiffusionDPOConfig`); every other config is parsed
strictly into :class:`~scorealign.preference.config.DPOConfig`.
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


#: the yardsticks a testbed run prints (``commands.kind_finetune.testbed_evaluate``'s keys)
TESTBED_KEYS = ("testbed/reward", "testbed/optimal_reward", "testbed/kl", "testbed/distance",
                "testbed/distance_floor", "base/testbed/reward", "base/testbed/distance")


def diffusion_dpo_cmd(config: Path | None, sets: list[str] | None, out: Path | None,
                      resume: Path | None, dry_run: bool, help_config: bool) -> dict:
    """Diffusion-DPO from a config: run dir, checkpoints, resume, metrics.jsonl, report.html.

    Exits 2 with a message naming the file on a bad config, dataset or base model (the typed
    errors of :func:`~scorealign.commands.dpo.diffusion_dpo`, turned into exit 2 by the app).
    """
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
            keys = TESTBED_KEYS if cfg.base.type == "testbed" else \
                ("eval/accuracy", "eval/label_prob", "eval/fd", "eval/flagged")
            typer.echo(f"{tag}: " + ", ".join(f"{k} {summary[tag][k]:.4f}" for k in keys))
    typer.echo(f"report: {summary['report']}")
    return summary


__all__ = ["config_task", "start_config", "diffusion_dpo_cmd", "register"]
