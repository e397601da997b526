"""Shared CLI plumbing: the options every training command takes, ``--help-config`` and
``--dry-run``, and the one place that turns an error into ``error: <one line>`` and exit 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import typer

# OpenMP threads that busy-wait at barriers collapse when the CPU is shared: the digits UNet
# trained at 0.23 steps/s with 2 spinning threads beside one other busy process, 1.77 with
# passive waiting (1 thread: 2.2). Read by libgomp when torch loads, so set before that; every
# CLI command module imports this one first. An explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scorealign.config import describe, dump_config  # noqa: E402
from scorealign.errors import ScorealignError  # noqa: E402

CONFIG_OPT = typer.Option(None, "--config", "-c", help="YAML config file, or the name of a shipped "
                          "config (`scorealign configs` lists them), e.g. digits_loop.")
SET_OPT = typer.Option(None, "--set", help="Override a field: --set train.lr=3e-4 (repeatable).")
OUT_OPT = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<command>-<time>).")
RESUME_OPT = typer.Option(None, "--resume", help="Continue the run in this directory.")
DRY_OPT = typer.Option(False, "--dry-run", help="Print the resolved config and exit.")
HELP_CFG_OPT = typer.Option(False, "--help-config", help="List every config field with its help, "
                            "then the registered names (rewards, samplers, losses, ...).")


def fail(message: str | BaseException, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` (one line) to stderr and exit ``code``."""
    typer.secho(f"error: {' '.join(str(message).split())}", fg="red", err=True)
    raise typer.Exit(code)


#: the registries whose names a command's config fields take: (label, module, registry or a
#: function listing names, the packages whose import registers every entry); ``--help-config``
_SAMPLERS = ("samplers (*.sampler, sample --sampler)", "scorealign.samplers.steps", "SAMPLERS",
             ("scorealign.samplers",))
_SDES = ("SDEs", "scorealign.sde.base", "SDES", ("scorealign.sde",))
_GRIDS = ("time grids (*.grid)", "scorealign.samplers.grids", "GRIDS", ("scorealign.samplers",))
_PAIRWISE = ("pairwise losses (loss.link)", "scorealign.preference.losses", "PAIRWISE",
             ("scorealign.preference",))
REGISTRIES: dict[str, tuple[tuple[str, str, str, tuple[str, ...]], ...]] = {
    "FinetuneConfig": (
        ("rewards (reward.optimized, reward.gold)", "scorealign.rewards.base", "REWARDS",
         ("scorealign.rewards",)),
        ("losses (algo.loss)", "scorealign.rl.losses", "RL_LOSSES", ("scorealign.rl",)),
        ("advantages (algo.advantage)", "scorealign.rl.advantages", "ADVANTAGES",
         ("scorealign.rl",)),
        ("update kinds", "scorealign.rl.update_kinds", "UPDATE_KINDS", ("scorealign.rl",)),
        _SAMPLERS, _SDES, _GRIDS),
    "PretrainConfig": (
        ("datasets (data.name)", "scorealign.data.toys", "DATASETS", ("scorealign.data",)),
        ("DSM weightings (train.weighting)", "scorealign.sde.dsm", "WEIGHTINGS",
         ("scorealign.sde",)),
        _SDES, _SAMPLERS, _GRIDS),
    "DPOConfig": (("objectives (loss.name)", "scorealign.preference.objectives", "names",
                   ("scorealign.preference",)),),
    "DiffusionDPOConfig": (_PAIRWISE, _SAMPLERS, _SDES),
    "BuildPairsConfig": (_SAMPLERS,),
    "ControlConfig": (
        ("algorithms (algo.name)", "scorealign.control.algorithms", "ALGOS",
         ("scorealign.control.algorithms",)),
        ("environments (env.name)", "scorealign.control.envs", "ENVS",
         ("scorealign.control.envs",))),
}


def registered_names(schema: type) -> list[str]:
    """``--help-config``'s closing lines: the names registered in each registry that ``schema``'s
    fields take (read from the registries, so a newly registered entry is listed)."""
    import importlib
    import textwrap

    out = []
    for label, module, attr, packages in REGISTRIES.get(schema.__name__, ()):
        for pkg in packages:
            importlib.import_module(pkg)
        found = getattr(importlib.import_module(module), attr)  # a Registry, or names()
        names = ", ".join(sorted(found() if callable(found) else found))
        out += textwrap.wrap(f"{label}: {names}", width=100, subsequent_indent="    ",
                             break_on_hyphens=False)
    return ["", "registered names:"] + out if out else []


def resolve_config(schema: type, config: Path | None, sets: list[str] | None,
                   resume: Path | None = None, dry_run: bool = False,
                   help_config: bool = False, group: str | None = None) -> Any:
    """The run's config (:func:`scorealign.commands.common.resolve_config`), with the CLI's
    ``--help-config`` (lists the fields, exit 0) and ``--dry-run`` (prints the config, exit 0).
    Exits 2 on a bad config (the message names file:line: field)."""
    from scorealign.commands.common import resolve_config as resolve
    if help_config:
        typer.echo("\n".join(describe(schema) + registered_names(schema)))
        raise typer.Exit(0)
    try:
        cfg = resolve(schema, config, sets, resume, group)
    except ScorealignError as e:
        fail(e)
    if dry_run:
        typer.echo(dump_config(cfg))
        raise typer.Exit(0)
    return cfg


__all__ = ["CONFIG_OPT", "SET_OPT", "OUT_OPT", "RESUME_OPT", "DRY_OPT", "HELP_CFG_OPT", "fail",
           "registered_names", "resolve_config", "REGISTRIES"]
