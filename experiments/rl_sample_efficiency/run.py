"""The digits companion of experiments/ground_truth: REINFORCE, DDPO, LOOP, GRPO at the demo's scale.

Question: per reward query, which advantage estimator raises the reward fastest on the shipped
digits model (the LOOP paper, Gupta+25 arXiv:2503.00897, claims LOOP > PPO/DDPO per sample),
and at what cost in the held-out gold reward? The closed-form version of the question is
experiments/ground_truth; this study keeps the demo's scale (configs/finetune/demo.yaml: 32
rollouts per epoch = 8 prompts × K = 4, 10 DDIM η = 1 steps, CFG 2, clip 1e-4 on per-dimension
log-probs, action steps ``auto``), without its KL term (β = 0 for every method).

Protocol (issue 25; experiments/_selection.py):

* equal budgets: every method sees B = P·K = 32 rollouts (= reward queries) per epoch for E = 8
  epochs (256 queries); same base model (``pretrained:digits8``), reward (aesthetic_proxy on
  samples clamped to [−1, 1]), gold (digit_alignment, held out);
* on-policy updates (``--minibatches 1``, one inner epoch): one optimizer step per epoch on the
  whole batch, so the importance ratio is 1 and the PPO clip of DDPO/LOOP/GRPO never binds
  (``clip/frac_mb0`` is logged and tabulated). The comparison is therefore between the
  advantage estimators (per-prompt running statistics, leave-one-out, group-normalized, batch
  mean), not between trust regions (issue 25 item 3: reported as on-policy);
* learning rate: ``_selection.tune_grid`` on ``--lrs`` per method, scored on tuning seeds and
  tuning evaluation draws that are never reported (``_selection.split``); score = mean eval
  reward of the last two epochs among lrs whose mean gold over those epochs is ≥
  ``--gold-floor``; a pick at a grid edge widens the grid (×3 geometric) up to ``--max-widen``
  times, else it is flagged ``edge``;
* reported: ``--seeds`` (≥ 10) at the chosen lr, each scored on the reported evaluation draws
  (fixed seeds, DDIM η = 0: no exploration noise, the same sampler for every method) every epoch;
  the KL is a common measure for all methods: the exact per-step KL of the DDIM η = 1 kernels on
  the auto action steps, θ vs base, on fixed-seed η = 1 rollouts;
* claims: each method − DDPO on the same seeds (paired t-interval; Welch beside) of the final
  eval reward, the final eval gold and the mean eval reward over epochs 1..E (the area under the
  reward-vs-queries curve, the sample-efficiency measure); Holm across all of them.

Every (method, lr, seed) cell is cached as one JSON in ``<results>/cells``; a stopped run
continues. Regenerate the tables and figures (and any missing cells) with one command:

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/rl_sample_efficiency/run.py

``--quick`` runs a tiny version (2 methods, 1 lr, 2 seeds, 1 epoch) for the test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from _cells import cached, fmt_ci as fmt, portable_path as _portable  # noqa: E402
import _selection as sel  # noqa: E402
CONFIGS = ROOT / "configs" / "finetune"
SAA = ["algo.advantage=batch", "algo.value=null", "policy.exploration=0.2",
       "algo.loss_kwargs={clip: 1.0e-4, beta: 0.0, gae_lambda: 1.0}"]
METHODS = {  # name → (config file, overrides); β = 0 for all
    "DDPO": ("digits_ddpo.yaml", ["algo.advantage_kwargs={buffer_size: 32, min_count: 8, "
                                  "adv_clip: 5.0}"]),
    "LOOP": ("digits_loop.yaml", []),
    "GRPO": ("digits_grpo.yaml", ["algo.loss_kwargs={clip: 1.0e-4, beta: 0.0}"]),
    "REINFORCE": ("digits_reinforce.yaml", []),
    "SaA-DDIM": ("digits_score_as_action.yaml", ["policy.sampler=ddim", "policy.eta=0.0", *SAA]),
    "SaA-EM": ("digits_score_as_action.yaml", ["policy.sampler=euler_maruyama",
                                               "policy.eta=1.0", *SAA]),
    "SaA-Heun": ("digits_score_as_action.yaml", ["policy.sampler=heun_sde", "policy.eta=1.0",
                                                 *SAA]),
    "DPOK": ("digits_dpok.yaml", ["algo.loss_kwargs={alpha: 1.0, beta: 0.0, clip: 1.0e-4}",
                                  "algo.value={hidden: 32, lr: 3.0e-3, steps_per_epoch: 10}"]),
}
DEFAULT_METHODS = ["DDPO", "LOOP", "GRPO"]  # the cut to the CPU budget (README: why)
REF = "DDPO"
CLAIM_KEYS = {"final_eval_reward": "final eval reward", "final_eval_gold": "final eval gold",
              "auc_eval_reward": "mean eval reward over epochs"}
COLLAPSE_MARGIN = 0.1  # eval-reward units (the base's eval reward is ≈ 0.18)


def build(method: str, a: argparse.Namespace, lr: float, seed: int):
    """The FinetuneConfig of one cell (REINFORCE always takes one step per epoch)."""
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig

    config, extra = METHODS[method]
    b = a.p * a.k
    mb = b if method == "REINFORCE" else b // a.minibatches
    sets = [f"base.path={a.base}", f"train.epochs={a.epochs}", f"train.seed={seed}",
            f"policy.steps={a.steps}", f"prompts.per_epoch={a.p}", f"prompts.k={a.k}",
            "train.inner_epochs=1", f"train.minibatch_size={mb}",
            f"train.sample_batch_size={b}", f"train.lr={lr}", "train.log_kl=true",
            "device=cpu", *extra]
    return load_config(CONFIGS / config, FinetuneConfig, sets)


class Evaluator:
    """Fixed-seed evaluation: noise-free DDIM η = 0 samples → reward, gold; common η = 1 KL.

    ``draws`` seeds the evaluation x_T (``_selection.split``: the tuning and the reported
    stages use different draws)."""

    def __init__(self, ft, rows: int, steps: int, draws: int):
        import torch

        from scorealign.policy.policy import Policy
        from scorealign.rng import derive_seed

        self.ft, self.steps = ft, steps
        self.prompts = [ft.setup.prompts[i % len(ft.setup.prompts)] for i in range(rows)]
        self.seeds = torch.tensor([derive_seed(draws, "eval", i) for i in range(rows)])
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


def run_cell(method: str, a: argparse.Namespace, lr: float, seed: int, draws: int,
             path: Path) -> dict:
    """Fine-tune one cell (cached, ``experiments/_cells.py``): per-epoch training metrics and
    the evaluation on the draws ``draws``."""

    def compute() -> dict:
        from scorealign.rl.trainer import Finetuner

        ft = Finetuner(build(method, a, lr, seed), None)
        ev = Evaluator(ft, a.eval_rows, a.steps, draws)
        rows = [{"epoch": 0, "queries/reward": 0.0, **ev()}]
        while ft.epoch < a.epochs:
            m = ft.train_epoch()
            ft.epoch += 1
            keep = {k: v for k, v in m.items() if isinstance(v, float) and math.isfinite(v)}
            rows.append({"epoch": ft.epoch, **keep, **ev()})
        return {"method": method, "lr": lr, "seed": seed, "draws": draws, "rows": rows}

    return cached(path, compute, cpu_key="cpu_s")


def ci95(x: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % t-interval); half-width NaN for one value."""
    from scipy.stats import t

    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def tail(cell: dict, key: str = "eval/reward") -> float:
    """Selection score: the mean of ``key`` over the last two epochs."""
    return float(np.mean([r.get(key, float("nan")) for r in cell["rows"][-2:]]))


