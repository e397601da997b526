"""Run directories: config.yaml, metrics.jsonl, checkpoints/, samples/, plots/, report.html.

Every command that trains or evaluates writes one. ``RunDir.create(path, cfg, kind=...)`` records
the command's run kind in ``run.json`` (``{"kind": "finetune"}``, written atomically), which
``scorealign.commands.kinds.kind_of`` reads back; run directories of older releases have no
``run.json`` and are recognized by their config's keys. ``RunDir.create`` refuses to overwrite a run
that already has checkpoints unless asked to resume; ``RunDir.open`` reopens one for ``--resume``.
Metrics are appended one JSON object per line and flushed, so a killed run keeps what it logged;
on resume, lines logged after the checkpoint being resumed are dropped so the log is not doubled.

The run directory is the record of the configuration the run trained with: ``--set`` overrides
given with ``--resume`` are written into ``config.yaml`` (atomically, :meth:`RunDir.record_config`)
and each change is appended to ``overrides.jsonl`` (``{"time": ..., "changed": {"train.epochs":
[4, 6]}}``), so ``eval``, ``report``, ``export`` and the next ``--resume`` read the same values.
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import json
import math
import os
from pathlib import Path
from typing import Any

from scorealign.config import dump_config


RUN_RECORD = "run.json"
OVERRIDES = "overrides.jsonl"


class RunDirError(ScorealignError, OSError):
    """A run directory that cannot be created or written; the message names the path."""


def _refuse_package_dir(path: Path) -> None:
    """Runs never go inside the installed package (its assets are read-only inputs)."""
    pkg = Path(__file__).resolve().parents[1]  # the scorealign package
    try:
        Path(path).resolve().relative_to(pkg)
    except ValueError:
        return
    raise RunDirError(f"--out {path}: inside the installed package {pkg}; choose another --out")


class RunDir:
    """A run directory and its standard files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"
        self.plots = self.path / "plots"
        self.metrics_file = self.path / "metrics.jsonl"
        self.config_file = self.path / "config.yaml"
        self.record_file = self.path / RUN_RECORD
        self.overrides_file = self.path / OVERRIDES
        self._tracker: str | None = None

    @classmethod
    def create(cls, path: str | Path, cfg: Any, kind: str | None = None) -> "RunDir":
        """Make a new run directory and write the resolved config into it; ``kind`` (the
        command's run kind, e.g. ``"finetune"``) is recorded in ``run.json``."""
        run = cls(path)
        if run.checkpoints.exists() and any(run.checkpoints.iterdir()):
            raise FileExistsError(f"{run.path} already holds a run with checkpoints; "
                                  f"use --resume {run.path} to continue it or choose another --out")
        _refuse_package_dir(run.path)
        try:
            for d in (run.path, run.checkpoints, run.samples, run.plots):
                d.mkdir(parents=True, exist_ok=True)
            run.config_file.write_text(dump_config(cfg))
            run.metrics_file.write_text("")
            if kind is not None:
                from scorealign.run.atomic import write_json
                write_json(run.record_file, {"kind": kind})
        except OSError as e:
            raise RunDirError(f"--out {run.path}: cannot create the run directory "
                              f"({e.strerror or e}{': ' + str(e.filename) if e.filename else ''})"
                              ) from None
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """Open an existing run directory (for resume, sample, eval, report)."""
        run = cls(path)
        if not run.config_file.is_file():
            raise FileNotFoundError(f"{run.config_file}: not a run directory (no config.yaml)")
        return run  # creates nothing: a read-only model directory stays untouched

    def record_config(self, cfg: Any) -> dict[str, list[Any]]:
        """Make ``config.yaml`` say ``cfg`` (the config a resumed run continues with).

        When a field differs from the recorded config, ``config.yaml`` is rewritten atomically
        and one line ``{"time", "changed": {dotted field: [old, new]}}`` is appended to
        ``overrides.jsonl``. Returns the changes (empty: nothing written).
        """
        import time

        import yaml

        from scorealign.run.atomic import write_text
        text = dump_config(cfg)
        try:
            old = yaml.safe_load(self.config_file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            old = {}
        old, new = _flat(old), _flat(yaml.safe_load(text) or {})
        changed = {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys())
                   if old.get(k) != new.get(k)}
        if changed:
            write_text(self.config_file, text)
            line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changed": changed}
            with open(self.overrides_file, "a") as f:
                f.write(json.dumps(line, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return changed

    @property
    def kind(self) -> str | None:
        """The run kind recorded in ``run.json`` by :meth:`create`; None when none was recorded
        (a run of an older release, or a broken record)."""
        try:
            data = json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            return None
        kind = data.get("kind") if isinstance(data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def base(self) -> dict[str, Any] | None:
        """The base model recorded in ``run.json`` by :meth:`record_base` (None: none)."""
        try:
            data = json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            return None
        base = data.get("base") if isinstance(data, dict) else None
        return base if isinstance(base, dict) else None

    def record_base(self, base: dict[str, Any]) -> None:
        """Record the run's base model (``{"type", "source": builtin | local | hub | scorealign,
        ...}``) in ``run.json`` beside the kind, atomically."""
        from scorealign.run.atomic import write_json
        try:
            data = json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            data = {}
        data = data if isinstance(data, dict) else {}
        data["base"] = base
        write_json(self.record_file, data)

    def log(self, step: int, **metrics: Any) -> None:
        """Append one metrics line ``{"step": step, ...}`` (floats rounded to 6 significant digits)."""
        row = {"step": step}
        for k, v in metrics.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and math.isfinite(v):
                v = float(f"{v:.6g}")
            row[k] = v
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tracker != "none":
            from scorealign.run.trackers import log_scalars
            log_scalars(self.path, self.tracker, row, step)

    @property
    def tracker(self) -> str:
        """The config's ``tracker`` (none | tensorboard | wandb | trackio), read once."""
        if self._tracker is None:
            from scorealign.run.trackers import tracker_kind
            self._tracker = tracker_kind(self.config_file)
        return self._tracker

    def read_metrics(self) -> list[dict[str, Any]]:
        """All metric rows; a torn last line (killed mid-write) is skipped."""
        rows = []
        if not self.metrics_file.is_file():
            return rows
        for line in self.metrics_file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def truncate_metrics(self, after_step: int) -> None:
        """Drop rows logged after ``after_step`` (the step of the checkpoint being resumed)."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        tmp = self.metrics_file.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.metrics_file)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 4}}`` → ``{"train.epochs": 4}`` (lists stay values)."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
