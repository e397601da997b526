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
* the same step-size sweep for every variant (Adam lr in LRS; CT-TRPO's trust-region size in
  MAX_KLS), picked at Δt = Δt_ref on a separate seed (TUNE_SEED), then held fixed at every Δt;
* Δt ∈ {0.05, 0.02, 0.01} for every row, 30 iterations of N_PATHS = 32 paths (the shipped
  configs: 60 × 128; 32 keeps the full sweep near 25 CPU-minutes), every method the same
  simulated time;
* 5 seeds per cell, 95 % t-intervals; the score is the closed-form continuous-time gap
  J* − J(π) of the final policy (``scorealign.control.lq``), independent of the training Δt;
* floors: the exact optimum of the Euler chain's discretized CT objective (the floor of every
  CT and rescaled row) and the exact optimum of the *fixed-constant* DT objective
  (``lq.discrete_optimum_gap``), the floor of the ``fixed`` rows.

Cells are cached one JSON each in ``<out>/cells/`` (a rerun skips finished cells; ``--worker
i/n`` runs every n-th cell so two processes can share the sweep). Writes ``results.json``
(per-seed rows, tuning rows, intervals), ``rows.csv``, ``table.md`` and ``gap_vs_dt.png`` to
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
TUNE_SEED = 100
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 coarse Δt, 2 seeds, 2 step sizes, 2 iterations of 16 paths")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default="0/1", help="i/n: run every n-th cell, from the i-th")
    ap.add_argument("--table-only", action="store_true", help="only rebuild from cached cells")
    ap.add_argument("--dts", default=None, help="comma list of Δt (default 0.05,0.02,0.01)")
    ap.add_argument("--rows", default=None,
                    help="'|'-separated row labels to train (default all; tables show all)")
    args = ap.parse_args(argv)
    out = args.out or HERE / ("results_quick" if args.quick else "results")
    dts = [0.5, 0.25] if args.quick else [0.05, 0.02, 0.01]
    if args.dts:
        dts = [float(x) for x in args.dts.split(",")]
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    iterations = 2 if args.quick else 30
    tune_dt = 0.5 if args.quick else REF_DT
    extra = ("n_paths=16",) if args.quick else (f"n_paths={N_PATHS}",)
    labels = list(variants())
    grid = {lab: step_grid(variants()[lab][0])[1][1:3] if args.quick
            else step_grid(variants()[lab][0])[1] for lab in labels}
    wi, wn = map(int, args.worker.split("/"))
    t0 = time.time()
    # 1. step-size sweep at the tuning Δt on the tuning seed
    tune_cells = [(lab, s) for lab in labels for s in grid[lab]]
    if not args.table_only:
        for j, (lab, s) in enumerate(tune_cells):
            if j % wn == wi:
                run_cell(out, lab, tune_dt, TUNE_SEED, s, iterations, extra)
    while True:  # the step sizes are chosen once every worker's tuning cells are in
        tuning = [json.loads(p.read_text()) for lab, s in tune_cells
                  if (p := cell_path(out, lab, tune_dt, TUNE_SEED, s)).is_file()]
        if len(tuning) == len(tune_cells):
            break
        if args.table_only:
            print(f"tuning incomplete ({len(tuning)}/{len(tune_cells)})")
            return
        time.sleep(5)
    chosen = {}
    for lab in labels:
        rs = [r for r in tuning if r["variant"] == canonical(lab, tune_dt) and r["step"]
              in grid[lab]]
        chosen[lab] = min(rs, key=lambda r: r["gap"])["step"]
    # 2. evaluation seeds: the smallest Δt first, seed-major within a Δt, so an interrupted run
    #    has whole seeds at the Δt that matters most
    cells = [(lab, dt, seed) for dt in sorted(dts) for seed in seeds for lab in labels]
    if not args.table_only:
        for j, (lab, dt, seed) in enumerate(cells):
            if j % wn == wi and (not args.rows or lab in args.rows.split("|")):
                r = run_cell(out, lab, dt, seed, chosen[lab], iterations, extra)
                print(f"{lab:32s} dt={dt:<5g} seed={seed} gap={r['gap']:.4f} "
                      f"({r['seconds']:.1f}s)", flush=True)
    rows = []
    for lab, dt, seed in cells:
        p = cell_path(out, lab, dt, seed, chosen[lab])
        if p.is_file():
            rows.append({**json.loads(p.read_text()), "variant": lab})
    write_outputs(out, rows, tuning, chosen, dts, seeds, iterations, tune_dt)
    print(f"{time.time() - t0:.0f}s -> {out}")


