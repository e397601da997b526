"""Flow-GRPO, Flow-GRPO-Fast, MixGRPO, DiffusionNFT, LOOP and Score as Action on the shipped
rectified-flow digits model (``pretrained:digits8-flow``), under one fair protocol.

Protocol (the RL soundness issue's): every method fine-tunes the same base toward the same
reward (``aesthetic_proxy``) with the same budget — P·K rollouts per epoch (P = 2 prompts,
K = 4), 6 sampler steps, one inner epoch of 2 minibatches, 12 epochs —; its learning rate is
picked from {1e-4, 3e-4, 1e-3} on a separate seed (``--sweep-seed``) by the final evaluation
reward; then it runs on ``--seeds`` (≥ 5). Each run is evaluated at epochs 0, E/2 and E on a
fixed evaluation set (64 prompts, x_T from seeds 10⁶ + i, Euler ODE with the policy's steps and
guidance, no exploration or SDE noise) under the optimized reward and the held-out gold reward
(classifier probability of the prompted digit). Per epoch we log the rollout reward, reward
queries, CPU seconds (``time.process_time``) and ``cost/model_evals_grad``. One JSON per
(method, lr, seed) cell under ``results/cells``: a stopped run continues where it stopped.

    OMP_NUM_THREADS=1 python experiments/flow_rl/run.py [--quick] [--jobs N]

Writes ``results/summary.json``, ``results/per_seed.csv``, ``results/table.md`` and
``results/figures/*.png`` from whatever cells exist.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "finetune"
# name → (config, overrides). MixGRPO's window is scaled to this grid: 2 of the 5 action steps
# (their 4 of 23), sliding one step every 2 epochs (their 25 of 300 iterations ≈ every 1 of 12).
METHODS = {
    "Flow-GRPO": ("digits_flow_grpo.yaml", []),
    "Flow-GRPO-Fast": ("digits_flow_grpo_fast.yaml", []),
    "MixGRPO": ("digits_flow_mixgrpo.yaml", ["policy.action_steps=slide:2:2:1"]),
    "DiffusionNFT": ("digits_flow_nft.yaml", []),
    "LOOP": ("digits_flow_loop.yaml", []),
    "Score as Action": ("digits_flow_score_as_action.yaml", []),
}
LRS = [1e-4, 3e-4, 1e-3]
EVAL_N = 64
STEPS = 6
_EVAL_START: dict[tuple, dict] = {}  # the base model's evaluation (identical for every cell)


def _config(method: str, base: str, lr: float, seed: int, epochs: int, p: int, k: int):
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig

    config, extra = METHODS[method]
    b = p * k
    sets = [f"base.path={base}", f"train.epochs={epochs}", f"train.seed={seed}",
            f"policy.steps={STEPS}", f"prompts.per_epoch={p}", f"prompts.k={k}",
            "train.inner_epochs=1", f"train.minibatch_size={b // 2}",
            f"train.sample_batch_size={b}", f"train.lr={lr}", "train.log_kl=false",
            "device=cpu", *extra]
    return load_config(CONFIGS / config, FinetuneConfig, sets)


def evaluate(ft, n: int = EVAL_N) -> dict[str, float]:
    """Fixed evaluation set: prompts 'digit k' balanced, x_T from seeds 10⁶ + i, Euler ODE with
    the policy's steps, grid and guidance, no exploration or SDE noise."""
    import torch

    from scorealign.samplers import sample

    pol, s = ft.policy, ft.setup
    prompts = [s.prompts[i % len(s.prompts)] for i in range(n)]
    seeds = torch.arange(n) + 1_000_000
    with torch.no_grad():
        x_T, _, _ = pol._noise(seeds, "cpu")
        x0 = sample(pol.pred_fn(pol.cond_for(prompts)), pol.kind, pol.sde, x_T,
                    sampler="euler_ode", steps=pol.steps, grid=pol.grid).x0
        scored = ft.rewards(s.decode(x0), prompts, {"epoch": -1})
    out = {"eval/reward": scored.optimized.mean().item()}
    if scored.gold is not None:
        out["eval/gold"] = scored.gold.mean().item()
    return out


