"""Experiment trackers through accelerate's tracker classes, chosen by a run's ``tracker`` field.

``tracker: none`` (the default) logs only to ``metrics.jsonl``; ``tensorboard`` writes event files
to ``RUN/tracker/`` (offline); ``wandb`` and ``trackio`` log to those services (their own
settings apply, e.g. ``WANDB_MODE=offline``). ``metrics.jsonl`` is always written. Scalars go
through :meth:`RunDir.log`; sample grids are logged when the report is written. Only the main
process logs (accelerate's ``on_main_process``).
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

import yaml

TRACKERS = ("none", "tensorboard", "wandb", "trackio")
_OPEN: dict[Path, Any] = {}


def tracker_kind(config_file: Path) -> str:
    """The ``tracker`` field of a run's config.yaml ("none" when absent or unreadable)."""
    try:
        data = yaml.safe_load(Path(config_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "none"
    kind = data.get("tracker", "none") if isinstance(data, dict) else "none"
    return kind if kind in TRACKERS else "none"


def get_tracker(run_path: Path, kind: str) -> Any | None:
    """The open accelerate tracker of this run (started on first use), or None for ``none``."""
    if kind == "none":
        return None
    run_path = Path(run_path).resolve()
    if run_path in _OPEN:
        return _OPEN[run_path]
    from accelerate import tracking

    name = run_path.name
    if kind == "tensorboard":
        tr = tracking.TensorBoardTracker(name, logging_dir=str(run_path / "tracker"))
    elif kind == "wandb":
        tr = tracking.WandBTracker(name, dir=str(run_path))
    else:
        tr = tracking.TrackioTracker(name)
    tr.start()
    _OPEN[run_path] = tr
    return tr


def log_scalars(run_path: Path, kind: str, values: dict[str, Any], step: int) -> None:
    """Numeric ``values`` at ``step`` to the run's tracker (nothing for ``none``)."""
    tr = get_tracker(run_path, kind)
    if tr is None:
        return
    nums = {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if nums:
        tr.log(nums, step=step)


def log_image_files(run_path: Path, kind: str, paths: list[Path], step: int) -> None:
    """PNG sample grids to the run's tracker under ``samples/<stem>``."""
    tr = get_tracker(run_path, kind)
    if tr is None or not paths:
        return
    import numpy as np
    from PIL import Image

    for p in paths:
        arr = np.asarray(Image.open(p).convert("RGB"))
        if kind == "tensorboard":
            tr.log_images({f"samples/{p.stem}": arr[None]}, step=step, dataformats="NHWC")
        else:
            tr.log_images({f"samples/{p.stem}": [arr]}, step=step)


def close_tracker(run_path: Path) -> None:
    """Flush and close the run's tracker (files complete on disk)."""
    tr = _OPEN.pop(Path(run_path).resolve(), None)
    if tr is not None:
        tr.finish()


@atexit.register
def _close_all() -> None:
    for p in list(_OPEN):
        close_tracker(p)
