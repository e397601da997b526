"""Sample grids and metric plots as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def _atomic_savefig(fig: plt.Figure, path: Path, dpi: int = 110) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1, upscale: int = 4) -> np.ndarray:
    """Tile images [N,C,H,W] in [-1,1] into one uint8 array [H', W', C] (nearest upscaling)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    ncol = max(1, nrow)
    nrows = (n + ncol - 1) // ncol
    canvas = torch.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h,
               pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
    arr = canvas.permute(1, 2, 0).numpy()
    if upscale > 1:
        arr = arr.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return arr


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 10, upscale: int = 4) -> Path:
    """Write a PNG grid of images [N,C,H,W] in [-1,1]; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image_grid(images, nrow, upscale=upscale)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    img.save(tmp)
    os.replace(tmp, path)
    return path


def save_grid_rows(grid: str | Path, rows: Sequence[str]) -> Path:
    """Record the prompt of each row of the sample grid ``grid`` (``NAME.png``) beside it as
    ``NAME.json`` ``{"rows": [...]}``, so the report labels the rows; returns that path."""
    import json
    path = Path(grid).with_suffix(".json")
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.json")
    tmp.write_text(json.dumps({"rows": [str(r) for r in rows]}))
    os.replace(tmp, path)
    return path


def grid_rows(grid: str | Path) -> list[str] | None:
    """The row prompts recorded by :func:`save_grid_rows` for ``grid``, or None."""
    import json
    path = Path(grid).with_suffix(".json")
    try:
        rows = json.loads(path.read_text()).get("rows")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(r) for r in rows] if isinstance(rows, list) and rows else None


def label_grid_rows(grid: str | Path, rows: Sequence[str], out: str | Path) -> Path:
    """The grid image ``grid`` with each of its ``len(rows)`` equal-height rows labelled by its
    prompt on the left (a new PNG at ``out``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img = np.asarray(Image.open(grid).convert("RGB"))
    h, w = img.shape[:2]
    n = len(rows)
    label_w = 0.09 * max(len(r) for r in rows)  # inches of text at 8 pt, roughly
    fig, ax = plt.subplots(figsize=(w / 110 + label_w, max(h / 110, 0.25 * n)))
    ax.imshow(img, interpolation="nearest")
    ax.set_yticks([(i + 0.5) * h / n for i in range(n)], labels=list(rows), fontsize=8)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    _atomic_savefig(fig, out)
    return out


def save_scatter(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None,
                 title: str = "") -> Path:
    """Scatter plot of 2-D samples [N,2], optionally over reference samples."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 4))
    if reference is not None:
        r = reference.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, alpha=0.3, c="tab:gray", label="data")
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5, c="tab:blue", label="samples")
    ax.set_aspect("equal")
    if reference is not None:  # frame the data; a few far-off samples must not shrink the view
        lo, hi = r.min(0), r.max(0)
        pad = 0.25 * (hi - lo).max()
        lo, hi = lo - pad, hi + pad
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        outside = int((~((p >= lo) & (p <= hi)).all(1)).sum())
        if outside:
            title = f"{title}  ({outside} of {len(p)} samples outside the view)".strip()
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    _atomic_savefig(fig, path)
    return path


def constant_series(rows: Sequence[dict], keys: Sequence[str], rtol: float = 1e-9
                    ) -> dict[str, float]:
    """Keys whose logged values never change (within ``rtol`` of their scale): key → value.

    A ratio that is identically 1 or a loss that stays at 1e-10 carries no information as a
    curve; the report lists them instead of plotting them.
    """
    out = {}
    for k in keys:
        y = np.array([r[k] for r in rows if isinstance(r.get(k), (int, float))], dtype=float)
        y = y[np.isfinite(y)]
        if len(y) and np.ptp(y) <= rtol * max(1.0, float(np.abs(y).max())):
            out[k] = float(y[-1])
    return out


def plot_metrics(rows: Sequence[dict], keys: Sequence[str], path: str | Path, title: str = "",
                 smooth: int = 1, logy: bool = False, x_key: str = "step",
                 xlabel: str | None = None, ylabel: str | None = None) -> Path | None:
    """Plot metric ``keys`` against ``x_key`` (default ``step``) from metrics rows.

    Returns None when no key has data or every series is constant (see
    :func:`constant_series`). ``logy`` applies only when every plotted value is positive.
    """
    path = Path(path)
    series = {}
    const = constant_series(rows, keys)
    for k in keys:
        pts = [(r[x_key], r[k]) for r in rows if isinstance(r.get(k), (int, float))
               and isinstance(r.get(x_key), (int, float))]
        if pts:
            series[k] = np.array(pts, dtype=float)
    if not series or all(k in const for k in series):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for k, pts in series.items():
        x, y = pts[:, 0], pts[:, 1]
        if smooth > 1:  # trailing mean over up to `smooth` points: the curve keeps its start
            c = np.cumsum(np.concatenate([[0.0], y]))
            lo = np.maximum(np.arange(len(y)) + 1 - smooth, 0)
            y = (c[1:] - c[lo]) / (np.arange(len(y)) + 1 - lo)
        ax.plot(x, y, label=k, marker="o" if len(x) < 12 else None, ms=3)
    ax.set_xlabel(xlabel or x_key)
    if ylabel:
        ax.set_ylabel(ylabel)
    if logy and all((pts[:, 1] > 0).all() for pts in series.values()):  # RL surrogates go negative
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _atomic_savefig(fig, path)
    return path


def plot_step_kl(rows: Sequence[dict], path: str | Path) -> Path | None:
    """Bar chart of the per-action-step KL ``kl/step/NN`` of the last row that logs it (and, in
    grey, of the first), against the step index on the sampler grid; None without such keys."""
    import re

    logged = [r for r in rows if any(re.match(r"kl/step/\d+$", k) for k in r)]
    if not logged:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for r, color, label in ((logged[0], "tab:gray", "first"), (logged[-1], "tab:blue", "last")):
        ks = sorted((int(k.rsplit("/", 1)[1]), float(v)) for k, v in r.items()
                    if re.match(r"kl/step/\d+$", k) and isinstance(v, (int, float)))
        if not ks:
            continue
        idx, val = zip(*ks)
        ax.bar(np.array(idx) + (0.2 if label == "last" else -0.2), val, width=0.4, color=color,
               label=f"{label} logged (step {r['step']})")
    ax.set_xlabel("action step k on the sampler grid (0 = first, from noise)")
    ax.set_ylabel("KL to the base (nats)")
    ax.set_title("per-step KL")
    ax.legend(fontsize=7)
    _atomic_savefig(fig, path)
    return path
