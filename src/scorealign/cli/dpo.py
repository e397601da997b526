"""``scorealign dpo``: offline preference optimization of a causal LM (or, delegated, a diffusion
model) from a YAML config.

A config (or a resumed run's ``config.yaml``) whose top level has ``task: diffusion`` is handed,
unparsed, to ``scorealign.cli.diffusion_dpo.diffusion_dpo_cmd`` (Diffusion-DPO); every other config is
parsed strictly into :class:`~scorealign.preference.config.DPOConfig`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from scorealign.cli.common import (CONFIG_OPT, DRY_OPT, HELP_CFG_OPT, OUT_OPT, RESUME_OPT, SET_OPT,
                                   fail, open_run, resolve_config)


def config_task(config: Path | None, resume: Path | None) -> str | None:
    """The top-level ``task`` key of the config (or of ``RESUME/config.yaml``), if any.

    Only peeks: an unreadable file returns None, so that strict parsing reports the error.
    """
    import yaml

    path = Path(resume) / "config.yaml" if resume is not None else config
    if path is None or not Path(path).is_file():
        return None
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError:
        return None
    task = data.get("task") if isinstance(data, dict) else None
    return task if isinstance(task, str) else None


def start_run(schema: type, where: str, config: Path | None, sets: list[str] | None,
              out: Path | None, resume: Path | None, dry_run: bool, help_config: bool):
    """(config, run directory) of a ``dpo`` run, LM or diffusion (``rpo.dpo_cli``): exits 2
    without --config or --resume (``where``: the shipped configs to point to), handles
    --help-config / --dry-run, and prints the run directory."""
    if config is None and resume is None and not help_config:
        fail(f"give --config FILE (see {where}) or --resume RUN_DIR")
    cfg = resolve_config(schema, config, sets, resume, dry_run, help_config)
    run = open_run(cfg, out, resume, "dpo")
    typer.echo(f"run directory: {run.path}")
    return cfg, run


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
        from scorealign.preference.config import DPOConfig
        from scorealign.preference.data import DataError
        from scorealign.preference.trainer import train

        cfg, run = start_run(DPOConfig, "configs/dpo/", config, sets, out, resume, dry_run,
                             help_config)
        try:
            summary = train(cfg, run, resume=resume is not None)
        except DataError as e:
            fail(str(e))
        _report(summary)


def _report(summary: dict) -> None:
    last = summary.get("last", {})
    if last:
        keys = ("loss", "rewards/accuracy", "rewards/margin")
        typer.echo(f"step {last['step']}: " + ", ".join(f"{k} {last[k]:.4f}" for k in keys if k in last))
    for tag in ("eval_start", "eval_end"):
        if tag in summary:
            typer.echo(f"{tag}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary[tag].items()))
