"""A fair sample-efficiency study on digits: REINFORCE, DDPO, LOOP, GRPO, DPOK, Score as Action.

Question: per reward query, which method raises the reward fastest (the LOOP paper, Gupta+25
arXiv:2503.00897, claims LOOP > PPO/DDPO per sample), and does Score as Action give the same
curve with DDIM, Euler–Maruyama and stochastic Heun (its solver-robustness claim, Zhao+25)?

Protocol (COMMON.md fairness rules):

* equal budgets: every method sees B = P·K rollouts (= reward queries) per epoch for E epochs;
  same base model (shipped digits8), reward (aesthetic_proxy, samples clamped to [−1, 1]),
  S-step grid, default action steps (``auto``), per-dimension trust region (clip 1e-4);
* β = 0 for every method (the first table); the matched-KL table reads each run's eval reward
  where its KL to the base model reaches a common budget κ (linear interpolation along the run);
* learning rate swept over ``--lrs`` per method on a separate seed (``--select-seed``), chosen by
  the mean eval reward of the last two epochs; then ``--seeds`` (≥ 5) at the chosen lr;
* every epoch (and epoch 0) is scored on a fixed evaluation set: ``--eval-rows`` fixed seeds and
  prompts, sampled with DDIM η = 0 (no exploration noise, the same for every method), optimized
  and gold reward; the KL is a common measure for all methods: the exact per-step KL of the
  DDIM η = 1 kernels on the auto action steps, θ vs base, on fixed-seed η = 1 rollouts;
* 95 % intervals: mean ± t_{0.975, n−1} · sd/√n over seeds.

Every (method, lr, seed) cell is cached as one JSON in ``<results>/cells``; a stopped run
continues. Regenerate the tables and figures (and any missing cells) with one command:

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/rl_sample_efficiency/run.py

``--quick`` runs a tiny version (2 methods, 1 lr, 1 seed, 1 epoch) for the test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from _cells import cached, portable_path as _portable  # noqa: E402
import _selection as sel  # noqa: E402
CONFIGS = ROOT / "configs" / "finetune"
SAA = ["algo.advantage=batch", "algo.value=null", "policy.exploration=0.2",
       "algo.loss_kwargs={clip: 1.0e-4, beta: 0.0, gae_lambda: 1.0}"]
METHODS = {  # name → (config file, overrides); β = 0 for all
    "DDPO": ("digits_ddpo.yaml", ["algo.advantage_kwargs={buffer_size: 32, min_count: 8, "
                                  "adv_clip: 5.0}"]),
    "LOOP": ("digits_loop.yaml", []),
    "SaA-DDIM": ("digits_score_as_action.yaml", ["policy.sampler=ddim", "policy.eta=0.0", *SAA]),
    "SaA-EM": ("digits_score_as_action.yaml", ["policy.sampler=euler_maruyama",
                                               "policy.eta=1.0", *SAA]),
    "SaA-Heun": ("digits_score_as_action.yaml", ["policy.sampler=heun_sde", "policy.eta=1.0",
                                                 *SAA]),
    "REINFORCE": ("digits_reinforce.yaml", []),
    "GRPO": ("digits_grpo.yaml", ["algo.loss_kwargs={clip: 1.0e-4, beta: 0.0}"]),
    "DPOK": ("digits_dpok.yaml", ["algo.loss_kwargs={alpha: 1.0, beta: 0.0, clip: 1.0e-4}",
                                  "algo.value={hidden: 32, lr: 3.0e-3, steps_per_epoch: 10}"]),
}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262}


def build(method: str, a: argparse.Namespace, lr: float, seed: int):
    """The FinetuneConfig of one cell."""
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig

    config, extra = METHODS[method]
    b = a.p * a.k
    mb = b if method == "REINFORCE" else b // 2  # ratio methods reuse: 2 minibatches
    sets = [f"base.path={a.base}", f"train.epochs={a.epochs}", f"train.seed={seed}",
            f"policy.steps={a.steps}", f"prompts.per_epoch={a.p}", f"prompts.k={a.k}",
            "train.inner_epochs=1", f"train.minibatch_size={mb}",
            f"train.sample_batch_size={b}", f"train.lr={lr}", "train.log_kl=true",
            "device=cpu", *extra]
    return load_config(CONFIGS / config, FinetuneConfig, sets)


class Evaluator:
    """Fixed-seed evaluation: noise-free DDIM η = 0 samples → reward, gold; common η = 1 KL."""

    def __init__(self, ft, rows: int, steps: int):
        import torch

        from scorealign.policy.policy import Policy
        from scorealign.rng import derive_seed

        self.ft, self.steps = ft, steps
        self.prompts = [ft.setup.prompts[i % len(ft.setup.prompts)] for i in range(rows)]
        self.seeds = torch.tensor([derive_seed(2026, "eval", i) for i in range(rows)])
        s = ft.setup
        kw = dict(kind=s.kind, shape=s.shape, sampler="ddim", steps=steps, eta=1.0,
                  guidance=ft.cfg.policy.guidance, encode=s.encode)
        self.kl_pol = Policy(ft.model, s.sde, **kw)
        self.kl_ref = Policy(s.ref, s.sde, **kw)

    def __call__(self) -> dict[str, float]:
        import torch

        from scorealign.rng import randn_per_sample
        from scorealign.samplers import sample

        ft, s = self.ft, self.ft.setup
        with torch.no_grad():
            cond = self.kl_pol.cond_for(self.prompts)
            x_t = randn_per_sample(self.seeds.tolist(), s.shape, "eval-xT") * s.sde.prior_std
            x0 = sample(self.kl_pol.pred_fn(cond), s.kind, s.sde, x_t, sampler="ddim",
                        steps=self.steps, eta=0.0).x0
            out = ft.rewards(s.decode(x0), self.prompts, {"epoch": ft.epoch})
            half = len(self.prompts) // 2
            traj = self.kl_pol.rollout(self.prompts[:half], 1, seeds=self.seeds[:half])
            kl = self.kl_pol.kl(self.kl_ref, traj, recorded=True).sum(1).mean()
        m = {"eval/reward": float(out.optimized.mean()), "eval/kl": float(kl)}
        if out.gold is not None:
            m["eval/gold"] = float(out.gold.mean())
        return m


def run_cell(method: str, a: argparse.Namespace, lr: float, seed: int, path: Path) -> dict:
    """Fine-tune one cell (cached, ``experiments/_cells.py``): per-epoch training metrics and
    fixed-set evaluation."""

    def compute() -> dict:
        from scorealign.rl.trainer import Finetuner

        ft = Finetuner(build(method, a, lr, seed), None)
        ev = Evaluator(ft, a.eval_rows, a.steps)
        rows = [{"epoch": 0, "queries/reward": 0.0, **ev()}]
        while ft.epoch < a.epochs:
            m = ft.train_epoch()
            ft.epoch += 1
            keep = {k: v for k, v in m.items() if isinstance(v, float) and math.isfinite(v)}
            rows.append({"epoch": ft.epoch, **keep, **ev()})
        return {"method": method, "lr": lr, "seed": seed, "rows": rows}

    return cached(path, compute, cpu_key="cpu_s")


def ci95(x: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % t-interval); half-width NaN for one value."""
    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(T975.get(len(v) - 1, 1.96) * v.std(ddof=1) / math.sqrt(len(v)))