def run_cell(method: str, lr: float, seed: int, a: dict) -> dict:
    """One fine-tuning run: per-epoch metrics with cumulative CPU seconds, and the fixed
    evaluation at epochs 0, E/2, E. CPU time excludes the evaluations."""
    import torch

    torch.set_num_threads(1)
    from scorealign.rl.trainer import Finetuner

    if a.get("text_cache"):
        install_text_cache(a["text_cache"])

    t0, c0 = time.time(), time.process_time()
    cfg = _config(method, a["base"], lr, seed, a["epochs"], a["prompts"], a["k"])
    ft = Finetuner(cfg, None)
    key = (a["base"], a["eval_n"], ft.policy.guidance)
    if key not in _EVAL_START:
        _EVAL_START[key] = evaluate(ft, a["eval_n"])
    cpu, rows = time.process_time() - c0, []
    evals = [{"epoch": 0, "cpu_s": cpu, "queries": 0.0, **_EVAL_START[key]}]
    eval_at = {cfg.train.epochs // 2, cfg.train.epochs}
    while ft.epoch < cfg.train.epochs:
        c1 = time.process_time()
        m = ft.train_epoch()
        ft.epoch += 1
        cpu += time.process_time() - c1
        rows.append({"epoch": ft.epoch, "cpu_s": cpu,
                     **{k: v for k, v in m.items() if "/step/" not in k}})
        if ft.epoch in eval_at:
            evals.append({"epoch": ft.epoch, "cpu_s": cpu, "queries": m["queries/reward"],
                          **evaluate(ft, a["eval_n"])})
    return {"method": method, "lr": lr, "seed": seed, "epochs": rows, "evals": evals,
            "eval_start": evals[0], "eval_end": evals[-1], "cpu_s": cpu,
            "cpu_s_total": time.process_time() - c0, "wall_s": time.time() - t0}


def write_text_cache(path: Path) -> None:
    """Save the frozen MiniLM outputs of the ten digit prompts (for a machine without the
    encoder's weights): {prompt: (token states, pooled)}, exactly what TextEncoder caches."""
    import torch

    from scorealign.data.digits import prompt_for
    from scorealign.nets import get_text_encoder

    enc = get_text_encoder("cpu")  # the ten digits under every template (pretraining's too)
    enc.encode([prompt_for(d, tpl) for d in range(10) for tpl in range(3)])
    torch.save(dict(enc._cache), path)


def install_text_cache(path: str) -> None:
    """Make ``scorealign.nets.get_text_encoder`` return an encoder holding only the cached
    prompts (bit-identical embeddings; any other prompt fails)."""
    import torch

    import scorealign.nets as nets
    from scorealign.nets.text import TextEncoder

    data = torch.load(path)
    enc = TextEncoder.__new__(TextEncoder)
    enc._cache, enc.device, enc.max_length = dict(data), torch.device("cpu"), 64
    enc.dim = int(next(iter(data.values()))[0].shape[-1])
    nets.get_text_encoder = lambda device="cpu": enc


def _cell_path(d: Path, method: str, lr: float, seed: int) -> Path:
    return d / f"{method.replace(' ', '_')}_lr{lr:g}_s{seed}.json"


def _run_cells(cells, a: dict, d: Path, jobs: int) -> None:
    todo = [c for c in cells if not _cell_path(d, *c).is_file()]
    print(f"{len(cells) - len(todo)} cells cached, {len(todo)} to run", flush=True)
    if not todo:
        return
    if jobs <= 1:  # in this process
        results = ((c, run_cell(*c, a)) for c in todo)
    else:
        pool = ProcessPoolExecutor(jobs)
        futs = {pool.submit(run_cell, *c, a): c for c in todo}
        results = ((futs[f], f.result()) for f in as_completed(futs))
    for c, res in results:
        path = _cell_path(d, *c)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(path)  # atomic: a killed run leaves no half cell
        print(f"{c[0]:15s} lr {c[1]:g} seed {c[2]}: eval reward "
              f"{res['eval_start']['eval/reward']:.4f} → {res['eval_end']['eval/reward']:.4f}"
              f" ({res['wall_s']:.0f} s)", flush=True)
    if jobs > 1:
        pool.shutdown()


def _ci95(xs: list[float]) -> tuple[float, float]:
    import numpy as np
    from scipy import stats

    x = np.asarray(xs, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) /
                                  math.sqrt(len(x)))


