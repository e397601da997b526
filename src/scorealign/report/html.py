"""``report.html`` for a run directory: one self-contained file a person can read and share.

Top to bottom: a summary line (reward before → after, gold reward, KL to the base, wall time; or
the run kind's main numbers), the curves that matter with units (reward and gold reward against
reward queries, KL to the base, the per-step KL ``kl/step/NN`` of the last epoch), the sample
grids, the evaluations, the remaining metric groups (series that never change are listed, not
plotted), and the config. Every image is embedded as a ``data:`` URI, so the single HTML file can
be mailed or uploaded without the run directory.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from pathlib import Path

from scorealign.report.figures import constant_series, plot_metrics, plot_step_kl
from scorealign.run.rundir import RunDir

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:12px;color:#555}
img{image-rendering:pixelated;max-width:460px}.summary{font-size:18px;background:#eef6ee;
padding:10px 14px;border-radius:6px}.muted{color:#777;font-size:12px}"""

#: Curves shown first, with their axis labels: (keys, x key, x label, y label, file stem).
_KEY_CURVES = (
    (("reward/mean", "eval/reward"), "queries/reward", "reward queries (samples scored)",
     "optimized reward", "reward"),
    (("reward/gold_mean", "eval/gold"), "queries/reward", "reward queries (samples scored)",
     "gold reward (held out)", "gold"),
    (("kl/base",), "queries/reward", "reward queries (samples scored)",
     "KL to the base model (nats, sum over steps)", "kl"),
    (("loss",), "step", "optimizer step", "loss", "loss_main"),
    (("rewards/accuracy",), "step", "optimizer step", "implicit reward accuracy", "accuracy"),
    (("eval/win_rate",), "step", "optimizer step", "oracle win rate vs SFT", "win_rate"),
    (("perf/J", "perf/J_star"), "step", "iteration", "J(π) = E V^π(X₀)", "performance"),
)


