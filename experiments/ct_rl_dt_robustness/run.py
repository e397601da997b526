"""Gap to the optimum against the step size Δt: CT methods and DT twins on the same LQ problem.

One command regenerates the tables and the figure of docs/control.md:

    OMP_NUM_THREADS=1 .venv/bin/python experiments/ct_rl_dt_robustness/run.py [--quick]

Design (issue 16: a DT baseline is only a control for the CT idea if it is given the same
problem and the same critic):

* methods: CT-PG, CT-TRPO, CT-PPO [Zhao+23 CTPO] and the DT baselines DT-PG, DT-PPO;
* every method with both critics: ``TD`` (CT: the one-step q-rate per row, ``policy.q_estimator
  = td``; DT: GAE(λ) per row) and ``fit`` (CT: least-squares q(x, a) fit, ``regression``; DT: the
  same fit of the GAE targets, ``discrete.advantage = regression``);
* every DT baseline in three forms: per-step constants fixed at Δt_ref = 0.05 (``fixed``:
  κ = e^{−0.05β}, α = 0.05γ, λ = 0.95 whatever Δt is), rescaled to Δt (``rescaled``:
  κ = e^{−βΔt}, α = γΔt, λ = 0.95^{Δt/0.05}) and rescaled with λ = 0 (``rescaled λ=0``);
  DT-PPO uses one full-batch minibatch, like CT-PPO, so the pairs differ in the CT idea only
  (occupation-time weights, the advantage *rate*, the analytic KL entropy term);
* step size per row (Adam lr from LRS; CT-TRPO's trust-region size from MAX_KLS) chosen at
  Δt = Δt_ref on tuning seeds (TUNE_SEEDS, never reported) by the smallest mean gap, the grid
  widened geometrically while the pick sits at an edge (``experiments/_selection.py``:
  ``tune_grid``; ``edge: True`` when the cap of MAX_WIDEN widenings is hit), then held fixed
  at every Δt;
* Δt ∈ DTS = {0.05, 0.02, 0.01} for every row, 30 iterations of N_PATHS = 32 paths (the shipped
  configs: 60 × 128; 32 keeps the full sweep near 15–20 CPU-minutes), every method the same
  simulated time;
* N_SEEDS = 10 reported seeds per cell, the same seeds for every row (paired); the score is
  the closed-form continuous-time gap J* − J(π) of the final policy (``scorealign.control.lq``),
  independent of the training Δt;
* claims (``claim_list``): CT vs each DT twin per critic and Δt, the Δt sensitivity of each row
  (gap at the smallest Δt − at Δt_ref), the critic for PPO, fixed rows against their own
  objective's optimum; paired t-intervals over seeds with Welch beside them, Holm across all
  claims (``_selection.paired_interval``, ``welch_interval``, ``holm``);
* floors: the exact optimum of the Euler chain's discretized CT objective (the floor of every
  CT and rescaled row) and the exact optimum of the *fixed-constant* DT objective
  (``lq.discrete_optimum_gap``), the floor of the ``fixed`` rows.

Cells are cached one JSON each in ``<out>/cells/`` (a rerun skips finished cells; ``--worker
i/n`` runs every n-th cell so two processes can share the sweep; a worker tunes its own rows
and waits for the other's tuning cells). Writes ``results.json`` (per-seed rows, tuning rows,
the selection record, paired claims with Holm), ``rows.csv``, ``table.md`` and ``gap_vs_dt.png`` to
``<out>`` (default ``results/`` next to this file, ``results_quick/`` with ``--quick``).
``--table-only`` rebuilds the outputs from the cached cells.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _selection as sel  # noqa: E402
from _cells import cached, ci95  # noqa: E402

from scorealign.config import load_config  # noqa: E402
from scorealign.control import lq  # noqa: E402
from scorealign.control.envs import make_env  # noqa: E402
from scorealign.control.train import ControlConfig, train_control  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs" / "control"
REF_DT = 0.05
LRS = (0.02, 0.05, 0.1)
MAX_KLS = (0.005, 0.01, 0.02)
N_PATHS = 32  # paths per iteration (sized to fit ~25 CPU-min, see README)
TUNE_SEEDS = (100, 101)  # tuning seeds, never reported (``_selection.split``)
N_SEEDS = 10  # reported seeds 0..9, paired across rows
MAX_WIDEN = 3
DTS = (0.05, 0.02, 0.01)  # Δt_ref, one between, the smallest
CRITIC_SETS = {"TD": {"ct": ["policy.q_estimator=td"], "dt": ["discrete.advantage=gae"]},
               "fit": {"ct": ["policy.q_estimator=regression"],
                       "dt": ["discrete.advantage=regression"]}}
DT_FORMS = {"fixed": ["discrete.scaling=step"], "rescaled": ["discrete.scaling=time"],
            "rescaled λ=0": ["discrete.scaling=time", "discrete.lam=0"]}


def variants() -> dict[str, tuple[str, list[str]]]:
    """label → (config name, --set overrides), CT methods first."""
    out = {}
    for critic, sets in CRITIC_SETS.items():
        for name in ("ct_pg", "ct_trpo", "ct_ppo"):
            out[f"{name.upper().replace('_', '-')} [{critic}]"] = (name, list(sets["ct"]))
    for critic, sets in CRITIC_SETS.items():
        for name in ("dt_pg", "dt_ppo"):
            extra = ["algo.hparams.minibatches=1"] if name == "dt_ppo" else []
            for form, fsets in DT_FORMS.items():
                label = f"{name.upper().replace('_', '-')} {form} [{critic}]"
                out[label] = (name, [*sets["dt"], *fsets, *extra])
    return out


def step_grid(config: str) -> tuple[str, tuple[float, ...]]:
    """The swept step-size knob of a config and its grid."""
    return ("algo.hparams.max_kl", MAX_KLS) if config == "ct_trpo" else ("algo.lr", LRS)


def canonical(label: str, dt: float) -> str:
    """At Δt = Δt_ref the fixed and rescaled DT forms are the same run: share its cell."""
    return label.replace(" fixed ", " rescaled ") if dt == REF_DT else label


def cell_path(out: Path, label: str, dt: float, seed: int, step: float) -> Path:
    key = f"{canonical(label, dt)}|dt={dt:g}|seed={seed}|step={step:g}"
    safe = "".join(c if c.isalnum() or c in "=.-" else "_" for c in key)
    return out / "cells" / f"{safe}.json"


def run_cell(out: Path, label: str, dt: float, seed: int, step: float,
             iterations: int, extra: tuple[str, ...] = ()) -> dict:
    """Train one (variant, Δt, seed, step size); cached as one JSON (``experiments/_cells.py``)."""

    def compute() -> dict:
        name, sets = variants()[label]
        knob, _ = step_grid(name)
        cfg = load_config(CONFIGS / f"{name}.yaml", ControlConfig,
                          [*sets, f"dt={dt}", f"train.seed={seed}", f"train.steps={iterations}",
                           f"eval_every={iterations}", f"{knob}={step}", *extra])
        t0 = time.time()
        final = train_control(cfg)
        return {"variant": canonical(label, dt), "dt": dt, "seed": seed, "step": step,
                "gap": float(final["perf/gap"]), "k": float(final["policy/k"]),
                "std": float(final["policy/std"]), "seconds": round(time.time() - t0, 2)}

    return cached(cell_path(out, label, dt, seed, step), compute, cpu_key="cpu_s")


def floors(dts: list[float]) -> dict[str, dict[float, float]]:
    cfg = load_config(CONFIGS / "ct_ppo.yaml", ControlConfig)
    env, g = make_env(cfg.env.name, cfg.env.params), cfg.temperature
    kref = math.exp(-env.beta * REF_DT)
    return {"chain": {dt: lq.discrete_optimum_gap(env, g, dt, math.exp(-env.beta * dt), g * dt)
                      for dt in dts},
            "fixed": {dt: lq.discrete_optimum_gap(env, g, dt, kref, g * REF_DT) for dt in dts}}



# ----------------------------------------------------------------------------------------------
# selection (experiments/_selection.py) and the paired claims
# ----------------------------------------------------------------------------------------------


def owner(label: str, tune_dt: float, labels: list[str]) -> int:
    """Index of the tuning unit of ``label``: rows that share their tuning cells (the fixed and
    rescaled DT forms at Δt_ref) share a unit, so one worker runs them."""
    units = sorted({canonical(lab, tune_dt) for lab in labels})
    return units.index(canonical(label, tune_dt))


def tune_row(out: Path, label: str, tune_dt: float, seeds: tuple[int, ...], grid: tuple,
             iterations: int, extra: tuple, max_widen: int, mode: str) -> sel.Tuned:
    """Step size of one row on the tuning seeds at Δt_ref, widened while the pick is at an edge.

    ``mode``: "run" trains missing cells, "wait" polls for cells another worker trains,
    "read" raises LookupError on a missing cell (``--table-only``).
    """
    def score(step: float) -> dict:
        gaps = []
        for s in seeds:
            p = cell_path(out, label, tune_dt, s, step)
            if mode == "run":
                gaps.append(run_cell(out, label, tune_dt, s, step, iterations, extra)["gap"])
                continue
            while not p.is_file():
                if mode == "read":
                    raise LookupError(f"{label}: tuning cell step={step:g} seed={s} missing")
                time.sleep(5)
            gaps.append(json.loads(p.read_text())["gap"])
        return {"reward": -float(sum(gaps) / len(gaps)), "gap": float(sum(gaps) / len(gaps))}

    return sel.tune_grid(grid, score, max_widen=max_widen, geometric=True)


def claim_list(labels: list[str], dts: list[float]) -> list[tuple]:
    """The claims of this experiment, all under one Holm correction:
    (kind, name, (row a, Δt a), (row b or None, Δt b), unit).

    * CT vs DT twin, same critic, each Δt: CT-PG / CT-PPO against the DT row in each form
      (fixed, rescaled, rescaled λ = 0; fixed = rescaled at Δt_ref, counted once);
    * Δt sensitivity of each CT row and each rescaled DT row: gap at the smallest Δt − at Δt_ref;
    * the critic for PPO at the smallest Δt: [TD] − [fit];
    * fixed DT rows against the exact optimum of their own objective (one-sample: row − floor).
    """
    out = []
    lo, ref = min(dts), REF_DT if REF_DT in dts else max(dts)
    have = set(labels)
    for critic in CRITIC_SETS:
        for m in ("PG", "PPO"):
            ct = f"CT-{m} [{critic}]"
            for dt in sorted(dts, reverse=True):
                for form in DT_FORMS:
                    if form == "fixed" and dt == REF_DT:
                        continue
                    dt_row = f"DT-{m} {form} [{critic}]"
                    if ct in have and dt_row in have:
                        out.append(("twin", f"{ct} − {dt_row}, Δt = {dt:g}", (ct, dt),
                                    (dt_row, dt), "gap"))
    if lo != ref:
        for lab in labels:
            if lab.startswith("CT") or " rescaled" in lab:
                out.append(("dt", f"{lab}: gap at Δt = {lo:g} − at Δt = {ref:g}", (lab, lo),
                            (lab, ref), "gap"))
        for fam in ("CT-PPO", "DT-PPO rescaled λ=0"):
            a, b = f"{fam} [TD]", f"{fam} [fit]"
            if a in have and b in have:
                out.append(("critic", f"{a} − {b}, Δt = {lo:g}", (a, lo), (b, lo), "gap"))
        for lab in labels:
            if " fixed " in lab:
                for dt in dts:
                    if dt != REF_DT:
                        out.append(("floor", f"{lab} − fixed-objective optimum, Δt = {dt:g}",
                                    (lab, dt), (None, dt), "gap"))
    return out


def analyse(rows: list[dict], labels: list[str], dts: list[float], fl: dict) -> dict:
    """Paired (by seed) intervals with Welch beside, Holm across every claim."""
    by = {(r["variant"], r["dt"], r["seed"]): r["gap"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    claims, pvals = {}, {}
    for kind, name, (a, da), (b, db), unit in claim_list(labels, dts):
        common = [s for s in seeds if (a, da, s) in by and (b is None or (b, db, s) in by)]
        if len(common) < 2:
            continue
        xa = [by[(a, da, s)] for s in common]
        xb = ([by[(b, db, s)] for s in common] if b is not None
              else [fl["fixed"][db]] * len(common))
        c = {"kind": kind, "unit": unit, "paired": sel.paired_interval(xa, xb)}
        if b is not None:
            c["welch"] = sel.welch_interval(xa, xb)
        claims[name] = c
        pvals[name] = c["paired"]["p"]
    holm = sel.holm(pvals)
    for name, c in claims.items():
        c["holm"] = holm[name]
    return claims


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 coarse Δt, 2 seeds, 1 tuning seed, 2 step sizes widened at most "
                         "once, 2 iterations of 16 paths")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default="0/1", help="i/n: run every n-th cell, from the i-th")
    ap.add_argument("--table-only", action="store_true", help="only rebuild from cached cells")
    ap.add_argument("--dts", default=None, help="comma list of Δt (default 0.05,0.02,0.01)")
    ap.add_argument("--seeds", type=int, default=None, help="reported seeds (default 10)")
    ap.add_argument("--rows", default=None,
                    help="'|'-separated row labels to train (default all; tables show all)")
    args = ap.parse_args(argv)
    out = args.out or HERE / ("results_quick" if args.quick else "results")
    dts = [0.5, 0.25] if args.quick else list(DTS)
    if args.dts:
        dts = [float(x) for x in args.dts.split(",")]
    split = sel.split(args.seeds or (2 if args.quick else N_SEEDS),
                      1 if args.quick else len(TUNE_SEEDS), tuning_offset=TUNE_SEEDS[0])
    seeds, tune_seeds = list(split.reported_seeds), split.tuning_seeds
    iterations = 2 if args.quick else 30
    tune_dt = 0.5 if args.quick else REF_DT
    extra = ("n_paths=16",) if args.quick else (f"n_paths={N_PATHS}",)
    max_widen = 1 if args.quick else MAX_WIDEN
    labels = list(variants())
    grid = {lab: step_grid(variants()[lab][0])[1][1:3] if args.quick
            else step_grid(variants()[lab][0])[1] for lab in labels}
    wi, wn = map(int, args.worker.split("/"))
    t0 = time.time()
    # 1. step size per row on the tuning seeds at Δt_ref (widened while at an edge); a worker
    #    trains its own rows' cells and waits for the others'
    chosen: dict[str, sel.Tuned] = {}
    try:
        for own in (True, False):
            for lab in labels:
                if (owner(lab, tune_dt, labels) % wn == wi) != own:
                    continue
                mode = "read" if args.table_only else ("run" if own else "wait")
                chosen[lab] = tune_row(out, lab, tune_dt, tune_seeds, grid[lab], iterations,
                                       extra, max_widen, mode)
    except LookupError as e:
        print(f"tuning incomplete: {e}")
        return
    chosen = {lab: chosen[lab] for lab in labels}
    # 2. reported seeds: the smallest Δt first, seed-major within a Δt, so an interrupted run
    #    has whole seeds at the Δt that matters most
    cells = [(lab, dt, seed) for dt in sorted(dts) for seed in seeds for lab in labels]
    if not args.table_only:
        for j, (lab, dt, seed) in enumerate(cells):
            if j % wn == wi and (not args.rows or lab in args.rows.split("|")):
                r = run_cell(out, lab, dt, seed, chosen[lab].pick, iterations, extra)
                print(f"{lab:32s} dt={dt:<5g} seed={seed} gap={r['gap']:.4f} "
                      f"({r.get('cpu_s', float('nan')):.1f} CPU-s)", flush=True)
    rows = []
    for lab, dt, seed in cells:
        p = cell_path(out, lab, dt, seed, chosen[lab].pick)
        if p.is_file():
            rows.append({**json.loads(p.read_text()), "variant": lab})
    tuning = [{**json.loads(p.read_text()), "row": lab} for lab in labels
              for st in chosen[lab].grid for s in tune_seeds
              if (p := cell_path(out, lab, tune_dt, s, st)).is_file()]
    write_outputs(out, rows, tuning, chosen, dts, seeds, iterations, tune_dt, split)
    print(f"{time.time() - t0:.0f}s -> {out}")


def write_outputs(out: Path, rows: list[dict], tuning: list[dict], chosen: dict,
                  dts: list[float], seeds: list[int], iterations: int, tune_dt: float,
                  split: sel.Split) -> None:
    fl = floors(dts)
    present = {r["variant"] for r in rows}
    labels = [lab for lab in chosen if lab in present] or list(chosen)
    summary = {}
    for lab in labels:
        for dt in dts:
            g = [r["gap"] for r in rows if r["variant"] == lab and r["dt"] == dt]
            if g:
                m, h = ci95(g)
                summary[f"{lab}|{dt:g}"] = {"mean": m, "ci95": h, "n": len(g)}
    claims = analyse(rows, labels, dts, fl)
    record = sel.record(chosen, selection=SELECTION, split_=split)
    out.mkdir(parents=True, exist_ok=True)
    complete = all(summary.get(f"{lab}|{dt:g}", {}).get("n") == len(seeds)
                   for lab in chosen for dt in dts)
    (out / "results.json").write_text(json.dumps(
        {"status": "complete" if complete else "PARTIAL", "dts": dts, "seeds": seeds,
         "iterations": iterations, "tune_dt": tune_dt, "tune_seeds": list(split.tuning_seeds),
         "chosen_step": {lab: t.pick for lab, t in chosen.items()}, "selection": record,
         "floors": {k: {str(d): v for d, v in f.items()} for k, f in fl.items()},
         "summary": summary, "claims": claims, "rows": rows, "tuning": tuning}, indent=1))
    with open(out / "rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["variant", "dt", "seed", "step", "gap", "k", "std",
                                          "seconds", "cpu_s"])
        w.writeheader()
        w.writerows({k: r.get(k) for k in w.fieldnames} for r in rows)
    cpu = sum(r.get("cpu_s", 0.0) for r in rows + tuning)
    (out / "table.md").write_text(table(summary, chosen, fl, dts, labels, claims, tune_dt,
                                        split, complete, cpu))
    plot(rows, summary, fl, dts, labels, out / "gap_vs_dt.png")


SELECTION = ("min mean gap J* − J(π) (max mean −gap; no gold floor: the gap is the true "
             "objective, in closed form) over the tuning seeds at Δt_ref, held fixed at every Δt")


def _cell(summary: dict, lab: str, dt: float) -> str:
    s = summary.get(f"{lab}|{dt:g}")
    if s is None:
        return "–"
    return f"{s['mean']:.4f} ± {s['ci95']:.4f}" if s["n"] > 1 else f"{s['mean']:.4f}"


def table(summary, chosen, fl, dts, labels, claims, tune_dt, split, complete, cpu) -> str:
    cfg = load_config(CONFIGS / "ct_ppo.yaml", ControlConfig)
    env = make_env(cfg.env.name, cfg.env.params)
    pi_star, _ = lq.optimal_policy(env, cfg.temperature)
    J_star = lq.performance(env, pi_star, cfg.temperature)
    J0 = lq.performance(env, lq.LinearGaussian(0.0, 0.0, cfg.policy.init_std), cfg.temperature)
    n = max((s["n"] for s in summary.values()), default=0)
    ts = ", ".join(map(str, split.tuning_seeds))
    lines = [f"Status: {'complete' if complete else 'PARTIAL (cells missing)'}; "
             f"{cpu / 60:.1f} CPU-min in the cells that record it (tuning and reported; "
             "cells reused from the earlier run carry no CPU time).", "",
             f"Gap J* − J(π) after training (closed form, continuous time): mean ± 95 % "
             f"t-interval half-width over {n} reported seeds "
             f"({split.reported_seeds[0]}–{split.reported_seeds[-1]}). J* = {J_star:.4f}, "
             f"k* = {pi_star.k:.3f}, s* = {pi_star.s:.3f}; initial policy gap "
             f"{J_star - J0:.3f}. Step size (Adam lr; CT-TRPO: max KL) picked per row at "
             f"Δt = {tune_dt:g} on the tuning seeds {ts} (never reported).", "",
             "| method [critic] | step (edge?) | " + " | ".join(f"Δt = {dt:g}" for dt in dts)
             + " |", "|---|---|" + "---|" * len(dts)]
    for lab in labels:
        t = chosen[lab]
        lines.append(f"| {lab} | {t.pick:g} ({'edge' if t.edge else 'interior'}) | "
                     + " | ".join(_cell(summary, lab, dt) for dt in dts) + " |")
    lines.append("| *floor: exact optimum of the Euler chain (CT and rescaled rows)* | | "
                 + " | ".join(f"{fl['chain'][dt]:.4f}" for dt in dts) + " |")
    lines.append("| *floor: exact optimum of the fixed-constant DT objective (fixed rows)* | | "
                 + " | ".join(f"{fl['fixed'][dt]:.4f}" for dt in dts) + " |")
    lines += ["", "## Claims", "",
              "Paired t-interval (95 %) of the difference of gaps over the seeds (the same seed "
              "for both sides), Welch beside it; Holm's step-down correction across all "
              f"{len(claims)} claims of this table (FWER 0.05). A negative difference: the first "
              "row has the smaller gap. Floor claims: row − the exact optimum of its own "
              "objective (one-sample).", "",
              *sel.claims_table(claims, digits=".4f")]
    lines += ["", f"## Step-size selection (tuning seeds {ts}, Δt = {tune_dt:g})", "",
              f"Rule: {SELECTION}; the grid (Adam lr {LRS}, CT-TRPO max KL {MAX_KLS}) is "
              "widened geometrically (`_selection.tune_grid`) while the pick sits at an edge, "
              "at most 3 times; `edge: True` if the pick is still at an edge.", "",
              "| method [critic] | mean gap per step | pick | edge | widened | note |",
              "|---|---|---|---|---|---|"]
    for lab in labels:
        t = chosen[lab]
        sc = ", ".join(f"{k:g}: {v['gap']:.4f}" for k, v in sorted(t.scores.items()))
        lines.append(f"| {lab} | {sc} | {t.pick:g} | {t.edge} | {t.widened} | {t.reason} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], summary, fl, dts, labels, path: Path) -> None:
    """Per Δt, one line per row: the seeds (dots), mean and 95 % interval (bar), floors."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(dts), figsize=(5.5 * len(dts), 0.32 * len(labels) + 1.2),
                             sharey=True, squeeze=False)
    for ax, dt in zip(axes[0], sorted(dts)):
        for y, lab in enumerate(labels):
            g = [r["gap"] for r in rows if r["variant"] == lab and r["dt"] == dt]
            color = "C0" if lab.startswith("CT") else ("C3" if " fixed " in lab else "C2")
            ax.plot(g, [y] * len(g), "o", ms=3, alpha=0.5, color=color)
            sm = summary.get(f"{lab}|{dt:g}")
            if sm:
                h = 0.0 if math.isnan(sm["ci95"]) else sm["ci95"]
                lo = max(sm["mean"] - h, 1e-5)
                ax.plot([lo, sm["mean"] + h], [y, y], "-", color=color, lw=2)
                ax.plot(sm["mean"], y, "|", ms=10, color="k")
        ax.axvline(max(fl["chain"][dt], 1e-5), color="k", ls=":", lw=1,
                   label="chain optimum (CT, rescaled)")
        ax.axvline(fl["fixed"][dt], color="C3", ls=":", lw=1, label="fixed-constant DT optimum")
        ax.set_xscale("log")
        ax.set_title(f"Δt = {dt:g}", fontsize=9)
        ax.set_xlabel("gap J* − J(π)  (closed form; dots: seeds, bar: 95 % CI)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0, 0].invert_yaxis()
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
