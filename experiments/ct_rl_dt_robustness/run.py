"""Performance against the step size Δt: continuous-time methods vs discrete-time baselines on LQ.

One command regenerates the table and figure of docs/control.md:

    OMP_NUM_THREADS=1 .venv/bin/python experiments/ct_rl_dt_robustness/run.py [--quick]

For every method (the configs ``configs/control/<method>.yaml``), step size Δt and seed, train
for a fixed number of iterations with the same simulated time per iteration (n_paths paths of
~6 time units), then score the final policy by its closed-form continuous-time performance
J(π) = E V^π(X₀) and the gap J* − J(π) to the known optimum (``scorealign.control.lq``). The
evaluation never depends on the training Δt. Reference: [Zhao+23 CTPO] report (abstract) that
CT policy gradient and CT-TRPO/PPO are effective and have advantages over discrete-time
methods; their tables could not be retrieved here, so this experiment states what we measure.

Writes ``results/results.json``, ``results/table.md`` and ``results/gap_vs_dt.png`` next to
this file; every finished run is appended to ``results/rows.jsonl`` at once, and a rerun skips
the runs found there (so an interrupted sweep continues; delete the file to start over).
``--quick`` (2 step sizes, 1 seed, 20 iterations; into ``results_quick/``) takes ~30 s.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from scorealign.config import load_config
from scorealign.control import lq
from scorealign.control.envs import make_env
from scorealign.control.train import ControlConfig, train_control

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "configs" / "control"
METHODS = {  # label -> (config file, extra --set overrides)
    "CT-PG": ("ct_pg", []),
    "CT-TRPO": ("ct_trpo", []),
    "CT-PPO": ("ct_ppo", []),
    "CT-PPO (√KL penalty)": ("ct_ppo_penalty", []),
    "DT-PG": ("dt_pg", []),
    "DT-PPO": ("dt_ppo", []),
    "DT-PPO (Δt-rescaled)": ("dt_ppo", ["discrete.scaling=time"]),
}


def run_one(method: str, dt: float, seed: int, iterations: int) -> dict:
    name, extra = METHODS[method]
    sets = [f"dt={dt}", f"train.seed={seed}", f"train.steps={iterations}",
            f"eval_every={iterations}", *extra]
    cfg = load_config(CONFIGS / f"{name}.yaml", ControlConfig, sets)
    t0 = time.time()
    final = train_control(cfg)
    return {"method": method, "dt": dt, "seed": seed, "gap": float(final["perf/gap"]),
            "J": float(final["perf/J"]), "k": float(final["policy/k"]),
            "k_star": float(final["policy/k_star"]), "std": float(final["policy/std"]),
            "seconds": time.time() - t0}


def chain_optimum_gap(env, gamma: float, dt: float) -> float:
    """Continuous-time gap of the best linear policy *for the Euler chain at Δt*: what a method
    that solved the simulated Δt-problem exactly would score. A reference for the part of a gap
    that is discretization rather than learning (not a lower bound: a learned policy can land
    nearer the continuous optimum). Found by Nelder–Mead on the chain's closed form."""
    from scipy.optimize import minimize

    pi_star, _ = lq.optimal_policy(env, gamma)

    def neg_J(theta):
        return -lq.performance(env, lq.LinearGaussian(theta[0], theta[1], math.exp(theta[2])),
                               gamma, dt)

    res = minimize(neg_J, [pi_star.k, pi_star.h, math.log(pi_star.s)], method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    k, h, log_s = res.x
    pi_dt = lq.LinearGaussian(k, h, math.exp(log_s))
    return lq.performance(env, pi_star, gamma) - lq.performance(env, pi_dt, gamma)


def summarize(rows: list[dict], dts: list[float]) -> str:
    cfg = load_config(CONFIGS / "ct_ppo.yaml", ControlConfig)
    env = make_env(cfg.env.name, cfg.env.params)
    pi_star, _ = lq.optimal_policy(env, cfg.temperature)
    J_star = lq.performance(env, pi_star, cfg.temperature)
    J0 = lq.performance(env, lq.LinearGaussian(0.0, 0.0, cfg.policy.init_std), cfg.temperature)
    lines = [f"Gap J* − J(π) after training (closed form, continuous time; mean ± s.e. over "
             f"seeds). J* = {J_star:.4f}, k* = {pi_star.k:.3f}, s* = {pi_star.s:.3f}; initial "
             f"policy gap {J_star - J0:.3f}.", "",
             "| method | " + " | ".join(f"Δt = {dt:g}" for dt in dts) + " |",
             "|---|" + "---|" * len(dts)]
    for method in METHODS:
        cells = []
        for dt in dts:
            g = np.array([r["gap"] for r in rows if r["method"] == method and r["dt"] == dt])
            if len(g) == 0:
                cells.append("–")
                continue
            se = g.std(ddof=1) / math.sqrt(len(g)) if len(g) > 1 else float("nan")
            cells.append(f"{g.mean():.4f} ± {se:.4f}" if len(g) > 1 else f"{g.mean():.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    floors = [f"{chain_optimum_gap(env, cfg.temperature, dt):.4f}" for dt in dts]
    lines.append("| *reference: optimum of the Δt-chain* | " + " | ".join(floors) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], dts: list[float], path: Path) -> None:
    """Gap vs Δt per method (mean ± s.e.), with the Δt-chain optimum's gap as a dotted line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for method in METHODS:
        means, ses = [], []
        for dt in dts:
            g = np.array([r["gap"] for r in rows if r["method"] == method and r["dt"] == dt])
            means.append(g.mean())
            ses.append(g.std(ddof=1) / math.sqrt(len(g)) if len(g) > 1 else 0.0)
        ls = "-" if method.startswith("CT") else "--"
        ax.errorbar(dts, means, yerr=ses, marker="o", ms=3, ls=ls, capsize=2, label=method)
    cfg = load_config(CONFIGS / "ct_ppo.yaml", ControlConfig)
    env = make_env(cfg.env.name, cfg.env.params)
    ref = [(dt, chain_optimum_gap(env, cfg.temperature, dt)) for dt in dts]
    ref = [(dt, g) for dt, g in ref if g > 1e-5]
    ax.plot(*zip(*ref), "k:", lw=1, label="optimum of Δt-chain")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training step size Δt")
    ax.set_ylabel("gap J* − J(π)  (closed form)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 step sizes, 1 seed, 20 iterations")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: results/, or results_quick/ with --quick)")
    ap.add_argument("--table-only", action="store_true",
                    help="rebuild table.md and the figure from an existing results.json")
    args = ap.parse_args()
    args.out = args.out or HERE / ("results_quick" if args.quick else "results")
    if args.table_only:
        saved = json.loads((args.out / "results.json").read_text())
        (args.out / "table.md").write_text(summarize(saved["rows"], saved["dts"]))
        plot(saved["rows"], saved["dts"], args.out / "gap_vs_dt.png")
        print((args.out / "table.md").read_text())
        return
    dts = [0.1, 0.02] if args.quick else [0.2, 0.1, 0.05, 0.02, 0.01]
    seeds = [0] if args.quick else [0, 1, 2]
    iterations = 20 if args.quick else 60
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "rows.jsonl"  # one line per finished run
    done = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    t0 = time.time()
    for dt in dts:
        for method in METHODS:
            for seed in seeds:
                if any(r["method"] == method and r["dt"] == dt and r["seed"] == seed
                       for r in done):
                    continue  # finished before an interruption: rerunning would repeat it
                r = run_one(method, dt, seed, iterations)
                done.append(r)
                with open(log, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"{method:22s} dt={dt:<5g} seed={seed} gap={r['gap']:.4f} "
                      f"k={r['k']:.3f} ({r['seconds']:.1f}s)", flush=True)
    rows = [r for r in done if r["dt"] in dts and r["seed"] in seeds]
    table = summarize(rows, dts)
    (args.out / "results.json").write_text(json.dumps(
        {"dts": dts, "seeds": seeds, "iterations": iterations, "rows": rows}, indent=1))
    (args.out / "table.md").write_text(table)
    plot(rows, dts, args.out / "gap_vs_dt.png")
    print(table)
    print(f"total {time.time() - t0:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