def _diff_ci95(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) − mean(b) with its 95% Welch interval half-width."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or len(y) < 2:
        return float(x.mean() - y.mean()), float("nan")
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:
        return float(x.mean() - y.mean()), 0.0
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return float(x.mean() - y.mean()), float(stats.t.ppf(0.975, df) * se)


def summarize(d: Path, methods: list[str], seeds: list[int], sweep_seed: int, lrs) -> dict:
    out = {}
    for m in methods:
        sweep = {lr: json.loads(p.read_text()) for lr in lrs
                 if (p := _cell_path(d, m, lr, sweep_seed)).is_file()}
        if not sweep:
            continue
        best = max(sweep, key=lambda lr: sweep[lr]["eval_end"]["eval/reward"])
        runs = [json.loads(p.read_text()) for s in seeds
                if (p := _cell_path(d, m, best, s)).is_file()]
        entry = {"lr": best, "sweep": {f"{lr:g}": sweep[lr]["eval_end"]["eval/reward"]
                                       for lr in sorted(sweep)}, "n_seeds": len(runs),
                 "per_seed": [{"seed": r["seed"], "eval_reward": r["eval_end"]["eval/reward"],
                               "eval_gold": r["eval_end"].get("eval/gold", float("nan")),
                               "cpu_s": r["cpu_s"]} for r in runs]}
        if runs:
            for key in ("eval/reward", "eval/gold"):
                entry[key] = _ci95([r["eval_end"].get(key, float("nan")) for r in runs])
            entry["eval_start/reward"] = runs[0]["eval_start"]["eval/reward"]
            entry["eval_start/gold"] = runs[0]["eval_start"].get("eval/gold", float("nan"))
            ep = runs[0]["epochs"]
            entry["model_evals_grad_per_epoch"] = sum(e["cost/model_evals_grad"] for e in ep) / \
                len(ep)
            entry["queries"] = ep[-1]["queries/reward"]
            entry["cpu_s"] = _ci95([r["cpu_s"] for r in runs])
            # the evaluation curve (mean, CI over seeds) against reward queries and CPU seconds
            entry["curve"] = [
                {"epoch": runs[0]["evals"][i]["epoch"],
                 "queries": runs[0]["evals"][i]["queries"],
                 "cpu_s": sum(r["evals"][i]["cpu_s"] for r in runs) / len(runs),
                 "reward": _ci95([r["evals"][i]["eval/reward"] for r in runs]),
                 "gold": _ci95([r["evals"][i].get("eval/gold", float("nan")) for r in runs])}
                for i in range(len(runs[0]["evals"]))]
            entry["train_reward_curve"] = [
                sum(r["epochs"][i]["reward/mean"] for r in runs) / len(runs)
                for i in range(len(ep))]
        out[m] = entry
    ref = out.get("Flow-GRPO", {}).get("per_seed")
    for m, e in out.items():
        if ref and e.get("per_seed") and m != "Flow-GRPO":
            e["vs_flow_grpo"] = _diff_ci95([r["eval_reward"] for r in e["per_seed"]],
                                           [r["eval_reward"] for r in ref])
    return out


def write_table(summary: dict, d: Path, meta: dict) -> str:
    lines = ["| method | lr (sweep: final eval reward) | eval reward start → end (95% CI) | "
             "− Flow-GRPO (95% CI) | eval gold end | model evals with grad / epoch | "
             "reward queries | CPU s / run | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, e in summary.items():
        sw = ", ".join(f"{k}: {v:.4f}" for k, v in e["sweep"].items())
        if "eval/reward" not in e:
            lines.append(f"| {m} | {e['lr']:g} ({sw}) | – | – | – | – | – | – | 0 |")
            continue
        (r, rc), (g, gc) = e["eval/reward"], e["eval/gold"]
        dv = e.get("vs_flow_grpo")
        diff = "–" if dv is None else f"{dv[0]:+.4f} ± {dv[1]:.4f}"
        lines.append(f"| {m} | {e['lr']:g} ({sw}) | {e['eval_start/reward']:.4f} → {r:.4f} ± "
                     f"{rc:.4f} | {diff} | {g:.4f} ± {gc:.4f} | "
                     f"{e['model_evals_grad_per_epoch']:.0f} | {e['queries']:.0f} | "
                     f"{e['cpu_s'][0]:.1f} | {e['n_seeds']} |")
    lines += ["", f"{meta}"]
    text = "\n".join(lines) + "\n"
    out = d.parent
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary},
                                                 indent=1))
    csv = ["method,lr,seed,eval_reward,eval_gold,cpu_s"]
    csv += [f"{m},{e['lr']:g},{r['seed']},{r['eval_reward']:.6f},{r['eval_gold']:.6f},"
            f"{r['cpu_s']:.2f}" for m, e in summary.items() for r in e.get("per_seed", [])]
    (out / "per_seed.csv").write_text("\n".join(csv) + "\n")
    return text


