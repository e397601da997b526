"""The run-kind registry: one :class:`RunKind` record per command that writes a run directory.

``scorealign.load``, ``sample``, ``eval``, ``export`` and ``report`` look a run's kind up once
(:func:`kind_of`) and call its record, so adding a run kind is one record (registered with
:func:`register_kind`) and one command module that writes ``RunDir.create(out, cfg, kind=NAME)``.

The kind is what the run directory recorded in ``run.json``; a run directory written by an older
release has none and is recognized by its ``config.yaml``'s top-level keys (each record's
``detect``), in registration order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from scorealign.errors import ExportError, RunNotFoundError
from scorealign.registry import Registry
from scorealign.run.rundir import RunDir


@dataclass(frozen=True)
class SampleRequest:
    """What ``scorealign sample`` asks of a run (None: the run's own setting)."""

    prompts: Optional[list[str]] = None
    n: int = 10
    sampler: Optional[str] = None
    steps: Optional[int] = None
    eta: Optional[float] = None
    guidance: Optional[float] = None
    seed: int = 0
    out: Optional[Path] = None


@dataclass(frozen=True)
class Sampled:
    """The file a sample command wrote, and the lines it reports (dpo: the completions)."""

    path: Path
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalRequest:
    """What ``scorealign eval`` asks of a run (None: the run's own setting)."""

    sampler: Optional[str] = None
    steps: Optional[int] = None
    eta: Optional[float] = None
    guidance: Optional[float] = None
    n: Optional[int] = None


def _default_report(run_dir: Path, title: Optional[str] = None) -> Path:
    from scorealign.report.html import write_report
    return write_report(run_dir, title=title)


def _never(config: dict) -> bool:
    return False


@dataclass(frozen=True)
class RunKind:
    """How to use the run directories of one command.

    Attributes:
        name: the kind recorded in ``run.json`` (the command's name, e.g. ``"finetune"``).
        schema: the command's config dataclass (``config.yaml`` is read as it).
        load: ``(run_dir, device) -> Loaded``: the trained model, ready to use.
        sample: ``(loaded, SampleRequest) -> Sampled``: write samples to a file.
        evaluate: ``(loaded, EvalRequest) -> (metrics, sampling config or None)``.
        export: ``(run_dir, dest, checkpoint) -> dest``: the model in its ecosystem's format.
        report: ``(run_dir, title) -> report.html``.
        detect: ``config dict -> bool``: whether an older run (no ``run.json``) is of this kind.
        draw: ``(loaded, prompts, n, seed, base) -> samples``: ``Loaded.sample`` (None: the
            kind has nothing to draw from prompts).
    """

    name: str
    schema: type
    load: Callable[[Path, str], Any]
    sample: Callable[[Any, SampleRequest], Sampled]
    evaluate: Callable[[Any, EvalRequest], tuple[dict, Any]]
    export: Callable[[Path, Path, Any], Path]
    report: Callable[..., Path] = _default_report
    detect: Callable[[dict], bool] = _never
    draw: Optional[Callable[..., Any]] = field(default=None)


KINDS = Registry("run kind")
# the records of the built-in commands, in the order their configs are told apart
BUILTIN_MODULES = ("scorealign.commands.kind_diffusion_dpo", "scorealign.commands.kind_finetune",
                   "scorealign.commands.kind_pretrain", "scorealign.commands.kind_dpo",
                   "scorealign.commands.kind_control")
_loaded_builtins = False


def _builtins() -> None:
    global _loaded_builtins
    if _loaded_builtins:
        return
    _loaded_builtins = True
    for name in BUILTIN_MODULES:
        rec = importlib.import_module(name).RECORD
        if rec.name not in KINDS:
            KINDS[rec.name] = rec


def register_kind(record: RunKind) -> RunKind:
    """Add ``record`` to the registry; a name registered twice is an error."""
    _builtins()
    if record.name in KINDS:
        raise ValueError(f"run kind {record.name!r} registered twice")
    KINDS[record.name] = record
    return record


def unregister_kind(name: str) -> None:
    """Remove a registered kind (tests of a toy kind)."""
    KINDS.pop(name, None)


def run_kinds() -> tuple[str, ...]:
    """The registered kinds' names."""
    _builtins()
    return tuple(KINDS)


def get_kind(name: str) -> RunKind:
    """The record of kind ``name``; an unknown name is an ExportError listing the known ones."""
    _builtins()
    if name not in KINDS:
        raise ExportError(f"unknown run kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def detect_kind(config_file: Path) -> str:
    """The kind of an older run directory (no ``run.json``), from its config's top-level keys.

    Raises:
        ExportError: invalid YAML, or a config of no known command.
    """
    _builtins()
    try:
        data = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as e:
        raise ExportError(f"{config_file}: invalid YAML: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{config_file}: top level must be a mapping")
    for rec in KINDS.values():
        if rec.detect(data):
            return rec.name
    raise ExportError(f"{config_file}: not a config of any scorealign command (top-level keys "
                      f"{sorted(data)})")


def kind_of(run_dir: str | Path) -> str:
    """The kind of ``run_dir``: recorded in ``run.json``, else detected from ``config.yaml``.

    Raises:
        RunNotFoundError: no config.yaml; ExportError: an unknown or undetectable kind.
    """
    run = RunDir(run_dir)
    if not run.config_file.is_file():
        raise RunNotFoundError(f"{run.config_file}: not a run directory (no config.yaml)")
    recorded = run.kind
    if recorded is not None:
        return get_kind(recorded).name
    return detect_kind(run.config_file)


def record_of(run_dir: str | Path) -> RunKind:
    """The record of ``run_dir``'s kind (:func:`kind_of` then :func:`get_kind`)."""
    return get_kind(kind_of(run_dir))


__all__ = ["RunKind", "SampleRequest", "Sampled", "EvalRequest", "KINDS", "register_kind",
           "unregister_kind", "run_kinds", "get_kind", "detect_kind", "kind_of", "record_of"]