def auc(cell: dict) -> float:
    """Mean eval reward over epochs 1..E: the area under the reward-vs-queries curve divided by
    the budget (equal budgets, so a larger value = more reward per query along the run)."""
    return float(np.mean([r["eval/reward"] for r in cell["rows"][1:]]))


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


def _mean_key(rows: list[dict], key: str) -> float:
    v = [r[key] for r in rows if key in r]
    return float(np.mean(v)) if v else float("nan")


def analyse(per: dict[str, list[dict]], a: argparse.Namespace) -> dict:
    """Per-seed rows, intervals, matched-KL and queries-to-DDPO tables of the reported cells."""
    out: dict = {"per_seed": {}, "summary": {}, "matched_kl": {}, "queries_to_ref_final": {},
                 "curves": {}}
    for m, cs in per.items():
        out["per_seed"][m] = [{
            "seed": c["seed"], "final_eval_reward": c["rows"][-1]["eval/reward"],
            "final_eval_gold": c["rows"][-1].get("eval/gold", float("nan")),
            "auc_eval_reward": auc(c), "final_eval_kl": c["rows"][-1]["eval/kl"],
            "final_train_kl": c["rows"][-1].get("kl/base", float("nan")),
            "clip_frac_mb0": _mean_key(c["rows"][1:], "clip/frac_mb0"),
            "clip_frac_later": _mean_key(c["rows"][1:], "clip/frac_later"),
            "peak_gb": max((r.get("mem/peak_gb", float("nan")) for r in c["rows"][1:]),
                           default=float("nan")),
            "cpu_s": c["cpu_s"]} for c in cs]
        rows = out["per_seed"][m]
        out["summary"][m] = {k: ci95([r[k] for r in rows]) for k in
                             ("final_eval_reward", "final_eval_gold", "auc_eval_reward",
                              "final_eval_kl", "clip_frac_mb0", "clip_frac_later", "cpu_s",
                              "peak_gb")}
        q = [r["queries/reward"] for r in cs[0]["rows"]]
        arr = {k: np.array([[r.get(k, np.nan) for r in c["rows"]] for c in cs])
               for k in ("eval/reward", "eval/gold", "eval/kl")}
        out["curves"][m] = {"queries": q, **{k.split("/")[1]: [ci95(list(v[:, i])) for i in
                                                               range(v.shape[1])]
                                             for k, v in arr.items()}}
    finals = [out["summary"][m]["final_eval_kl"][0] for m in per]
    kappa = float(np.median(finals)) if finals else float("nan")
    out["kl_budget"] = kappa
    for m, cs in per.items():
        vals = [interp_at([r["eval/kl"] for r in c["rows"]], [r["eval/reward"] for r in c["rows"]],
                          kappa) for c in cs]
        out["matched_kl"][m] = {"reward": ci95(vals), "reached": int(np.isfinite(vals).sum()),
                                "of": len(vals)}
    if REF in per:
        target = out["summary"][REF]["final_eval_reward"][0]
        out["ref_final_reward"] = target
        for m, cs in per.items():
            qs = [first_reach([r["queries/reward"] for r in c["rows"]],
                              [r["eval/reward"] for r in c["rows"]], target) for c in cs]
            fin = [x for x in qs if math.isfinite(x)]
            out["queries_to_ref_final"][m] = {"median": float(np.median(qs)),
                                              "reached": len(fin), "of": len(qs)}
    out["comparisons"] = compare(out["per_seed"])
    return out


