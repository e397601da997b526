"""``report.html`` for a run directory: one self-contained file a person can read and share.

Top to bottom: a summary box (reward before → after, gold reward, KL to the base, wall time, each
with the one source its numbers come from: the after-training evaluation or the training epochs,
:mod:`scorealign.report.numbers`; or the run kind's main numbers), green unless the gold-reward
alarm (:mod:`scorealign.report.gold`) was raised, then amber (raised during training, cleared at
the end) or red (raised at the end) with the alarm in words; the curves that matter with units
and one sentence each on what they measure (reward and gold reward against reward queries, KL to
the base, the per-step KL ``kl/step/NN`` of the last epoch); the sample grids, rows labelled with
their prompts; the evaluations, each labelled; the secondary metric groups folded away in a
``<details>`` section (series that never change are listed, not plotted); the last logged
metrics with what each measures; the config. Every image is embedded as a ``data:`` URI, so the
single HTML file can be mailed or uploaded without the run directory.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from pathlib import Path

import yaml

from scorealign.report.figures import (constant_series, grid_rows, label_grid_rows, plot_metrics,
                                       plot_step_kl)
from scorealign.report.gold import GOLD_MARGIN, epoch_alarms, eval_alarm, gold_meaning
from scorealign.report.numbers import (before_after_numbers, eval_source, fmt_value,
                                       metric_meaning)
from scorealign.run.rundir import RunDir

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:12px;color:#555}
img{image-rendering:pixelated;max-width:460px}.summary{font-size:18px;background:#eef6ee;
padding:10px 14px;border-radius:6px;border-left:6px solid #3a9a3a}
.summary.amber{background:#fff4dc;border-left-color:#d08a00}.summary.red{background:#fde4e1;
border-left-color:#c0392b}.summary table{font-size:13px;margin-top:6px}.summary p{margin:4px 0}
.alarm{font-size:14px}.muted{color:#777;font-size:12px}.means{font-size:12px;color:#444}
details{margin:1em 0}summary.fold{cursor:pointer;font-size:1.3em;font-weight:bold}
td.means{text-align:left}"""

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


def _table(d: dict, means: bool = False) -> str:
    """A key → value table; ``means``: a third column saying what each metric measures."""
    def row(k, v):
        m = f"<td class='means'>{html.escape(metric_meaning(str(k)) or '')}</td>" if means else ""
        return f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td>{m}</tr>"
    head = "<tr><th>metric</th><th>value</th><th>what it measures</th></tr>" if means else ""
    return f"<table>{head}{''.join(row(k, v) for k, v in d.items())}</table>"


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


def summary_line(rows: list[dict], evals: dict[str, dict]) -> str:
    """One line of the numbers that matter (plain text); each reward/gold/KL number is followed
    by its source in parentheses (one label for consecutive numbers of the same source)."""
    parts, numbers = [], before_after_numbers(rows, evals.get("eval_before_after"))
    for i, n in enumerate(numbers):
        tag = _tag(n.source)
        last_of_source = i + 1 == len(numbers) or _tag(numbers[i + 1].source) != tag
        parts.append(n.text() + (f" ({tag})" if tag and last_of_source else ""))
    time_part = parts.pop() if numbers and numbers[-1].unit == "time" else None
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
    if time_part is None:
        total = next((d.get("time/pretrain_s") for d in evals.values()
                      if "time/pretrain_s" in d), None)
        time_part = f"time {_duration(total)}" if total is not None else None
    if time_part is not None:
        parts.append(time_part)
    return " · ".join(parts) if parts else "no metrics logged yet"


def _tag(source: str) -> str:
    """The short form of a number's source for the summary line."""
    if source.startswith("after-training evaluation"):
        return "after-training evaluation"
    if source.startswith("training epochs"):
        return source.split(",")[0]
    if source.startswith("last training epoch"):
        return "last training epoch"
    return ""


def _gold_name(config_text: str) -> str | None:
    try:
        gold = (yaml.safe_load(config_text) or {}).get("reward", {}).get("gold")
    except (yaml.YAMLError, AttributeError):
        return None
    return gold.get("name") if isinstance(gold, dict) else gold if isinstance(gold, str) else None


def summary_box(rows: list[dict], evals: dict[str, dict], gold_name: str | None = None) -> str:
    """The report's summary box (HTML): the summary line, the before → after numbers with their
    sources, and the gold-reward alarm in words when raised. Green without an alarm; amber when
    training epochs raised it but the end did not; red when the end (the after-training
    evaluation, else the last epoch) did."""
    ba = evals.get("eval_before_after", {})
    epochs, final = epoch_alarms(rows), eval_alarm(ba)
    last_step = max((int(r["step"]) for r in rows
                     if isinstance(r.get("reward/gold_mean"), (int, float))), default=None)
    end_raised = final is not None if "after/reward/gold_mean" in ba else \
        any(a.where == f"epoch {last_step}" for a in epochs)
    level = "red" if end_raised else "amber" if epochs else ""
    body = [f"<p class='headline'>{html.escape(summary_line(rows, evals))}</p>"]
    numbers = before_after_numbers(rows, ba)
    if numbers:
        trs = "".join(
            f"<tr><th>{html.escape(n.name)}</th><td>{html.escape(_fmt_num(n, n.before))}</td>"
            f"<td>{html.escape(_fmt_num(n, n.after))}</td><td class='means'>"
            f"{html.escape(n.source)}</td></tr>" for n in numbers)
        body.append("<table class='numbers'><tr><th></th><th>before</th><th>after</th>"
                    f"<th>source</th></tr>{trs}</table>")
    if level:
        first = final if final is not None and not epochs else epochs[0]
        text = first.sentence(gold_name)
        if epochs:
            where = ", ".join(a.where.split()[-1] for a in epochs)
            text += f" Raised at training epoch{'s' if len(epochs) > 1 else ''} {where}"
            text += (f"; at the end too ({final.where}: gold {final.gold:.4f} against the "
                     f"base's {final.base:.4f})." if final is not None else
                     "; the end of the run is back within the margin." if not end_raised
                     else ".")
        body.append(f"<p class='alarm' id='gold-alarm'><b>Gold-reward alarm.</b> "
                    f"{html.escape(text)}</p>")
    elif _last(rows, "reward/gold_mean") is not None or "after/reward/gold_mean" in ba:
        body.append(f"<p class='muted'>Gold reward ({html.escape(gold_meaning(gold_name))}) "
                    f"stayed within {GOLD_MARGIN:g} of the base's at every evaluation.</p>")
    cls = f"summary {level}".strip()
    return f"<div class='{cls}' id='summary'>{''.join(body)}</div>"


