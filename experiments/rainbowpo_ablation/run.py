"""RainbowPO's components one at a time, MallowsPO and DPO on the offline demo task [Zhao+24
RainbowPO, §4; Chen+24 MallowsPO].

    OMP_NUM_THREADS=1 python experiments/rainbowpo_ablation/run.py [--jobs 2]  # 17 CPU-min; cached
    python experiments/rainbowpo_ablation/run.py --table-only    # the table from cells/ only
    python experiments/rainbowpo_ablation/run.py --quick --out <dir> --work <dir>  # the test

Every variant of a seed starts from the same SFT model and the same oracle-labelled pairs of
``configs/dpo/demo.yaml`` (tiny GPT-2, 200 steps, batch 32) and has the same budget. Metric: the
oracle win rate of the policy's samples against the SFT model's on 512 held-out prompts of that
seed (ties ½), and the mean oracle reward.

Variants (the authors' values where they have one; hanyang1999/RainbowPO
``trl/trainer/dpo_config.py``: β = 10 on mean token log-probs, ``mixing_alpha`` 0.25,
``home_advantage`` 0.1, ``neg_log_dispersion_mean`` λ = 0.29, ``length_normalization``; the
MallowsPO repo has the same λ):

* DPO: sigmoid, β = 0.1 on summed log-probs.
* Mallows-θ (λ = 0.29): the authors' λ. On this 10-token vocabulary the reference's normalized
  entropy is H̄ ≈ 0.84, so c = −0.29 log H̄ ≈ 0.05: β is effectively 20× smaller than DPO's (λ =
  0.29 is calibrated for LLM vocabularies, where c ≈ 1).
* Mallows-θ (λ auto): λ with mean c = 1 over the reference cache; this is DPO + RainbowPO's
  contextual-scaling component.
* RainbowPO: the final recipe, LN + reference mixing α = 0.25 with margin γ + contextual scaling
  (λ auto), sigmoid link. β = 0.6 on mean token log-probs (β × mean completion length ≈ DPO's
  0.1 × 6), γ = 0.5, so the logit shift β(1 − α)γ = 0.225 (the authors' is 10 × 0.75 × 0.1 = 0.75
  on LLM data).
* RainbowPO − LN, − mixing, − CS: the recipe with one component removed (leave-one-out). Without
  LN, β = 0.1 on summed log-probs and γ = 3.0, which keeps the logit shift β(1 − α)γ = 0.225;
  without mixing, the plain reference and no margin; without CS, c(x) = 1.

Protocol (``experiments/_selection.py``): the learning rate of every variant is chosen on tuning
seeds 1000.. (each its own SFT model, pairs and evaluation prompts; never reported) by the mean
win rate there; the grid starts at ``--lrs`` (1e-4 … 3e-3) and is widened geometrically while the
pick sits at an edge (``edge`` if the cap is hit). Reported: seeds 0..``--seeds``−1, all variants
on the same SFT model, pairs and prompts per seed. Claims (win rate; paired t-interval over seeds,
Welch beside, Holm across the claims): each component's effect, recipe − (recipe without it); the
recipe, Mallows-θ (λ auto) and Mallows-θ (λ = 0.29) against DPO. Collapse: a run whose final
oracle reward is non-finite or more than ``COLLAPSE_MARGIN`` below its seed's SFT model's.

One JSON per (variant, seed, lr) cell under ``cells/`` (with its CPU seconds and peak RSS); a
stopped run continues.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _selection as sel  # noqa: E402
from _cells import cached, ci95, map_jobs, portable_path, write_json  # noqa: E402

CONFIG = HERE.parents[1] / "configs" / "dpo" / "demo.yaml"
COLLAPSE_MARGIN = 1.0  # oracle-reward units (+1 per prompt letter, −1 otherwise); SFT ≈ −1.2

LN = {"length_normalization": True, "beta": 0.6}
MIX = {"mixing": True, "mixing_alpha": 0.25, "margin": 0.5}
CS = {"contextual_scaling": True, "dispersion_scale": "auto"}
RECIPE = "RainbowPO"
VARIANTS: dict[str, tuple[str, dict]] = {
    "DPO": ("sigmoid", {"beta": 0.1}),
    "Mallows-θ (λ=0.29)": ("mallows_theta", {"beta": 0.1}),
    "Mallows-θ (λ auto)": ("mallows_theta", {"beta": 0.1, "dispersion_scale": "auto"}),
    RECIPE: ("rainbowpo", {**LN, **MIX, **CS}),
    "RainbowPO − LN": ("rainbowpo", {"beta": 0.1, **MIX, "margin": 3.0, **CS}),
    "RainbowPO − mixing": ("rainbowpo", {**LN, **CS}),
    "RainbowPO − CS": ("rainbowpo", {**LN, **MIX}),
}
# (claim name, a, b): the paired difference a − b of the win rate
CLAIMS = [("length normalization: RainbowPO − (RainbowPO − LN)", RECIPE, "RainbowPO − LN"),
          ("reference mixing + margin: RainbowPO − (RainbowPO − mixing)", RECIPE,
           "RainbowPO − mixing"),
          ("contextual scaling: RainbowPO − (RainbowPO − CS)", RECIPE, "RainbowPO − CS"),
          ("RainbowPO − DPO", RECIPE, "DPO"),
          ("Mallows-θ (λ auto) − DPO", "Mallows-θ (λ auto)", "DPO"),
          ("Mallows-θ (λ=0.29) − DPO", "Mallows-θ (λ=0.29)", "DPO")]
LAST = ("Mallows-θ (λ=0.29)",)  # run after the other variants (a secondary comparison)
FULL = {"seeds": 10, "tuning_seeds": 1, "lrs": "1e-4,3e-4,1e-3,3e-3", "max_widen": 4}
QUICK = {"seeds": 2, "tuning_seeds": 1, "lrs": "3e-4,1e-3,3e-3", "max_widen": 1}
QUICK_SETS = ["train.steps=4", "train.batch_size=4", "demo.sft_steps=10", "demo.n_prompts=16",
              "demo.eval_prompts=8", "train.eval_every=0", "train.log_every=2"]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower()


def cell_path(cells: Path, name: str, seed: int, lr: float) -> Path:
    return cells / f"{_slug(name)}-s{seed}-lr{lr:g}.json"


def run_cell(job: tuple) -> dict | None:
    """Train one variant at one seed and lr from the seed's shared SFT model/pairs; cached.

    ``job`` = (name, seed, lr, work, cells, sets, new); with ``new`` False a missing cell is
    None (``--table-only``)."""
    name, seed, lr, work, cells, sets, new = job
    path = cell_path(cells, name, seed, lr)
    if not new and not path.is_file():
        return None

    def compute() -> dict:
        import torch

        from scorealign.config import load_config
        from scorealign.preference.config import DPOConfig
        from scorealign.preference.trainer import train
        from scorealign.run.rundir import RunDir

        torch.set_num_threads(1)
        loss, params = VARIANTS[name]
        cfg = load_config(CONFIG, DPOConfig, [f"train.seed={seed}", "train.progress=false",
                                              "train.eval_every=0", f"train.lr={lr}",
                                              f"loss.name={loss}",
                                              f"loss.params={json.dumps(params)}", *sets])
        out = work / f"{_slug(name)}-s{seed}-lr{lr:g}-{os.getpid()}"  # a process of its own
        shutil.rmtree(out, ignore_errors=True)
        run = RunDir.create(out, cfg)
        cache = work / f"cache-s{seed}"
        had_cache = cache.is_dir()
        if had_cache:  # the seed's SFT weights and pairs
            shutil.copytree(cache, run.path / "demo")
        summary = train(cfg, run, export_final=False)  # metrics only: no final/ or report
        if not cache.is_dir():  # publish atomically: parallel workers may race on the same seed
            tmp = work / f".cache-s{seed}-{os.getpid()}"
            shutil.copytree(run.path / "demo", tmp)
            try:
                tmp.rename(cache)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        metrics = run.read_metrics()
        cell = {"variant": name, "seed": seed, "lr": lr, "loss": loss, "params": params,
                **summary["eval_start"],
                **{f"end_{k.split('/')[-1]}": v for k, v in summary["eval_end"].items()},
                "train_accuracy": summary["last"].get("rewards/accuracy"),
                "dispersion_scale": summary.get("dispersion_scale"),
                "sft_in_cell": not had_cache,
                "curve": [{k: r[k] for k in ("step", "loss", "rewards/chosen", "rewards/rejected",
                                              "rewards/accuracy", "eval/win_rate") if k in r}
                          for r in metrics]}
        cell["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        shutil.rmtree(out, ignore_errors=True)
        return cell

    return cached(path, compute, cpu_key="cpu_s")


def is_collapsed(cell: dict) -> bool:
    return sel.collapsed(float(cell["end_reward_mean"]), float(cell["end_sft_reward_mean"]),
                         COLLAPSE_MARGIN)


def tune_job(job: tuple):
    """Tune one variant on the tuning seeds (``_selection.tune_grid``); None if a cell is
    missing under ``--table-only``."""
    name, split, grid, max_widen, work, cells, sets, new = job

    def score(lr: float) -> dict:
        cs = [run_cell((name, s, lr, work, cells, sets, new)) for s in split.tuning_seeds]
        if any(c is None for c in cs):
            raise LookupError(f"{name} lr {lr:g}: tuning cell missing")
        return {"reward": float(np.mean([c["end_win_rate"] for c in cs])),
                "collapse": float(np.mean([is_collapsed(c) for c in cs]))}

    try:
        return name, sel.tune_grid(grid, score, max_widen=max_widen)
    except LookupError as e:
        return name, str(e)


def analyse(per: dict) -> dict:
    """Rows per variant and the claims with Holm; ``per[name][seed]`` = reported cell."""
    rows = {}
    for name, by_seed in per.items():
        cs = list(by_seed.values())
        rows[name] = {"seeds": len(cs), "win_rate": ci95([c["end_win_rate"] for c in cs]),
                      "reward": ci95([c["end_reward_mean"] for c in cs]),
                      "sft_reward": ci95([c["end_sft_reward_mean"] for c in cs]),
                      "collapse_rate": float(np.mean([is_collapsed(c) for c in cs])) if cs
                      else float("nan"),
                      "train_accuracy": float(np.mean([c["train_accuracy"] or 0.0 for c in cs]))
                      if cs else float("nan"),
                      "cpu_s": ci95([c["cpu_s"] for c in cs]),
                      "peak_rss_mb": max((c.get("peak_rss_mb", 0.0) for c in cs), default=0.0)}
    claims = {}
    for cname, a, b in CLAIMS:
        if a not in per or b not in per:
            continue
        seeds = sorted(set(per[a]) & set(per[b]))
        xa = [per[a][s]["end_win_rate"] for s in seeds]
        xb = [per[b][s]["end_win_rate"] for s in seeds]
        claims[cname] = {"a": a, "b": b, "seeds": seeds, "paired": sel.paired_interval(xa, xb),
                         "welch": sel.welch_interval(xa, xb)}
    return {"rows": rows, "claims": claims,
            "holm": sel.holm({k: v["paired"]["p"] for k, v in claims.items()})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=None, help=f"reported seeds ({FULL['seeds']})")
    ap.add_argument("--tuning-seeds", type=int, default=None,
                    help=f"tuning seeds 1000.. ({FULL['tuning_seeds']})")
    ap.add_argument("--lrs", default=None, help=f"starting lr grid ({FULL['lrs']})")
    ap.add_argument("--max-widen", type=int, default=None, help=f"({FULL['max_widen']})")
    ap.add_argument("--work", default="runs/rainbowpo_ablation", help="scratch run directories")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test)")
    ap.add_argument("--reverse", action="store_true", help="take every stage's cells in reverse "
                    "order: a second process started beside a running one shares its work "
                    "(each skips the cells the other has cached)")
    ap.add_argument("--table-only", action="store_true", help="tabulate the cached cells only "
                    "(variants whose tuning is incomplete are left out and named)")
    a = ap.parse_args(argv)
    mode = QUICK if a.quick else FULL
    cfg = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in mode.items()}
    sets = QUICK_SETS if a.quick else []
    t0 = time.process_time()
    out, work = Path(a.out), Path(a.work) / ("quick" if a.quick else "full")
    cells = out / "cells"
    work.mkdir(parents=True, exist_ok=True)
    names = a.only.split(",") if a.only else list(VARIANTS)
    grid = [float(v) for v in cfg["lrs"].split(",")]
    split = sel.split(cfg["seeds"], cfg["tuning_seeds"])
    new = not a.table_only
    # Two groups, each tuned then reported: the components' variants first, the secondary
    # Mallows-θ (λ = 0.29) last, so a stopped run leaves the component claims complete.
    groups = [[nm for nm in names if nm not in LAST], [nm for nm in names if nm in LAST]]
    chosen: dict = {}
    missing: dict = {}
    per: dict = {}
    for group in (g for g in groups if g):
        # 1. the starting grid on the tuning seeds, then tuning with widening
        order = (lambda x: x[::-1]) if a.reverse else (lambda x: x)  # noqa: E731
        if new:
            map_jobs(run_cell, order([(nm, s, lr, work, cells, sets, True) for lr in grid
                                      for nm in group for s in split.tuning_seeds]), a.jobs)
        tuned = map_jobs(tune_job, order([(nm, split, grid, cfg["max_widen"], work, cells, sets,
                                           new) for nm in group]), a.jobs)
        for nm, t in tuned:
            if isinstance(t, sel.Tuned) and t.pick is not None:
                chosen[nm] = t
            else:
                missing[nm] = t
        # 2. reported seeds at the chosen lr (seed-major: each seed's first cell does its SFT)
        jobs = [(nm, s, chosen[nm].pick, work, cells, sets, new) for nm in group if nm in chosen
                for s in split.reported_seeds]
        jobs = order(sorted(jobs, key=lambda j: (j[0] != group[0], j[1])))
        done = map_jobs(run_cell, jobs, a.jobs)
        for j, c in zip(jobs, done):
            per.setdefault(j[0], {})
            if c is not None:
                per[j[0]][j[1]] = c
    an = analyse(per)
    n_rep = {nm: len(v) for nm, v in per.items()}
    partial = missing or any(n < cfg["seeds"] for n in n_rep.values())
    status = "complete" if not partial else (
        "PARTIAL — variants without a finished lr selection: " + (", ".join(missing) or "none")
        + "; reported seeds per variant: " + ", ".join(f"{k} {v}/{cfg['seeds']}"
                                                       for k, v in n_rep.items()))
    all_cells = [json.loads(p.read_text()) for p in cells.glob("*.json")]
    res = {"status": status, "config": cfg, "quick": a.quick, "variants":
           {nm: {"loss": VARIANTS[nm][0], "params": VARIANTS[nm][1]} for nm in names},
           "selection": sel.record(chosen, selection="max mean oracle win rate against the SFT "
                                   "model over the tuning seeds (each with its own SFT model, "
                                   "pairs and evaluation prompts)",
                                   collapse=sel.collapse_rule(COLLAPSE_MARGIN).replace(
                                       "base reward", "seed's SFT oracle reward"), split_=split),
           "analysis": an, "cells": portable_path(cells),
           "cpu_s_all_cells": round(sum(c.get("cpu_s", 0.0) for c in all_cells), 1),
           "cpu_s_this_call": round(time.process_time() - t0, 1)}
    write_json(out / "results.json", json.loads(json.dumps(res, default=_jsonable)))
    (out / "table.md").write_text(table(res))
    print(table(res))
    return 0


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o))


def _fmt(mh, d: int = 3, signed: bool = False) -> str:
    m, h = mh
    if m is None or not math.isfinite(m):
        return "n/a"
    return f"{m:{'+' if signed else ''}.{d}f} ± {'?' if not math.isfinite(h) else f'{h:.{d}f}'}"


def table(res: dict) -> str:
    """Markdown: per-variant rows with the chosen lr and edge flag, the claims with Holm, and the
    lr selection."""
    an, chosen, sp = res["analysis"], res["selection"]["chosen"], res["selection"]["split"]
    lines = ["# RainbowPO ablation on the offline demo task" + (" (quick)" if res["quick"] else ""),
             "", f"Status: {res['status']}", "",
             "Oracle win rate of the policy against its seed's SFT model on that seed's held-out "
             "prompts (0.5 = no change) and mean oracle reward; mean ± 95 % t half-width over the "
             f"reported seeds {sp['reported_seeds'][0]}–{sp['reported_seeds'][-1]}; all variants "
             "of a seed share its SFT model, pairs and prompts. Collapse: "
             f"{res['selection']['collapse_rule']}.", "",
             "| variant | lr (edge?) | seeds | win rate vs SFT | oracle reward | collapse rate | "
             "train reward acc. | CPU s per run | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for nm, row in an["rows"].items():
        ch = chosen[nm]
        lines.append(f"| {nm} | {ch['pick']:g} ({'edge' if ch['edge'] else 'interior'}) | "
                     f"{row['seeds']} | {_fmt(row['win_rate'])} | {_fmt(row['reward'])} | "
                     f"{row['collapse_rate']:.2f} | {row['train_accuracy']:.2f} | "
                     f"{_fmt(row['cpu_s'], 1)} | {row['peak_rss_mb']:.0f} |")
    sft = [r["sft_reward"][0] for r in an["rows"].values() if r["seeds"]]
    if sft:
        lines += ["", f"SFT model's mean oracle reward: {np.mean(sft):.3f}."]
    lines += ["", "## Claims (win rate; paired t-interval over seeds, 95 %; Welch beside; Holm "
              "across all rows of this table, FWER 0.05)", "",
              *sel.claims_table(an["claims"], an["holm"], "+.3f")]
    lines += ["", "## Learning-rate selection (tuning seeds, never reported)", "",
              f"Rule: {res['selection']['selection_rule']}; tuning seeds {sp['tuning_seeds']}; "
              "the grid is widened geometrically while the pick sits at an edge (at most "
              f"{res['config']['max_widen']} times).", "",
              "| variant | lr: tuning win rate (collapse rate) | pick | edge | widened | note |",
              "|---|---|---|---|---|---|"]
    for nm, ch in chosen.items():
        sc = ", ".join(f"{k}: {v['reward']:.3f} ({v['collapse']:.1f})"
                       for k, v in sorted(ch["scores"].items(), key=lambda kv: float(kv[0])))
        lines.append(f"| {nm} | {sc} | {ch['pick']:g} | {ch['edge']} | {ch['widened']} | "
                     f"{ch['reason']} |")
    lines += ["", f"CPU: {res['cpu_s_all_cells'] / 60:.1f} CPU-min over all cells (tuning and "
              "reported, SFT included; `time.process_time` per cell).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # single-threaded cells (in a test: the caller's setting)
    sys.exit(main())