def tail_reward(cell: dict) -> float:
    """Selection score: mean eval reward of the last two epochs."""
    return float(np.mean([r["eval/reward"] for r in cell["rows"][-2:]]))


def interp_at(xs: list[float], ys: list[float], x: float) -> float:
    """y where the piecewise-linear curve (xs, ys) first reaches x (NaN if it never does)."""
    for i in range(1, len(xs)):
        lo, hi = xs[i - 1], xs[i]
        if (lo - x) * (hi - x) <= 0 and hi != lo:
            return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - lo) / (hi - lo)
        if hi == x:
            return ys[i]
    return float("nan")


def first_reach(qs: list[float], rs: list[float], target: float) -> float:
    """Queries at which the reward curve first reaches ``target`` (interpolated; inf if never)."""
    for i in range(1, len(rs)):
        if rs[i] >= target:
            if rs[i - 1] >= target:
                return qs[i - 1]
            return qs[i - 1] + (qs[i] - qs[i - 1]) * (target - rs[i - 1]) / (rs[i] - rs[i - 1])
    return float("inf") if rs[0] < target else qs[0]


def analyse(cells: dict, chosen: dict, a: argparse.Namespace) -> dict:
    """Per-seed rows, intervals, matched-KL and queries-to-DDPO tables."""
    per = {m: [cells[(m, chosen[m], s)] for s in a.seeds if (m, chosen[m], s) in cells]
           for m in chosen}
    out: dict = {"chosen_lr": chosen, "per_seed": {}, "beta0": {}, "matched_kl": {},
                 "queries_to_ddpo_final": {}, "curves": {}}
    for m, cs in per.items():
        out["per_seed"][m] = [{"seed": c["seed"], "final_eval_reward": c["rows"][-1]["eval/reward"],
                               "final_eval_gold": c["rows"][-1].get("eval/gold", float("nan")),
                               "final_eval_kl": c["rows"][-1]["eval/kl"],
                               "final_train_kl": c["rows"][-1].get("kl/base", float("nan")),
                               "max_step_share": c["rows"][-1].get("kl/max_step_share",
                                                                    float("nan")),
                               "clip_frac_later": c["rows"][-1].get("clip/frac_later",
                                                                     float("nan")),
                               "cpu_s": c["cpu_s"]} for c in cs]
        rows = out["per_seed"][m]
        out["beta0"][m] = {k: ci95([r[k] for r in rows]) for k in
                           ("final_eval_reward", "final_eval_gold", "final_eval_kl")}
        q = [r["queries/reward"] for r in cs[0]["rows"]]
        rew = np.array([[r["eval/reward"] for r in c["rows"]] for c in cs])
        gold = np.array([[r.get("eval/gold", np.nan) for r in c["rows"]] for c in cs])
        kls = np.array([[r["eval/kl"] for r in c["rows"]] for c in cs])
        out["curves"][m] = {"queries": q,
                            "reward": [ci95(list(rew[:, i])) for i in range(rew.shape[1])],
                            "gold": [ci95(list(gold[:, i])) for i in range(gold.shape[1])],
                            "kl": [ci95(list(kls[:, i])) for i in range(kls.shape[1])]}
    finals = [out["beta0"][m]["final_eval_kl"][0] for m in per]
    kappa = float(np.median(finals))
    out["kl_budget"] = kappa
    out["seeds_done"] = {m: [c["seed"] for c in cs] for m, cs in per.items()}
    for m, cs in per.items():
        vals = [interp_at([r["eval/kl"] for r in c["rows"]], [r["eval/reward"] for r in c["rows"]],
                          kappa) for c in cs]
        out["matched_kl"][m] = {"reward": ci95(vals), "reached": int(np.isfinite(vals).sum()),
                                "of": len(vals)}
    if "DDPO" in per:
        target = out["beta0"]["DDPO"]["final_eval_reward"][0]
        out["ddpo_final_reward"] = target
        for m, cs in per.items():
            qs = [first_reach([r["queries/reward"] for r in c["rows"]],
                              [r["eval/reward"] for r in c["rows"]], target) for c in cs]
            fin = [x for x in qs if math.isfinite(x)]
            out["queries_to_ddpo_final"][m] = {"median": float(np.median(qs)),
                                               "reached": len(fin), "of": len(qs)}
    out["comparisons"] = compare(out["per_seed"], a)
    return out