def _fmt_num(n, v: float | None) -> str:
    if v is None:
        return ""
    return _duration(v) if n.unit == "time" else fmt_value(v) + (f" {n.unit}" if n.unit else "")


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
             summary_box(rows, evals, _gold_name(run.config_file.read_text())
                         if run.config_file.is_file() else None)]
    key_figs, used = [], set()
    has_queries = any("queries/reward" in r for r in rows)
    for keys, x, xlabel, ylabel, stem in _KEY_CURVES:
        if x == "queries/reward" and not has_queries:
            x, xlabel = "step", "step"
        p = plot_metrics(rows, keys, run.plots / f"{stem}.png", title=ylabel, x_key=x,
                         xlabel=xlabel, ylabel=ylabel, logy=stem == "loss_main")
        if p is not None:
            means = " ".join(m for k in keys if (m := metric_meaning(k)) and
                             any(k in r for r in rows))
            key_figs.append((p, f"{ylabel}. {means}".strip() if means else ylabel))
            used.update(keys)
    kl_fig = plot_step_kl(rows, run.plots / "kl_per_step.png")
    if kl_fig is not None:
        key_figs.append((kl_fig, "per-step KL to the base, first and last logged epoch (nats). "
                         + METRIC_MEANS_KL_STEP))
    if key_figs:
        parts.append("<h2>Curves</h2>")
        parts += [_figure(p, cap) for p, cap in key_figs]
    # oldest first: "before" precedes "after", a grid precedes its later re-samples
    samples = sorted(run.samples.glob("*.png"), key=_grid_order) if run.samples.is_dir() else []
    if samples:
        parts.append("<h2>Samples</h2><p class='means'>Each row of a grid is one prompt (labelled "
                     "on the left); the same column of every grid uses the same seed.</p>")
        parts += [_grid_figure(p, run.plots) for p in samples]
    if evals:
        parts.append("<h2>Evaluation</h2>")
        for name, d in evals.items():
            flat = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
            if isinstance(d.get("sampling"), dict):
                flat["sampling"] = ", ".join(f"{k}={v}" for k, v in d["sampling"].items())
            label = (eval_source(d) + ": the base and the fine-tuned model sampled from the "
                     "same seeds, one row per prompt") if name == "eval_before_after" else \
                f"{name}.json, written after training"
            parts.append(f"<h3>{html.escape(name)}</h3><p class='means'>Source: "
                         f"{html.escape(label)}.</p>{_table(flat)}")
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
    extra = [p for p in extra if p.stem not in {s for *_, s in _KEY_CURVES} | {"kl_per_step"}
             and not p.stem.startswith("grid_")]
    if extra:  # figures the command drew itself (testbed frontier, scatter plots): shown
        parts.append("<h2>Figures</h2>")
        parts += [_figure(p, p.stem, 420) for p in extra]
    if other or constant:
        parts.append("<details id='secondary'><summary class='fold'>Secondary metrics "
                     "(optimizer and diagnostics; click to open)</summary>")
        parts += [_figure(p, cap, 420) for p, cap in other]
        if constant:
            parts.append("<p class='muted'>constant over the run (not plotted): " + html.escape(
                ", ".join(f"{k} = {v:.4g}" for k, v in sorted(constant.items()))) + "</p>")
        parts.append("</details>")
    last = {}
    for r in rows:
        last.update({k: v for k, v in r.items() if not re.match(r"kl/step/\d+$", k)})
    if last:
        step = last.get("step")
        parts.append(f"<h2>Last logged metrics</h2><p class='means'>Source: the last logged "
                     f"training {'epoch' if 'queries/reward' in last else 'step'} ({step}), "
                     f"means over its batch.</p>" + _table(last, means=True))
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


METRIC_MEANS_KL_STEP = metric_meaning("kl/step/00") or ""


def _grid_figure(path: Path, plots: Path) -> str:
    """A sample grid with its rows labelled by their prompts (when recorded beside it,
    :func:`~scorealign.report.figures.save_grid_rows`), captioned with its name."""
    rows = grid_rows(path)
    if rows:
        try:
            labelled = label_grid_rows(path, rows, plots / f"grid_{path.stem}.png")
            return _figure(labelled, f"{path.stem}: rows = prompts", 560)
        except (OSError, ValueError):
            pass
    return _figure(path, path.stem)


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
