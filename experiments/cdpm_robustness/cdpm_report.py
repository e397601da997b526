"""Tables (markdown), CSV/JSON and the figure of the CDPM robustness experiment."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FAMILY_ORDER = ("ve", "vp", "subvp", "cou", "csubvp")
METRIC = {"2d": ("sw2", "sliced W2 ↓"), "digits": ("fd", "classifier FD ↓")}


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return "div." if not math.isfinite(v) else f"{v:.{digits}f}"


def _pivot(rows: list[dict], part: str, key: str) -> tuple[list[str], list[str], dict]:
    """(models, conditions, {(model, condition): value}) of one part."""
    cells = {(r["model"], r["condition"]): r.get(key) for r in rows
             if r["part"] == part and r["model"] != "data"}
    models = list(dict.fromkeys(m for m, _ in cells))
    conds = list(dict.fromkeys(c for _, c in cells))
    return models, conds, cells


def markdown_table(rows: list[dict], part: str, key: str, conds: list[str]) -> str:
    """Models × conditions; the best trained family per column in bold."""
    models, _, cells = _pivot(rows, part, key)
    head = "| model | " + " | ".join(c.replace("@", " @") for c in conds) + " |"
    lines = [head, "|" + "---|" * (len(conds) + 1)]
    best = {}
    for c in conds:
        vals = [(cells.get((m, c)), m) for m in FAMILY_ORDER if (m, c) in cells]
        vals = [(v, m) for v, m in vals if v is not None and math.isfinite(v)]
        best[c] = min(vals)[1] if vals else None
    for m in models:
        vals = [(f"**{_fmt(cells.get((m, c)))}**" if best[c] == m else _fmt(cells.get((m, c))))
                for c in conds]
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def tables(rows: list[dict], meta: dict) -> str:
    """All markdown tables: per part, an error sweep, a step sweep (and digits accuracy)."""
    out = []
    for part in ("2d", "digits"):
        if not any(r["part"] == part for r in rows):
            continue
        key, label = METRIC[part]
        floor = next(r[key] for r in rows if r["part"] == part and r["model"] == "data")
        _, conds, _ = _pivot(rows, part, key)
        clean = [c for c in conds if c.startswith("clean")]
        err = [c for c in conds if not c.startswith("clean")]
        ref = [c for c in clean if c.endswith(f"@{_err_steps(rows, part)}karras")]
        out.append(f"### {part}: {label} under injected error "
                   f"(data-vs-data floor {floor:.3f})\n\n"
                   + markdown_table(rows, part, key, ref + err))
        out.append(f"### {part}: {label} against the number of Euler–Maruyama steps (no injected "
                   f"error)\n\n{markdown_table(rows, part, key, clean)}")
        if part == "digits":
            out.append("### digits: class accuracy ↑ of the class-conditional samples\n\n"
                       + markdown_table_max(rows, part, "accuracy", ref + err))
    return "\n\n".join(out) + "\n"


def markdown_table_max(rows: list[dict], part: str, key: str, conds: list[str]) -> str:
    """Like :func:`markdown_table` for a higher-is-better metric (negated for the ranking)."""
    neg = [{**r, key: -r[key]} if isinstance(r.get(key), float) else r for r in rows]
    return markdown_table(neg, part, key, conds).replace("**-", "**").replace("| -", "| ")


def _err_steps(rows: list[dict], part: str) -> int:
    return next(r["steps"] for r in rows if r["part"] == part and r.get("delta", 0) > 0)


def figure(rows: list[dict], path: Path) -> None:
    """Metric vs δ (score bias, eps bias) and vs steps, one line per trained family."""
    parts = [p for p in ("2d", "digits") if any(r["part"] == p for r in rows)]
    fig, axes = plt.subplots(len(parts), 3, figsize=(12, 3.3 * len(parts)), squeeze=False)
    for i, part in enumerate(parts):
        key, label = METRIC[part]
        steps = _err_steps(rows, part)
        for fam in FAMILY_ORDER:
            rs = [r for r in rows if r["part"] == part and r["model"] == fam]
            clean = next((r[key] for r in rs if r["delta"] == 0 and r["steps"] == steps
                          and r["grid"] == "karras"), None)
            for j, space in enumerate(("score", "eps")):
                pts = [(0.0, clean)] + sorted((r["delta"], r[key]) for r in rs
                                              if r["space"] == space and r["kind"] == "bias")
                axes[i, j].plot(*zip(*pts), "o-", label=fam)
            for grid, style in (("uniform", "o-"), ("karras", "s--")):
                pts = sorted((r["steps"], r[key]) for r in rs if r["delta"] == 0
                             and r["grid"] == grid)
                if pts:
                    axes[i, 2].plot(*zip(*pts), style, color=axes[i, 0].lines[-1].get_color(),
                                    label=f"{fam} ({grid})" if grid == "uniform" else None)
        titles = ("absolute score bias δ", "ε-space bias δ (score bias δ/s(t))",
                  "steps (solid: uniform t, dashed: karras)")
        for j, ax in enumerate(axes[i]):
            ax.set_title(f"{part}: {titles[j]}", fontsize=9)
            ax.set_ylabel(label, fontsize=8)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[i, 2].set_xscale("log")
        axes[i, 0].legend(fontsize=7)
    save_png(fig, path, dpi=72)


def save_png(fig, path: Path, dpi: int) -> None:
    """``fig.tight_layout()``, then save as ``path`` atomically (a temporary name, then a rename)
    and close it; used by every figure of this experiment."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(rows: list[dict], meta: dict, results: Path) -> None:
    """results.json (rows + meta), results.csv, table.md and cdpm_robustness.png."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(results / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (results / "table.md").write_text(tables(rows, meta))
    figure(rows, results / "cdpm_robustness.png")