def write_outputs(out: Path, rows: list[dict], tuning: list[dict], chosen: dict,
                  dts: list[float], seeds: list[int], iterations: int, tune_dt: float) -> None:
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"dts": dts, "seeds": seeds, "iterations": iterations, "tune_dt": tune_dt,
         "tune_seed": TUNE_SEED, "chosen_step": chosen, "floors": {k: {str(d): v for d, v in
                                                                          f.items()}
                                                                      for k, f in fl.items()},
         "summary": summary, "rows": rows, "tuning": tuning}, indent=1))
    with open(out / "rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["variant", "dt", "seed", "step", "gap", "k", "std",
                                          "seconds", "cpu_s"])
        w.writeheader()
        w.writerows({k: r.get(k) for k in w.fieldnames} for r in rows)
    (out / "table.md").write_text(table(summary, chosen, fl, dts, labels, tuning, tune_dt))
    plot(rows, summary, fl, dts, labels, out / "gap_vs_dt.png")


def _cell(summary: dict, lab: str, dt: float) -> str:
    s = summary.get(f"{lab}|{dt:g}")
    if s is None:
        return "–"
    return f"{s['mean']:.4f} ± {s['ci95']:.4f}" if s["n"] > 1 else f"{s['mean']:.4f}"


def table(summary, chosen, fl, dts, labels, tuning, tune_dt) -> str:
    cfg = load_config(CONFIGS / "ct_ppo.yaml", ControlConfig)
    env = make_env(cfg.env.name, cfg.env.params)
    pi_star, _ = lq.optimal_policy(env, cfg.temperature)
    J_star = lq.performance(env, pi_star, cfg.temperature)
    J0 = lq.performance(env, lq.LinearGaussian(0.0, 0.0, cfg.policy.init_std), cfg.temperature)
    n = max((s["n"] for s in summary.values()), default=0)
    lines = [f"Gap J* − J(π) after training (closed form, continuous time): mean ± 95 % "
             f"t-interval half-width over {n} seeds. J* = {J_star:.4f}, k* = {pi_star.k:.3f}, "
             f"s* = {pi_star.s:.3f}; initial policy gap {J_star - J0:.3f}. Step size (Adam lr; "
             f"CT-TRPO: max KL) picked per row at Δt = {tune_dt:g} on seed {TUNE_SEED}.", "",
             "| method [critic] | step | " + " | ".join(f"Δt = {dt:g}" for dt in dts) + " |",
             "|---|---|" + "---|" * len(dts)]
    for lab in labels:
        lines.append(f"| {lab} | {chosen[lab]:g} | "
                     + " | ".join(_cell(summary, lab, dt) for dt in dts) + " |")
    lines.append("| *floor: exact optimum of the Euler chain (CT and rescaled rows)* | | "
                 + " | ".join(f"{fl['chain'][dt]:.4f}" for dt in dts) + " |")
    lines.append("| *floor: exact optimum of the fixed-constant DT objective (fixed rows)* | | "
                 + " | ".join(f"{fl['fixed'][dt]:.4f}" for dt in dts) + " |")
    lines += ["", f"Step-size sweep (gap at Δt = {tune_dt:g}, seed {TUNE_SEED}):", "",
              "| method [critic] | " + " | ".join(f"lr {a:g} (TRPO: max KL {b:g})"
                                                 for a, b in zip(LRS, MAX_KLS)) + " |",
              "|---|" + "---|" * len(LRS)]
    for lab in labels:
        rs = {r["step"]: r["gap"] for r in tuning if r["variant"] == canonical(lab, tune_dt)}
        vals = [f"{rs[s]:.4f}" if s in rs else "–" for s in sorted(rs)]
        lines.append(f"| {lab} | " + " | ".join(vals) + " |")
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