COLLAPSE_MARGIN = 0.1  # eval-reward units (the base's eval reward is ≈ 0.18)


def compare(per_seed: dict, a: argparse.Namespace, ref: str = "DDPO") -> dict:
    """Each method against ``ref`` on the same seeds (paired t-interval of the final eval
    reward and gold; Welch beside), Holm across all these comparisons
    (``experiments/_selection.py``)."""
    out: dict = {"reference": ref, "pairs": {}}
    if ref not in per_seed:
        return out
    by_seed = {m: {r["seed"]: r for r in rows} for m, rows in per_seed.items()}
    pvals = {}
    for m in per_seed:
        if m == ref:
            continue
        common = [s for s in a.seeds if s in by_seed[m] and s in by_seed[ref]]
        for key in ("final_eval_reward", "final_eval_gold"):
            x = [by_seed[m][s][key] for s in common]
            y = [by_seed[ref][s][key] for s in common]
            name = f"{m} − {ref}: {key}"
            out["pairs"][name] = {"paired": sel.paired_interval(x, y),
                                  "welch": sel.welch_interval(x, y)}
            pvals[name] = out["pairs"][name]["paired"]["p"]
    out["holm"] = sel.holm(pvals)
    return out


def selection_record(res: dict, a: argparse.Namespace) -> dict:
    """The ``_selection.record`` block of this study: the chosen lr with its edge flag (the
    grid was not widened: the cells were not rerun), the rule, the interval and correction."""
    chosen = {}
    for m, sc in res["selection"].items():
        lr = res["chosen_lr"][m]
        side = sel.edge_side(a.lrs, lr)
        chosen[m] = sel.Tuned(lr, list(a.lrs), {float(k): {"reward": v} for k, v in sc.items()},
                              edge=side is not None, widened=0,
                              reason="interior" if side is None else
                              f"{side} edge; grid not widened (cached cells, not rerun)")
    rule = (f"max mean eval reward of the last two epochs on the selection seed "
            f"{a.select_seed} (disjoint from the reported seeds); the evaluation rows are the "
            "reported ones (tuning draws not separated)")
    return sel.record(chosen, selection=rule, correction="Holm (FWER 0.05) across the "
                      "comparisons with DDPO", collapse=sel.collapse_rule(COLLAPSE_MARGIN))