def plot(summary: dict, out: Path) -> None:
    """figures/reward_vs_queries.png and reward_vs_cpu.png: the fixed-set evaluation reward
    (mean over seeds, 95% CI band) at epochs 0, E/2, E."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for xkey, label, name in (("queries", "reward queries", "reward_vs_queries"),
                              ("cpu_s", "CPU seconds (single thread)", "reward_vs_cpu")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for m, e in summary.items():
            if "curve" not in e:
                continue
            x = [c[xkey] for c in e["curve"]]
            for ax, key in zip(axes, ("reward", "gold")):
                mu = [c[key][0] for c in e["curve"]]
                h = [0.0 if math.isnan(c[key][1]) else c[key][1] for c in e["curve"]]
                ax.plot(x, mu, marker="o", label=f"{m} (lr {e['lr']:g})")
                ax.fill_between(x, [a - b for a, b in zip(mu, h)],
                                [a + b for a, b in zip(mu, h)], alpha=0.15)
        axes[0].set_ylabel("eval reward (aesthetic_proxy)")
        axes[1].set_ylabel("eval gold (digit probability)")
        for ax in axes:
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(fig_dir / f"{name}.png", dpi=110)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="pretrained:digits8-flow")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--sweep-seed", type=int, default=100)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--lrs", type=float, nargs="+", default=LRS)
    ap.add_argument("--eval-n", type=int, default=EVAL_N)
    ap.add_argument("--quick", action="store_true",
                    help="1 epoch, P=2, K=2, one lr, one seed, one method, 8 eval samples (smoke)")
    ap.add_argument("--text-cache", default=None,
                    help="precomputed prompt embeddings (see --write-text-cache)")
    ap.add_argument("--write-text-cache", type=Path, default=None)
    ap.add_argument("--pretrain-out", type=Path, default=None,
                    help="first run `scorealign pretrain --config configs/pretrain/"
                         "digits_flow.yaml --out DIR` (with --text-cache) and exit")
    ap.add_argument("--summary-only", action="store_true",
                    help="tabulate the cached cells without running any")
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args(argv)
    if a.write_text_cache:
        write_text_cache(a.write_text_cache)
        return 0
    if a.pretrain_out:
        if a.text_cache:
            install_text_cache(a.text_cache)
        from scorealign.cli.app import app
        app(["pretrain", "--config", str(ROOT / "configs" / "pretrain" / "digits_flow.yaml"),
             "--out", str(a.pretrain_out)], standalone_mode=False)
        return 0
    lrs = a.lrs
    if a.quick:
        a.epochs, a.prompts, a.k, lrs = 1, 2, 2, [1e-4]
        a.seeds, a.methods = [a.sweep_seed], ["Flow-GRPO-Fast"]
    d = a.results / "cells"
    d.mkdir(parents=True, exist_ok=True)
    opts = {"base": a.base, "epochs": a.epochs, "prompts": a.prompts, "k": a.k,
            "text_cache": a.text_cache, "eval_n": 8 if a.quick else a.eval_n}
    t0 = time.time()
    if not a.summary_only:
        _run_cells([(m, lr, a.sweep_seed) for m in a.methods for lr in lrs], opts, d, a.jobs)
        sweep = summarize(d, a.methods, [], a.sweep_seed, lrs)
        _run_cells([(m, sweep[m]["lr"], s) for m in a.methods for s in a.seeds], opts, d,
                   a.jobs)
    meta = {**opts, "steps": STEPS, "seeds": a.seeds, "sweep_seed": a.sweep_seed, "lrs": lrs,
            "eval_set": f"{opts['eval_n']} prompts, seeds 1e6+i, Euler ODE {STEPS} steps",
            "wall_s_this_call": round(time.time() - t0)}
    summary = summarize(d, a.methods, a.seeds, a.sweep_seed, lrs)
    print(write_table(summary, d, meta))
    plot(summary, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
