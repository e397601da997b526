"""Cached experiment cells: one JSON file per cell, written atomically, skipped when present.

A cell is one unit of an experiment grid (method × learning rate × seed, ...). ``cached`` runs
``compute`` only when the cell's file is missing, so a stopped sweep continues where it stopped
and ``--table-only`` rebuilds can read the same files. Used by experiments/rl_sample_efficiency,
experiments/ct_rl_dt_robustness and experiments/cdpm_robustness/digits_horizon.py.
:func:`map_jobs` runs a list of cells in this process or over worker processes.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np


def portable_path(path: Path) -> str:
    """``path`` relative to the repository (committed results hold no machine paths); a path
    outside it is reduced to its name."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return Path(path).name


def _numpy_scalar(o):
    """numpy scalars as Python numbers (``json.dumps`` default)."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file, then a rename); numpy
    scalars are written as numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, default=_numpy_scalar))
    tmp.replace(path)


def cached(path: Path, compute: Callable[[], dict], cpu_key: str | None = None) -> dict:
    """The cell stored at ``path``, else ``compute()`` stored there first.

    Args:
        path: the cell's JSON file.
        compute: runs the cell and returns its JSON-serialisable dict.
        cpu_key: if given, the process CPU seconds of ``compute`` are stored under this key
            (``time.process_time``: the machine is shared, wall time is not the cost).
    """
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.process_time()
    cell = compute()
    if cpu_key is not None:
        cell[cpu_key] = round(time.process_time() - t0, 2)
    write_json(path, cell)
    return cell


def map_jobs(fn: Callable, jobs: list, n: int, chunksize: int = 1) -> list:
    """``[fn(j) for j in jobs]``: in this process for ``n`` ≤ 1, else over ``n`` worker processes
    (``ProcessPoolExecutor.map``, ``chunksize`` jobs a task; results in job order; ``fn`` and the
    jobs must pickle)."""
    if n <= 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(n) as pool:
        return list(pool.map(fn, jobs, chunksize=chunksize))


def ci95(x) -> tuple[float, float]:
    """(mean, half-width of the 95 % t-interval) of the finite values; NaN half-width for one."""
    from scipy.stats import t

    a = np.asarray(list(x), dtype=float)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return float("nan"), float("nan")
    if len(a) == 1:
        return float(a[0]), float("nan")
    return float(a.mean()), float(t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))


def fmt_ci(ci: tuple[float, float], d: int = 4) -> str:
    """``mean ± half-width`` of a :func:`ci95`-style pair with ``d`` decimals; the mean alone
    when the half-width is not finite (one value), ``n/a`` when the mean is not."""
    m, h = ci
    if not math.isfinite(m):
        return "n/a"
    return f"{m:.{d}f}" + (f" ± {h:.{d}f}" if math.isfinite(h) else "")