def compare(per_seed: dict, ref: str = REF) -> dict:
    """Each method against ``ref`` on the same seeds (paired t-interval; Welch beside) for every
    key of ``CLAIM_KEYS``; Holm across all of them (``experiments/_selection.py``)."""
    out: dict = {"reference": ref, "pairs": {}}
    if ref not in per_seed:
        return out
    by_seed = {m: {r["seed"]: r for r in rows} for m, rows in per_seed.items()}
    pvals = {}
    for m in per_seed:
        if m == ref:
            continue
        common = sorted(set(by_seed[m]) & set(by_seed[ref]))
        for key, label in CLAIM_KEYS.items():
            x = [by_seed[m][s][key] for s in common]
            y = [by_seed[ref][s][key] for s in common]
            name = f"{m} − {ref}: {label}"
            out["pairs"][name] = {"key": key, "paired": sel.paired_interval(x, y),
                                  "welch": sel.welch_interval(x, y)}
            pvals[name] = out["pairs"][name]["paired"]["p"]
    out["holm"] = sel.holm(pvals)
    return out


def write_tables(res: dict, a: argparse.Namespace, path: Path) -> None:
    """results/table.md: chosen hyper-parameters with the edge flag, the selection rule, the
    results, the paired claims with Holm (the rows the docs' verdicts cite)."""
    base = res.get("base_eval", {})
    rec = res["record"]
    st = res["status"]
    e = a.epochs
    lines = [f"# RL sample efficiency on digits: {', '.join(res['methods'])} "
             f"({e} epochs × {a.p * a.k} rollouts, {a.steps} steps, on-policy)", "",
             f"Status: {st['text']}", "",
             f"Base model on the reported evaluation draws ({a.eval_rows} rows): reward "
             f"{base.get('eval/reward', float('nan')):.4f}, gold "
             f"{base.get('eval/gold', float('nan')):.4f}. CPU time of all cells: "
             f"{res['cpu_s_total'] / 60:.1f} min ({res['n_cells']} cells, single-threaded).", "",
             f"Selection rule: {rec['selection_rule']}. Tuning seeds "
             f"{list(rec['split']['tuning_seeds'])}, tuning draws {rec['split']['tuning_draws']}; "
             f"reported seeds {list(rec['split']['reported_seeds'])}, reported draws "
             f"{rec['split']['reported_draws']}. Interval: {rec['interval']}. Correction: "
             f"{rec['correction']}. Collapse: {rec['collapse_rule']}. Updates: on-policy (one "
             "minibatch, one inner epoch per epoch): the ratio is 1 and the clip cannot bind "
             "(clip binding fraction below).", "",
             "## Chosen hyper-parameters", "",
             "| method | lr grid (after widening) | chosen lr | at a grid edge | widenings | "
             "tuning reward | tuning gold |", "|---|---|---|---|---|---|---|"]
    for m, ch in rec["chosen"].items():
        pick = ch["pick"]
        sc = ch["scores"].get(f"{pick:g}", {}) if pick is not None else {}
        lines.append(f"| {m} | {', '.join(f'{v:g}' for v in ch['grid'])} | "
                     f"{'none' if pick is None else f'{pick:g}'} | "
                     f"{'yes' if ch['edge'] else 'no'} ({ch['reason']}) | {ch['widened']} | "
                     f"{sc.get('reward', float('nan')):.4f} | {sc.get('gold', float('nan')):.4f} |")
    lines += ["", f"## Results (reported seeds, final epoch {e}, mean ± 95 % t-interval)", "",
              "| method | seeds | final eval reward | final eval gold | mean eval reward over "
              f"epochs 1–{e} | KL to base (nats) | queries to {REF}'s final | collapse rate | "
              "clip binding (first minibatch) | CPU s per run | peak RSS GB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    base_r = base.get("eval/reward", float("nan"))
    for m, row in res["summary"].items():
        q = res["queries_to_ref_final"].get(m, {})
        qs = "n/a" if not q else (f"{q['median']:.0f} ({q['reached']}/{q['of']})"
                                  if math.isfinite(q["median"]) else
                                  f"not reached ({q['reached']}/{q['of']})")
        fin = [r["final_eval_reward"] for r in res["per_seed"][m]]
        lines.append(f"| {m} | {len(fin)} | {fmt(row['final_eval_reward'])} | "
                     f"{fmt(row['final_eval_gold'])} | {fmt(row['auc_eval_reward'])} | "
                     f"{fmt(row['final_eval_kl'], 2)} | {qs} | "
                     f"{sel.collapse_rate(fin, base_r, COLLAPSE_MARGIN):.2f} | "
                     f"{fmt(row['clip_frac_mb0'], 3)} | {fmt(row['cpu_s'], 1)} | "
                     f"{fmt(row['peak_gb'], 2)} |")
    cmp_ = res.get("comparisons", {})
    if cmp_.get("pairs"):
        lines += ["", f"## Claims: each method − {REF} on the same seeds and draws", "",
                  *sel.claims_table(cmp_["pairs"], cmp_["holm"], ".4f", label=lambda name, c: (
                      name + (f" 1–{e}" if c["key"] == "auc_eval_reward" else "")))]
    lines += ["", f"## Matched KL budget κ = {res['kl_budget']:.2f} nats (median final KL)", "",
              "| method | eval reward at κ | runs reaching κ |", "|---|---|---|"]
    for m, row in res["matched_kl"].items():
        lines.append(f"| {m} | {fmt(row['reward'])} | {row['reached']}/{row['of']} |")
    lines += ["", "## Tuning scores (tuning seeds and draws; mean over the last two epochs)", "",
              "| method | lr | reward | gold | eligible (gold ≥ floor) |", "|---|---|---|---|---|"]
    for m, ch in rec["chosen"].items():
        for lr, sc in sorted(ch["scores"].items(), key=lambda kv: float(kv[0])):
            ok = sc["gold"] >= a.gold_floor
            lines.append(f"| {m} | {lr} | {sc['reward']:.4f} | {sc['gold']:.4f} | "
                         f"{'yes' if ok else 'no'} |")
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
        ax[0].plot(q, mu, label=m)
        ax[0].fill_between(q, mu - h, mu + h, alpha=0.15)
        kl = np.array([x[0] for x in c["kl"]])
        ax[1].plot(kl, mu, marker=".", label=m)
        gold = np.array([x[0] for x in c["gold"]])
        ax[2].plot(q, gold, marker=".", label=m)
    ax[0].set(xlabel="reward queries", ylabel="eval reward (95% CI)", title="reward vs queries")
    ax[1].set(xlabel="KL to base (nats, η=1 kernels)", ylabel="eval reward",
              title="reward/KL frontier")
    ax[2].set(xlabel="reward queries", ylabel="eval gold reward", title="gold vs queries")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reward_vs_queries.png", dpi=110)
    plt.close(fig)


class _Missing(Exception):
    """A cell is not cached and ``--no-new-cells`` forbids computing it."""


class _Busy(Exception):
    """Another worker is computing this cell (its lock file names a live process)."""


def _lock(path: Path) -> Path:
    """Claim ``path``'s cell with ``<cell>.lock`` (O_EXCL); a lock whose process is gone is
    stale and taken over. Raises :class:`_Busy` if a live process holds it."""
    lock = path.with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or "0")
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale
                continue
            except PermissionError:
                pass
            raise _Busy(path.name) from None
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return lock
    raise _Busy(path.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--base", default="pretrained:digits8")
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-5, 3e-5, 1e-4])
    ap.add_argument("--max-widen", type=int, default=2)
    ap.add_argument("--gold-floor", type=float, default=0.9)
    ap.add_argument("--n-seeds", type=int, default=10, help="reported seeds 0..n−1")
    ap.add_argument("--n-tuning", type=int, default=1, help="tuning seeds 1000..")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--p", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--minibatches", type=int, default=1)
    ap.add_argument("--eval-rows", type=int, default=8)
    ap.add_argument("--worker", default=None, help="i/n: one of n parallel workers (each claims "
                    "cells with lock files, starting at method i; tabulate with a plain run)")
    ap.add_argument("--quick", action="store_true", help="tiny run for the test")
    ap.add_argument("--no-new-cells", action="store_true",
                    help="only tabulate the cached cells (methods with missing cells left out)")
    a = ap.parse_args(argv)
    if a.quick:
        a.methods, a.lrs, a.n_seeds, a.n_tuning, a.epochs = ["DDPO", "LOOP"], [1e-4], 2, 1, 1
        a.steps, a.p, a.k, a.eval_rows, a.max_widen, a.gold_floor = 3, 2, 2, 4, 0, 0.0
    a.results.mkdir(parents=True, exist_ok=True)
    methods = list(a.methods)
    if a.worker:  # every worker sweeps every method, starting at a different one
        i, n = map(int, a.worker.split("/"))
        methods = methods[i % len(methods):] + methods[:i % len(methods)]
    spl = sel.split(a.n_seeds, a.n_tuning)
    tag = (f"e{a.epochs}_s{a.steps}_b{a.p}x{a.k}_ev{a.eval_rows}_mb{a.minibatches}")
    cells: dict = {}

    computed: list[str] = []

    def cell(m: str, lr: float, seed: int, draws: int) -> dict:
        path = a.results / "cells" / tag / f"{m}__lr{lr:g}__seed{seed}__draws{draws}.json"
        if not path.is_file():
            if a.no_new_cells:
                raise _Missing(path.name)
            lock = _lock(path)  # raises _Busy if another worker computes this cell
            try:
                c = run_cell(m, a, lr, seed, draws, path)
            finally:
                lock.unlink(missing_ok=True)
            computed.append(path.name)
        c = run_cell(m, a, lr, seed, draws, path)  # cached: read back
        cells[path.name] = c
        print(f"{m:10s} lr={lr:g} seed={seed} draws={draws}: final eval reward "
              f"{c['rows'][-1]['eval/reward']:.4f}, gold {c['rows'][-1].get('eval/gold', 0):.3f}",
              flush=True)
        return c

    def sweep(names: list[str]) -> tuple[dict, dict, list[str], bool]:
        """One pass over ``names``: tune each, then its reported seeds. Cells another worker
        holds are skipped (busy); returns (tuned, per, missing, busy_seen)."""
        tuned: dict[str, sel.Tuned] = {}
        per: dict[str, list[dict]] = {}
        missing: list[str] = []
        busy = False
        for m in names:
            def score(lr: float, m: str = m) -> dict[str, float]:
                cs = [cell(m, lr, s, spl.tuning_draws) for s in spl.tuning_seeds]
                return {"reward": float(np.mean([tail(c) for c in cs])),
                        "gold": float(np.mean([tail(c, "eval/gold") for c in cs]))}
            for lr in a.lrs:  # the initial grid's cells are independent: claim any free one
                try:
                    score(lr)
                except (_Busy, _Missing):
                    pass
            try:
                tuned[m] = sel.tune_grid(a.lrs, score, gold_floor=a.gold_floor,
                                         max_widen=a.max_widen, geometric=True)
            except _Busy:
                busy = True
                continue
            except _Missing as err:
                missing.append(f"{m} (lr selection incomplete: {err})")
                continue
            if tuned[m].pick is None:
                missing.append(f"{m} (no lr passes the gold floor)")
                continue
            per[m] = []
            for s in spl.reported_seeds:
                try:
                    per[m].append(cell(m, tuned[m].pick, s, spl.reported_draws))
                except _Busy:
                    busy = True
                except _Missing:
                    pass  # --no-new-cells: tabulate the seeds that finished (paired on common seeds)
            if len(per[m]) < len(spl.reported_seeds):
                missing.append(f"{m} ({len(per[m])} of {len(spl.reported_seeds)} reported seeds)")
            if not per[m]:
                del per[m]
        return tuned, per, missing, busy

    while True:  # workers share the cells; wait for the ones another worker holds
        before = len(computed)
        tuned, per, missing, busy = sweep(methods)
        if not busy:
            break
        if len(computed) == before:
            time.sleep(15)
    if a.worker:
        return 0
    if not per:
        print(f"no complete method under {a.results / 'cells' / tag}", file=sys.stderr)
        return 1
    res = analyse(per, a)
    res["methods"] = list(per)
    rule = sel.selection_rule(a.gold_floor, key="eval reward (mean of the last two epochs)")
    res["record"] = sel.record(tuned, selection=rule, correction=f"Holm (FWER 0.05) across "
                               f"the {len(res['comparisons'].get('pairs', {}))} claims below",
                               collapse=sel.collapse_rule(COLLAPSE_MARGIN), split_=spl)
    first = next(iter(per.values()))[0]["rows"][0]
    res["base_eval"] = {k: v for k, v in first.items() if k.startswith("eval/")}
    left = [m for m in a.methods if m not in per]
    res["status"] = {"complete": not left and not missing,
                     "text": "complete" if not left and not missing else
                     "PARTIAL: " + "; ".join(missing or [f"{m} (not run)" for m in left])}
    res["cpu_s_total"] = float(sum(c["cpu_s"] for c in cells.values()))
    res["n_cells"] = len(cells)
    res["settings"] = {k: (_portable(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    (a.results / ("results_quick.json" if a.quick else "results.json")).write_text(
        json.dumps(res, indent=1))
    write_tables(res, a, a.results / ("table_quick.md" if a.quick else "table.md"))
    if not a.quick:
        write_figures(res, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