def fmt(ci: tuple[float, float], d: int = 4) -> str:
    m, h = ci
    if not math.isfinite(m):
        return "n/a"
    return f"{m:.{d}f}" + ("" if not math.isfinite(h) else f" ± {h:.{d}f}")


def write_tables(res: dict, a: argparse.Namespace, path: Path) -> None:
    base = res.get("base_eval", {})
    missing = [m for m in METHODS if m not in res["selection"]]
    no_seed = [m for m in res["selection"] if m not in res["beta0"]]
    short = {m: len(v) for m, v in res["seeds_done"].items() if len(v) < len(a.seeds)}
    lines = [f"# RL sample efficiency on digits (up to {len(a.seeds)} seeds, {a.epochs} epochs × "
             f"{a.p * a.k} reward queries, {a.steps} steps)", "",
             f"Base model on the evaluation set: reward {base.get('eval/reward', float('nan')):.4f}"
             f", gold {base.get('eval/gold', float('nan')):.4f}.", "",
             "Not finished: no complete lr sweep: " + (", ".join(missing) or "none") + "; lr "
             "chosen but no seed run: " + (", ".join(no_seed) or "none") + "; fewer than "
             f"{len(a.seeds)} seeds: " + (", ".join(f"{m} ({n})" for m, n in short.items())
                                         or "none") + ".", "",
             "## β = 0 for every method (final epoch, fixed evaluation set, mean ± 95 % CI)", "",
             "| method | lr (chosen) | eval reward | eval gold | KL to base (η=1 kernels) | "
             "queries to DDPO's final |", "|---|---|---|---|---|---|"]
    for m, row in res["beta0"].items():
        q = res["queries_to_ddpo_final"].get(m, {})
        qs = "n/a" if not q else (f"{q['median']:.0f} ({q['reached']}/{q['of']} seeds)"
                                  if math.isfinite(q["median"]) else
                                  f"not reached ({q['reached']}/{q['of']})")
        lines.append(f"| {m} | {res['chosen_lr'][m]:g} | {fmt(row['final_eval_reward'])} | "
                     f"{fmt(row['final_eval_gold'])} | {fmt(row['final_eval_kl'], 2)} | {qs} |")
    rec = res.get("record")
    if rec is not None:
        base_r = base.get("eval/reward", float("nan"))
        lines += ["", "## Selection and paired comparisons (experiments/_selection.py)", "",
                  f"Rule: {rec['selection_rule']}. Interval: {rec['interval']}. Correction: "
                  f"{rec['correction']}. Collapse: {rec['collapse_rule']}.", "",
                  "| method | chosen lr | at a grid edge | collapse rate |", "|---|---|---|---|"]
        for m, ch in rec["chosen"].items():
            fin = [r["final_eval_reward"] for r in res["per_seed"].get(m, [])]
            lines.append(f"| {m} | {ch['pick']:g} | {'yes' if ch['edge'] else 'no'} | "
                         f"{sel.collapse_rate(fin, base_r, COLLAPSE_MARGIN):.2f} |")
        cmp_ = res.get("comparisons", {})
        if cmp_.get("pairs"):
            lines += ["", "| comparison (same seeds) | n | paired diff (95 %) | p | p (Holm) | "
                      "Welch (95 %) | supported at FWER 0.05 |", "|---|---|---|---|---|---|---|"]
            for name, c in cmp_["pairs"].items():
                p, w, h = c["paired"], c["welch"], cmp_["holm"][name]
                lines.append(f"| {name} | {p['n']} | {p['diff']:.4f} ± {p['half']:.4f} | "
                             f"{p['p']:.3g} | {h['p_holm']:.3g} | {w['diff']:.4f} ± "
                             f"{w['half']:.4f} | {'yes' if h['reject'] else 'no'} |")
    lines += ["", f"## Matched KL budget κ = {res['kl_budget']:.2f} nats (median final KL)", "",
              "| method | eval reward at κ | runs reaching κ |", "|---|---|---|"]
    for m, row in res["matched_kl"].items():
        lines.append(f"| {m} | {fmt(row['reward'])} | {row['reached']}/{row['of']} |")
    lines += ["", "## Learning-rate selection (seed {}; mean eval reward of the last two "
              "epochs)".format(a.select_seed), "", "| method | " +
              " | ".join(f"lr {lr:g}" for lr in a.lrs) + " |", "|---|" + "---|" * len(a.lrs)]
    for m, sc in res["selection"].items():
        lines.append(f"| {m} | " + " | ".join(f"{sc[str(lr)]:.4f}" for lr in a.lrs) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_figures(res: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for m, c in res["curves"].items():
        q = np.array(c["queries"])
        mu = np.array([x[0] for x in c["reward"]])
        h = np.nan_to_num(np.array([x[1] for x in c["reward"]]))
        ls = "--" if m.startswith("SaA") else "-"
        ax[0].plot(q, mu, ls, label=m)
        ax[0].fill_between(q, mu - h, mu + h, alpha=0.15)
        kl = np.array([x[0] for x in c["kl"]])
        ax[1].plot(kl, mu, ls, marker=".", label=m)
        gold = np.array([x[0] for x in c["gold"]])
        ax[2].plot(mu, gold, ls, marker=".", label=m)
    ax[0].set(xlabel="reward queries", ylabel="eval reward (95% CI)", title="reward vs queries")
    ax[1].set(xlabel="KL to base (nats, η=1 kernels)", ylabel="eval reward",
              title="reward/KL frontier")
    ax[2].set(xlabel="eval reward", ylabel="eval gold reward", title="gold vs reward")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reward_vs_queries.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--base", default="pretrained:digits8")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--select-seed", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--p", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--eval-rows", type=int, default=8)
    ap.add_argument("--worker", default=None, help="i/n: compute only methods i, i+n, ... "
                    "(cells of parallel workers share the cache; tabulate with a plain run)")
    ap.add_argument("--quick", action="store_true", help="tiny run for the test")
    ap.add_argument("--no-new-cells", action="store_true",
                    help="only tabulate the cached cells (fails if a needed one is missing)")
    a = ap.parse_args(argv)
    if a.quick:
        a.methods, a.lrs, a.seeds, a.epochs = ["LOOP", "SaA-DDIM"], [1e-4], [0], 1
        a.steps, a.p, a.k, a.eval_rows, a.select_seed = 3, 2, 2, 4, 100
    a.results.mkdir(parents=True, exist_ok=True)
    if a.worker:
        i, n = map(int, a.worker.split("/"))
        a.methods = a.methods[i::n]
    tag = f"e{a.epochs}_s{a.steps}_b{a.p}x{a.k}_ev{a.eval_rows}"
    cells: dict = {}

    def cell(m: str, lr: float, seed: int) -> dict | None:
        path = a.results / "cells" / tag / f"{m}__lr{lr:g}__seed{seed}.json"
        if a.no_new_cells and not path.is_file():
            return None  # tabulate what is cached; the table says what is missing
        cells[(m, lr, seed)] = run_cell(m, a, lr, seed, path)
        print(f"{m:10s} lr={lr:g} seed={seed}: final eval reward "
              f"{cells[(m, lr, seed)]['rows'][-1]['eval/reward']:.4f}", flush=True)
        return cells[(m, lr, seed)]

    selection, chosen = {}, {}
    for m in a.methods:  # the lr sweep on the selection seed
        sel = {lr: cell(m, lr, a.select_seed) for lr in a.lrs}
        if any(c is None for c in sel.values()):
            continue  # --no-new-cells and an incomplete sweep: method left out
        selection[m] = {str(lr): tail_reward(c) for lr, c in sel.items()}
        chosen[m] = max(a.lrs, key=lambda lr: selection[m][str(lr)])
    for s in a.seeds:
        for m in chosen:
            cell(m, chosen[m], s)
    chosen = {m: lr for m, lr in chosen.items() if (m, lr, a.seeds[0]) in cells}
    if a.worker:
        return 0
    if not cells:
        print(f"no cached cells under {a.results / 'cells' / tag}", file=sys.stderr)
        return 1
    res = analyse(cells, chosen, a)
    res["selection"] = selection
    res["record"] = selection_record(res, a)
    first = next(iter(cells.values()))["rows"][0]
    res["base_eval"] = {k: v for k, v in first.items() if k.startswith("eval/")}
    res["settings"] = {k: (_portable(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    (a.results / ("results_quick.json" if a.quick else "results.json")).write_text(
        json.dumps(res, indent=1))
    if not a.quick:
        write_tables(res, a, a.results / "table.md")
        write_figures(res, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
