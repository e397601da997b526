"""Shared CLI plumbing: load a config strictly, exit 2 with the message on bad input."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from scorealign.config import ConfigError, describe, dump_config, load_config

# OpenMP threads that busy-wait at barriers collapse when the CPU is shared: the digits UNet
# trained at 0.23 steps/s with 2 spinning threads beside one other busy process, 1.77 with
# passive waiting (1 thread: 2.2). Read by libgomp when torch loads, so set before that; every
# CLI command module imports this one first. An explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CONFIG_OPT = typer.Option(None, "--config", "-c", help="YAML config file, or the name of a shipped "
                          "config (`scorealign configs` lists them), e.g. digits_loop.")
SET_OPT = typer.Option(None, "--set", help="Override a field: --set train.lr=3e-4 (repeatable).")
OUT_OPT = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<command>-<time>).")
RESUME_OPT = typer.Option(None, "--resume", help="Continue the run in this directory.")
DRY_OPT = typer.Option(False, "--dry-run", help="Print the resolved config and exit.")
HELP_CFG_OPT = typer.Option(False, "--help-config", help="List every config field with its help.")


def fail(message: str, code: int = 2) -> None:
    """Print an error to stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def configs_root() -> Path:
    """The shipped configs: ``scorealign/configs`` in an installed wheel (the repository's
    ``configs/``, mapped in at build time by setup.py), else ``configs/`` of this checkout."""
    pkg = Path(__file__).resolve().parents[1]
    installed = pkg / "configs"
    return installed if installed.is_dir() else pkg.parents[1] / "configs"


def shipped_configs() -> dict[str, Path]:
    """``group/name`` → path of every shipped YAML config (``finetune/digits_loop`` ...)."""
    root = configs_root()
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))}


def find_config(config: str | Path, group: str | None = None) -> Path:
    """A config path: an existing file as given, else a shipped config by name.

    ``digits_loop``, ``finetune/digits_loop`` and ``configs/finetune/digits_loop.yaml`` (from a
    directory without the repository's configs/) all resolve; ``group`` (the command) decides
    between equal names in several groups. Raises ConfigError listing the choices otherwise.
    """
    p = Path(config)
    if p.is_file():
        return p
    name = str(p.with_suffix("")) if p.suffix in (".yaml", ".yml") else str(p)
    name = name[len("configs/"):] if name.startswith("configs/") else name
    table = shipped_configs()
    if name in table:
        return table[name]
    hits = [k for k in table if k.rsplit("/", 1)[-1] == name]
    if group is not None and len(hits) > 1:
        hits = [k for k in hits if k.split("/")[0] == group] or hits
    if len(hits) == 1:
        return table[hits[0]]
    if p.suffix in (".yaml", ".yml") or not hits:
        raise ConfigError(f"{config}: config file not found and no shipped config of that name "
                          f"(`scorealign configs` lists them)")
    raise ConfigError(f"{config}: ambiguous config name; one of {sorted(hits)}")


_GROUPS = {"PretrainConfig": "pretrain", "FinetuneConfig": "finetune", "DPOConfig": "dpo",
           "DiffusionDPOConfig": "dpo", "ControlConfig": "control", "BuildPairsConfig": "rpo"}


def resolve_config(schema: type, config: Path | None, sets: list[str] | None,
                   resume: Path | None = None, dry_run: bool = False,
                   help_config: bool = False, group: str | None = None) -> Any:
    """Build the run's config: from ``RESUME/config.yaml`` when resuming, else file + --set.

    Exits 2 on a bad config (message names file:line: field), 0 after --dry-run/--help-config.
    """
    if help_config:
        typer.echo("\n".join(describe(schema)))
        raise typer.Exit(0)
    try:
        if resume is not None:
            cfg_file = Path(resume) / "config.yaml"
            if not cfg_file.is_file():
                fail(f"{cfg_file}: not a run directory (no config.yaml)")
            cfg = load_config(cfg_file, schema, sets or [])
        else:
            group = group or _GROUPS.get(schema.__name__)
            path = find_config(config, group) if config is not None else None
            cfg = load_config(path, schema, sets or [])
    except ConfigError as e:
        fail(str(e))
    if dry_run:
        typer.echo(dump_config(cfg))
        raise typer.Exit(0)
    return cfg


def open_run(cfg: Any, out: Path | None, resume: Path | None, command: str):
    """The run directory: ``resume`` reopened, or a new one at ``out`` (default
    ``runs/<command>-<time>``) holding ``cfg``; exits 2 when it exists already or is missing."""
    from scorealign.run.rundir import RunDir
    try:
        return RunDir.open(resume) if resume else RunDir.create(out or default_out(command), cfg)
    except (FileExistsError, FileNotFoundError) as e:
        fail(str(e))


def default_out(command: str) -> Path:
    """``runs/<command>-YYYYmmdd-HHMMSS``."""
    import time
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


__all__ = ["configs_root", "shipped_configs", "find_config", "CONFIG_OPT", "SET_OPT", "OUT_OPT", "RESUME_OPT", "DRY_OPT", "HELP_CFG_OPT", "fail",
           "resolve_config", "open_run", "default_out"]