def _table(d: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in d.items())
    return f"<table>{rows}</table>"


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def data_uri(path: Path) -> str:
    """The PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figure(path: Path, caption: str, width: int = 460) -> str:
    return (f"<figure><img src='{data_uri(path)}' style='max-width:{width}px' "
            f"alt='{html.escape(caption)}'><figcaption>{html.escape(caption)}</figcaption>"
            f"</figure>")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _last(rows: list[dict], key: str) -> float | None:
    for r in reversed(rows):
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return None


def _first(rows: list[dict], key: str) -> float | None:
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return None


def summary_line(rows: list[dict], evals: dict[str, dict]) -> str:
    """One line of the numbers that matter (plain text)."""
    parts = []
    ba = evals.get("eval_before_after", {})
    for key, name in (("reward/mean", "reward"), ("reward/gold_mean", "gold reward")):
        b, a = ba.get(f"before/{key}"), ba.get(f"after/{key}")
        if b is None or a is None:
            b, a = _first(rows, key), _last(rows, key)
        if b is not None and a is not None:
            parts.append(f"{name} {b:.4g} → {a:.4g}")
    kl = _last(rows, "kl/base")
    if kl is not None:
        parts.append(f"KL to base {kl:.4g} nats")
    for key, name in (("loss", "loss"), ("rewards/accuracy", "reward accuracy"),
                      ("eval/win_rate", "win rate"), ("perf/J", "J(π)"), ("perf/gap", "gap to J*"),
                      ("eval/accuracy", "class accuracy"), ("eval/fd", "FD"),
                      ("eval/sliced_w2", "sliced W2")):
        v = _last(rows, key)
        if v is None:
            v = next((d[key] for d in evals.values() if isinstance(d.get(key), (int, float))),
                     None)
        if v is not None and not (key == "loss" and parts):
            parts.append(f"{name} {v:.4g}")
    total = _last(rows, "time/total_s")
    if total is None:
        epochs = [r["time/epoch_s"] for r in rows if isinstance(r.get("time/epoch_s"), float)]
        total = sum(epochs) if epochs else next(
            (d.get("time/pretrain_s") for d in evals.values() if "time/pretrain_s" in d), None)
    if total is not None:
        parts.append(f"time {_duration(total)}")
    return " · ".join(parts) if parts else "no metrics logged yet"


def _metric_groups(rows: list[dict], skip: set[str]) -> dict[str, list[str]]:
    keys = sorted({k for r in rows for k in r if k != "step" and k not in skip
                   and isinstance(r[k], (int, float)) and not re.match(r"kl/step/\d+$", k)})
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split("/")[0], []).append(k)
    return groups


def write_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Render the figures from metrics.jsonl and write ``report.html``; returns its path."""
    run = RunDir.open(run_dir)
    run.plots.mkdir(parents=True, exist_ok=True)
    rows = run.read_metrics()
    evals = {}
    for f in sorted(run.path.glob("eval*.json")):
        try:
            evals[f.stem] = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
    title = title or run.path.name
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='summary' id='summary'>{html.escape(summary_line(rows, evals))}</p>"]
    key_figs, used = [], set()
    has_queries = any("queries/reward" in r for r in rows)
    for keys, x, xlabel, ylabel, stem in _KEY_CURVES:
        if x == "queries/reward" and not has_queries:
            x, xlabel = "step", "step"
        p = plot_metrics(rows, keys, run.plots / f"{stem}.png", title=ylabel, x_key=x,
                         xlabel=xlabel, ylabel=ylabel, logy=stem == "loss_main")
        if p is not None:
            key_figs.append((p, ylabel))
            used.update(keys)
    kl_fig = plot_step_kl(rows, run.plots / "kl_per_step.png")
    if kl_fig is not None:
        key_figs.append((kl_fig, "per-step KL to the base, last epoch (nats)"))
    if key_figs:
        parts.append("<h2>Curves</h2>")
        parts += [_figure(p, cap) for p, cap in key_figs]
    # oldest first: "before" precedes "after", a grid precedes its later re-samples
    samples = sorted(run.samples.glob("*.png"), key=_grid_order) if run.samples.is_dir() else []
    if samples:
        parts.append("<h2>Samples</h2>")
        parts += [_figure(p, p.stem) for p in samples]
    if evals:
        parts.append("<h2>Evaluation</h2>")
        for name, d in evals.items():
            flat = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
            if isinstance(d.get("sampling"), dict):
                flat["sampling"] = ", ".join(f"{k}={v}" for k, v in d["sampling"].items())
            parts.append(f"<h3>{html.escape(name)}</h3>{_table(flat)}")
    other, constant = [], {}
    for group, keys in _metric_groups(rows, used).items():
        const = constant_series(rows, keys)
        constant.update(const)
        live = [k for k in keys if k not in const]
        p = plot_metrics(rows, live, run.plots / f"{group.replace('/', '_')}.png", title=group,
                         smooth=5 if group == "loss" else 1, logy=group == "loss",
                         xlabel="step") if live else None
        if p is not None:
            other.append((p, group))
    made = {p for p, _ in key_figs} | {p for p, _ in other}
    extra = sorted(q for q in run.plots.glob("*.png") if q not in made
                   and not q.name.startswith("."))
    if other or extra:
        parts.append("<h2>Other metrics</h2>")
        parts += [_figure(p, cap, 420) for p, cap in other]
        parts += [_figure(p, p.stem, 420) for p in extra
                  if p.stem not in {s for *_, s in _KEY_CURVES} | {"kl_per_step"}]
    if constant:
        parts.append("<p class='muted'>constant over the run (not plotted): " + html.escape(
            ", ".join(f"{k} = {v:.4g}" for k, v in sorted(constant.items()))) + "</p>")
    last = {}
    for r in rows:
        last.update({k: v for k, v in r.items() if not re.match(r"kl/step/\d+$", k)})
    if last:
        parts.append("<h2>Last logged metrics</h2>" + _table(last))
    parts.append("<h2>Config</h2><pre>" + html.escape(run.config_file.read_text()) + "</pre>")
    parts.append("</body></html>")
    if run.tracker != "none":  # the sample grids, at the last logged step, then flush
        from scorealign.run.trackers import close_tracker, log_image_files
        log_image_files(run.path, run.tracker, samples, int(_last(rows, "step") or 0))
        close_tracker(run.path)
    out = run.path / "report.html"
    tmp = out.with_name(f".report.html.tmp{os.getpid()}")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, out)
    return out


def _grid_order(path: Path) -> tuple:
    """"before" first, then ``epoch_NNNN`` grids by epoch, then "after", then any other grid in
    the order it was written."""
    stem = path.stem
    if stem == "before":
        return (0, 0, 0, stem)
    if stem.startswith("epoch_") and stem[6:].isdigit():
        return (1, int(stem[6:]), 0, stem)
    if stem == "after":
        return (2, 0, 0, stem)
    return (3, 0, path.stat().st_mtime_ns, stem)
