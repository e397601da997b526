"""Flow-GRPO, Flow-GRPO-Fast, MixGRPO, DiffusionNFT, LOOP and Score as Action on the shipped
rectified-flow digits model (``pretrained:digits8-flow``), under the shared selection protocol
(``experiments/_selection.py``, issue 25).

Protocol:

* equal budgets: every arm fine-tunes the same base toward the same reward (``aesthetic_proxy``)
  with P·K = 2·4 = 8 rollouts (= reward queries) per epoch for 12 epochs (96 queries), 6 sampler
  steps; no arm queries the reward anywhere else;
* on-policy updates: one inner epoch of one minibatch (the whole batch) per epoch, so every
  optimizer step is taken at the rollout weights and the PPO clip (1e-4 per-dimension for every
  ratio arm, Score as Action included) never binds; the clipped share is measured and reported
  (``clip/frac_mb0``) instead of claimed (issue 25 item 3: the two-minibatch design of the
  previous run clipped 88–100 % of the later minibatch's samples);
* hyper-parameters are chosen on tuning seeds and tuning evaluation draws never reported
  (``_selection.split``): the learning rate from {1e-4, 3e-4, 1e-3}, widened geometrically while
  the pick sits at an edge (``_selection.tune_grid``); for Score as Action also the exploration
  λ from {0.02, 0.05, 0.1} (the issue's grid), widened geometrically (×2, up to five times:
  0.2, 0.4, 0.8, 1.6, 3.2) while the λ pick sits at an edge; the lr is tuned per λ, then λ is
  selected by the same rule over the per-λ picks and flagged if still at an edge; every
  (λ, lr) cell with λ ≥ 0.2 of both Score as Action arms is scored by its mean over two tuning
  seeds (1000, 1001: one seed did not predict the reported seeds there), every other tuning
  cell on seed 1000 alone (``tuning_seeds_for``);
  "SaA (steps 1-4)" is Score as Action without an action at the first step, where the ε-space
  noise enters the state multiplied by Δ/(1 − t_max) ≈ 166 (``exploration_scale.py``);
  the rule: the largest final evaluation reward among values whose final gold reward is ≥ the
  base's gold on the tuning draws − ``GOLD_DROP``;
* reported runs: the chosen values on 10 paired seeds (0–9), each evaluated at epochs 0, E/2, E
  on the same fixed evaluation set (64 prompts "digit k" balanced, x_T from seeds 10⁶ + i, Euler
  ODE with the policy's 6 steps and guidance 2, no exploration or SDE noise) under the optimized
  and the gold reward (classifier probability of the prompted digit);
* claims: each arm − Flow-GRPO in final evaluation reward and gold (paired t-interval over the
  seeds, Welch beside), each arm − the base model (its own epoch-0 evaluation on the same
  draws), Holm across all of them; a collapse column
  (final reward NaN or < base − ``COLLAPSE_MARGIN``); per arm the training CPU seconds
  (``time.process_time``, evaluations excluded), the peak RSS of the cell (``mem/peak_gb``, the
  process high-water mark reset at the start of each cell) and the model evaluations with
  gradient per epoch.

One JSON per cell under ``results/cells/<mode>``, written atomically by the worker: a stopped
run continues where it stopped.

    OMP_NUM_THREADS=1 nice -n 10 python experiments/flow_rl/run.py --jobs 2
    python experiments/flow_rl/run.py --no-new-cells      # tabulate what is cached
    python experiments/flow_rl/run.py --quick             # tiny run (tests/experiments/)
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import _selection as sel  # noqa: E402
from _cells import ci95, fmt_ci as fmt, write_json  # noqa: E402

CONFIGS = ROOT / "configs" / "finetune"
CLIP = 1.0e-4  # per-dimension ratio clip of every ratio arm (the Flow-GRPO configs')
# name → (config, overrides). MixGRPO's window is scaled to this grid: 2 of the 5 action steps
# (their 4 of 23), sliding one step every 2 epochs (their 25 of 300 iterations ≈ every 1 of 12).
METHODS = {
    "Flow-GRPO": ("digits_flow_grpo.yaml", []),
    "Flow-GRPO-Fast": ("digits_flow_grpo_fast.yaml", []),
    "MixGRPO": ("digits_flow_mixgrpo.yaml", ["policy.action_steps=slide:2:2:1"]),
    "DiffusionNFT": ("digits_flow_nft.yaml", []),
    "LOOP": ("digits_flow_loop.yaml", []),
    # the same clip as the others (its config's 0.2 is the PPO default of the VP configs);
    # β = 1e-3 on its action-space KL as in its config; λ is set per cell
    "Score as Action": ("digits_flow_score_as_action.yaml",
                        [f"algo.loss_kwargs={{clip: {CLIP}, beta: 0.001}}"]),
    # the same without exploration at the first step, where an ε-space action enters the state
    # multiplied by Δ/(1 − t_max) ≈ 166 (exploration_scale.py): actions at steps 1–4 of 6
    "SaA (steps 1-4)": ("digits_flow_score_as_action.yaml",
                        [f"algo.loss_kwargs={{clip: {CLIP}, beta: 0.001}}",
                         "policy.action_steps=steps:1,2,3,4"]),
}
SAA = "Score as Action"
SAA_LATE = "SaA (steps 1-4)"
LAM_METHODS = (SAA, SAA_LATE)  # exploration λ tuned with the lr
REF = "Flow-GRPO"
# the order cells are computed in: a stopped run leaves whole arms, the reference first
PRIORITY = [REF, SAA, SAA_LATE, "LOOP", "Flow-GRPO-Fast", "MixGRPO", "DiffusionNFT"]
GOLD_DROP = 0.2  # gold floor = base gold (tuning draws) − 0.2
COLLAPSE_MARGIN = 0.1  # eval-reward units; the base's eval reward is ≈ 0.18


@dataclass(frozen=True)
class Mode:
    """Sizes of one run of the experiment."""

    name: str
    methods: tuple[str, ...]
    epochs: int
    p: int
    k: int
    steps: int
    eval_n: int
    seeds: int
    tuning_seeds: int
    grid: tuple[float, ...]
    max_widen: int
    lams: tuple[float, ...]
    lam_widen: int
    # λ grid points ≥ this are scored on every tuning seed (mean); every other tuning cell (the
    # lr grids of the arms without λ, the λ points below it) on the first tuning seed only
    two_seed_lam: float = float("inf")
    extra: dict = field(default_factory=dict)


FULL = Mode("full", tuple(METHODS), epochs=12, p=2, k=4, steps=6, eval_n=64, seeds=10,
            tuning_seeds=2, grid=(1e-4, 3e-4, 1e-3), max_widen=2, lams=(0.02, 0.05, 0.1),
            lam_widen=5, two_seed_lam=0.2)
QUICK = Mode("quick", ("Flow-GRPO", SAA), epochs=1, p=2, k=2, steps=6, eval_n=8, seeds=2,
             tuning_seeds=1, grid=(1e-4, 1e-3), max_widen=0, lams=(0.05, 0.1), lam_widen=0)


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run: method, λ (Score as Action only), lr, seed, evaluation draws."""

    method: str
    lam: float | None
    lr: float
    seed: int
    draws: int

    def name(self) -> str:
        lam = "" if self.lam is None else f"__lam{self.lam:g}"
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", self.method).strip("_")
        return f"{slug}{lam}__lr{self.lr:g}__seed{self.seed}.json"


# ----------------------------------------------------------------------------------------------
# one cell
# ----------------------------------------------------------------------------------------------


def build(cell: Cell, mode: Mode, base: str):
    """The FinetuneConfig of one cell: on-policy (one minibatch = the whole batch)."""
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig

    config, extra = METHODS[cell.method]
    b = mode.p * mode.k
    sets = [f"base.path={base}", f"train.epochs={mode.epochs}", f"train.seed={cell.seed}",
            f"policy.steps={mode.steps}", f"prompts.per_epoch={mode.p}", f"prompts.k={mode.k}",
            "train.inner_epochs=1", f"train.minibatch_size={b}",
            f"train.sample_batch_size={b}", f"train.lr={cell.lr}", "train.log_kl=false",
            f"train.ckpt_every={10**6}", "device=cpu", *extra]
    if cell.lam is not None:
        sets.append(f"policy.exploration={cell.lam}")
    return load_config(CONFIGS / config, FinetuneConfig, sets)


def evaluate(ft, n: int, draws: int) -> dict[str, float]:
    """Fixed evaluation set: prompts 'digit k' balanced, x_T from seeds ``draws`` + i, Euler ODE
    with the policy's steps, grid and guidance, no exploration or SDE noise."""
    import torch

    from scorealign.samplers import sample

    pol, s = ft.policy, ft.setup
    prompts = [s.prompts[i % len(s.prompts)] for i in range(n)]
    seeds = torch.arange(n) + draws
    with torch.no_grad():
        x_T, _, _ = pol._noise(seeds, "cpu")
        x0 = sample(pol.pred_fn(pol.cond_for(prompts)), pol.kind, pol.sde, x_T,
                    sampler="euler_ode", steps=pol.steps, grid=pol.grid).x0
        scored = ft.rewards(s.decode(x0), prompts, {"epoch": -1})
    out = {"eval/reward": scored.optimized.mean().item()}
    if scored.gold is not None:
        out["eval/gold"] = scored.gold.mean().item()
    return out


def _reset_peak_rss() -> float:
    """Reset the process's peak-RSS mark (Linux ``clear_refs`` 5) so ``mem/peak_gb`` is this
    cell's peak; returns the RSS at the reset in GiB (NaN where unsupported)."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def compute_cell(cell: Cell, mode: Mode, base: str, out: str) -> dict:
    """Train one cell, evaluate at epochs 0, E/2, E, write it to ``out`` (atomic); a cell
    already written (by another invocation sharing the cache) is read, not recomputed."""
    if Path(out).is_file():
        return json.loads(Path(out).read_text())
    import torch

    torch.set_num_threads(1)
    from scorealign.rl.trainer import Finetuner

    rss0 = _reset_peak_rss()
    t0, c0 = time.time(), time.process_time()
    cfg = build(cell, mode, base)
    ft = Finetuner(cfg, None)
    cpu_setup = time.process_time() - c0
    evals = [{"epoch": 0, "cpu_s": 0.0, "queries": 0.0, **evaluate(ft, mode.eval_n, cell.draws)}]
    eval_at = {mode.epochs // 2, mode.epochs}
    cpu, rows, err = 0.0, [], None
    while ft.epoch < mode.epochs:
        c1 = time.process_time()
        try:
            m = ft.train_epoch()
        except (RuntimeError, ValueError) as e:  # e.g. RewardError on NaN samples: collapsed
            err = f"{type(e).__name__}: {e}"[:300]
            evals.append({"epoch": ft.epoch + 1, "cpu_s": cpu, "queries": float("nan"),
                          "eval/reward": float("nan"), "eval/gold": float("nan")})
            break
        ft.epoch += 1
        cpu += time.process_time() - c1
        rows.append({"epoch": ft.epoch, "cpu_s": cpu,
                     **{k: v for k, v in m.items() if "/step/" not in k}})
        if ft.epoch in eval_at:
            evals.append({"epoch": ft.epoch, "cpu_s": cpu, "queries": m["queries/reward"],
                          **evaluate(ft, mode.eval_n, cell.draws)})
    res = {**asdict(cell), "epochs": rows, "evals": evals, "cpu_s": cpu,
           "cpu_s_setup": cpu_setup, "cpu_s_total": time.process_time() - c0,
           "wall_s": time.time() - t0, "rss_start_gb": rss0,
           "mem_peak_gb": max((r.get("mem/peak_gb", float("nan")) for r in rows),
                              default=float("nan")), "error": err}
    write_json(Path(out), res)
    return res


# ----------------------------------------------------------------------------------------------
# running cells
# ----------------------------------------------------------------------------------------------


class Missing(Exception):
    """A tuning cell is not cached yet."""

    def __init__(self, cells):
        super().__init__(f"{len(cells)} cells missing")
        self.cells = list(cells)


def _load(root: Path, cell: Cell) -> dict | None:
    p = root / cell.name()
    return json.loads(p.read_text()) if p.is_file() else None


def run_cells(cells: list[Cell], root: Path, mode: Mode, base: str, jobs: int,
              reverse: bool = False) -> None:
    """Compute the cells not cached (in this order, or reversed: a second invocation sharing
    the cache then meets the first in the middle; ``jobs`` worker processes)."""
    todo = [c for c in dict.fromkeys(cells) if not (root / c.name()).is_file()]
    if reverse:
        todo = todo[::-1]
    if not todo:
        return
    print(f"{len(todo)} cells to run", flush=True)

    def done(c: Cell, r: dict) -> None:
        print(f"{c.name()}: eval reward {r['evals'][0]['eval/reward']:.4f} → "
              f"{r['evals'][-1]['eval/reward']:.4f}, gold {r['evals'][-1]['eval/gold']:.3f}, "
              f"{r['cpu_s']:.1f} CPU s, {r['mem_peak_gb']:.2f} GB", flush=True)

    if jobs <= 1:
        for c in todo:
            done(c, compute_cell(c, mode, base, str(root / c.name())))
        return
    import scorealign.rl.trainer  # noqa: F401  (once here: the forked workers inherit it)

    with ProcessPoolExecutor(jobs) as pool:
        futs = {pool.submit(compute_cell, c, mode, base, str(root / c.name())): c for c in todo}
        for f in as_completed(futs):
            done(futs[f], f.result())


def tuning_seeds_for(method: str, lam: float | None, mode: Mode,
                     split: sel.Split) -> tuple[int, ...]:
    """The tuning seeds of one grid point: every tuning seed for a λ ≥ ``mode.two_seed_lam``
    of the Score as Action arms (where one tuning seed did not predict the reported seeds),
    the first tuning seed otherwise."""
    if method in LAM_METHODS and lam is not None and lam >= mode.two_seed_lam:
        return split.tuning_seeds
    return split.tuning_seeds[:1]


def _score(cells: list[dict], seeds: list[int]) -> dict:
    """Mean final eval reward and gold over the tuning seeds, with the per-seed values."""
    fin = [c["evals"][-1] for c in cells]
    return {"reward": float(np.mean([f["eval/reward"] for f in fin])),
            "gold": float(np.mean([f["eval/gold"] for f in fin])),
            "per_seed": [{"seed": s, "reward": f["eval/reward"], "gold": f["eval/gold"]}
                         for s, f in zip(seeds, fin)]}


def tune_method(method: str, root: Path, mode: Mode, split: sel.Split, floor: float) -> dict:
    """The tuned hyper-parameters of one method (cached cells only; raises :class:`Missing`
    naming the cells it needs next). Score as Action: lr tuned per λ, then λ by the same rule."""

    def lr_tuned(lam: float | None) -> sel.Tuned:
        def score(lr: float) -> dict:
            cs = [Cell(method, lam, lr, s, split.tuning_draws)
                  for s in tuning_seeds_for(method, lam, mode, split)]
            got = [_load(root, c) for c in cs]
            if any(g is None for g in got):
                raise Missing([c for c, g in zip(cs, got) if g is None])
            return _score(got, [c.seed for c in cs])
        return sel.tune_grid(mode.grid, score, gold_floor=floor, max_widen=mode.max_widen)

    if method not in LAM_METHODS:
        return {"lr": lr_tuned(None)}
    per_lam: dict[float, sel.Tuned] = {}
    need = []  # every λ's next cells at once (one round), not one λ per round
    for lam in mode.lams:
        try:
            lr_tuned(lam)
        except Missing as e:
            need += e.cells
    if need:
        raise Missing(need)

    def lam_score(lam: float) -> dict:
        t = per_lam[lam] = lr_tuned(lam)
        return {"reward": float("nan"), "gold": float("nan")} if t.pick is None else \
            dict(t.scores[t.pick])

    lam_t = sel.tune_grid(mode.lams, lam_score, gold_floor=floor, max_widen=mode.lam_widen)
    out = {"lam": lam_t, "lr_by_lam": per_lam}
    if lam_t.pick is not None:
        out["lr"] = per_lam[lam_t.pick]
    return out


def initial_tuning_cells(mode: Mode, split: sel.Split, methods) -> list[Cell]:
    methods = sorted(methods, key=PRIORITY.index)
    lams = {m: (mode.lams if m in LAM_METHODS else (None,)) for m in methods}
    return [Cell(m, lam, lr, s, split.tuning_draws) for m in methods for lam in lams[m]
            for lr in mode.grid for s in tuning_seeds_for(m, lam, mode, split)]


def tune_all(root: Path, mode: Mode, split: sel.Split, base: str, jobs: int,
             new: bool) -> tuple[dict, float, list[str]]:
    """Tune every method: run the initial grids, then the widenings round by round."""
    if new:
        run_cells(initial_tuning_cells(mode, split, mode.methods), root, mode, base, jobs)
    first = next((c for c in initial_tuning_cells(mode, split, mode.methods)
                  if (root / c.name()).is_file()), None)
    if first is None:
        return {}, float("nan"), list(mode.methods)
    base_gold = _load(root, first)["evals"][0]["eval/gold"]
    floor = base_gold - GOLD_DROP
    while True:
        tuned, need, missing = {}, [], []
        for m in mode.methods:
            try:
                tuned[m] = tune_method(m, root, mode, split, floor)
            except Missing as e:
                need += e.cells
                missing.append(m)
        if not need or not new:
            return tuned, floor, missing
        run_cells(need, root, mode, base, jobs)


def reported_cells(tuned: dict, split: sel.Split) -> dict[str, list[Cell]]:
    out = {}
    for m, t in tuned.items():
        if t.get("lr") is None or t["lr"].pick is None:
            continue
        lam = t["lam"].pick if "lam" in t else None
        out[m] = [Cell(m, lam, t["lr"].pick, s, split.reported_draws)
                  for s in split.reported_seeds]
    return out


# ----------------------------------------------------------------------------------------------
# analysis
# ----------------------------------------------------------------------------------------------


def analyse(per: dict[str, dict[int, dict]], seeds: tuple[int, ...]) -> dict:
    """Per-arm summaries, curves and the claims (paired, Welch beside, Holm)."""
    out: dict = {"arms": {}, "claims": {}}
    base_r = base_g = float("nan")
    for m, cs in per.items():
        if not cs:
            continue
        runs = [cs[s] for s in seeds if s in cs]
        fin_r = [r["evals"][-1]["eval/reward"] for r in runs]
        base_r, base_g = runs[0]["evals"][0]["eval/reward"], runs[0]["evals"][0]["eval/gold"]
        ep = runs[0]["epochs"]
        clip0 = [e["clip/frac_mb0"] for r in runs for e in r["epochs"] if "clip/frac_mb0" in e]
        later = [e["clip/frac_later"] for r in runs for e in r["epochs"]
                 if "clip/frac_later" in e]
        out["arms"][m] = {
            "seeds": len(runs), "lr": runs[0]["lr"], "lam": runs[0]["lam"],
            "reward_start": base_r, "gold_start": base_g,
            "reward": ci95(fin_r), "gold": ci95([r["evals"][-1]["eval/gold"] for r in runs]),
            "collapse_rate": sel.collapse_rate(fin_r, base_r, COLLAPSE_MARGIN),
            "queries": ep[-1]["queries/reward"] if ep else float("nan"),
            "model_evals_grad_per_epoch": float(np.mean([e["cost/model_evals_grad"]
                                                         for e in ep])) if ep else float("nan"),
            "train_cpu_s": ci95([r["cpu_s"] for r in runs]),
            "mem_peak_gb": ci95([r["mem_peak_gb"] for r in runs]),
            # median: a worker's first cell also holds the one-time loading (≈ 0.2 GB more)
            "mem_peak_gb_median": float(np.median([r["mem_peak_gb"] for r in runs])),
            "mem_increment_gb_median": float(np.median([r["mem_peak_gb"] - r["rss_start_gb"]
                                                        for r in runs])),
            "clip_frac_mb0": float(np.mean(clip0)) if clip0 else float("nan"),
            "clip_frac_later": float(np.mean(later)) if later else float("nan"),
            "errors": sum(r.get("error") is not None for r in runs),
            "curve": [{"epoch": runs[0]["evals"][i]["epoch"],
                       "queries": runs[0]["evals"][i]["queries"],
                       "cpu_s": float(np.mean([r["evals"][i]["cpu_s"] for r in runs])),
                       "reward": ci95([r["evals"][i]["eval/reward"] for r in runs]),
                       "gold": ci95([r["evals"][i]["eval/gold"] for r in runs])}
                      for i in range(min(len(r["evals"]) for r in runs))],
            "per_seed": [{"seed": r["seed"], "eval_reward": r["evals"][-1]["eval/reward"],
                          "eval_gold": r["evals"][-1]["eval/gold"], "cpu_s": r["cpu_s"],
                          "mem_peak_gb": r["mem_peak_gb"]} for r in runs],
        }
    pvals, claims = {}, out["claims"]
    ref = per.get(REF, {})
    for m, cs in per.items():
        if m == REF or not cs or not ref:
            continue
        common = [s for s in seeds if s in cs and s in ref]
        for key, label in (("eval/reward", "eval reward"), ("eval/gold", "eval gold")):
            x = [cs[s]["evals"][-1][key] for s in common]
            y = [ref[s]["evals"][-1][key] for s in common]
            name = f"{m} − {REF}: {label}"
            claims[name] = {"paired": sel.paired_interval(x, y),
                            "welch": sel.welch_interval(x, y)}
            pvals[name] = claims[name]["paired"]["p"]
    for m in sorted(per, key=PRIORITY.index):  # does the arm move from the base at all?
        if not per.get(m):
            continue
        runs = [per[m][s] for s in seeds if s in per[m]]
        x = [r["evals"][-1]["eval/reward"] for r in runs]
        y = [r["evals"][0]["eval/reward"] for r in runs]  # the base, same draws
        name = f"{m} − base model: eval reward"
        claims[name] = {"paired": sel.paired_interval(x, y), "welch": None}
        pvals[name] = claims[name]["paired"]["p"]
    out["holm"] = sel.holm(pvals)
    out["base"] = {"reward": base_r, "gold": base_g}
    return out


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def write_table(res: dict, mode: Mode, path: Path) -> None:
    an, rec = res["analysis"], res["selection"]
    lines = [f"# flow_rl ({mode.name} mode): Flow-GRPO family, DiffusionNFT, LOOP and Score as "
             "Action on `pretrained:digits8-flow` → `aesthetic_proxy`", "",
             f"Budget per run: {mode.epochs} epochs × {mode.p * mode.k} rollouts = "
             f"{mode.epochs * mode.p * mode.k} reward queries, {mode.steps} steps, on-policy "
             "(one optimizer step per batch; PPO clip 1e-4 per dimension for every ratio arm). "
             f"Base model on the reported evaluation set: reward {an['base']['reward']:.4f}, gold "
             f"{an['base']['gold']:.4f}.", "",
             f"Status: {res['status']}. Arms defined in run.py but not run for this table: "
             f"{', '.join(res['not_run']) or 'none'}.", "",
             "Final epoch, fixed evaluation set (reported draws), mean ± 95 % t-interval over "
             "the reported seeds. CPU s: training only (`time.process_time`, single thread, "
             "shared machine; compare within this table). Peak memory: the cell's peak RSS "
             "(`mem/peak_gb`, the process high-water mark reset at the cell's start), median over "
             "seeds (a worker's first cell also holds the one-time loading); peak − start: the "
             "cell's peak over the process RSS at its start. Clipped share: "
             "`clip/frac_mb0` averaged over epochs (on-policy: the only minibatch).", "",
             "| arm | lr (edge?) | λ (edge?) | seeds | eval reward | eval gold | collapse | "
             "model evals with grad / epoch | reward queries | train CPU s | "
             "peak memory GB (median) | peak − start GB (median) | clipped share |",
             "|---" * 13 + "|"]
    for m, a in an["arms"].items():
        ch = rec["chosen"].get(m, {})
        lam_ch = res["lam_selection"].get(m)
        lr_s = f"{a['lr']:g} ({'edge' if ch.get('edge') else 'interior'})"
        lam_s = "–" if a["lam"] is None else \
            f"{a['lam']:g} ({'edge' if lam_ch and lam_ch['edge'] else 'interior'})"
        lines.append(f"| {m} | {lr_s} | {lam_s} | {a['seeds']} | {fmt(a['reward'])} | "
                     f"{fmt(a['gold'], 3)} | {a['collapse_rate']:.2f} | "
                     f"{a['model_evals_grad_per_epoch']:.0f} | {a['queries']:.0f} | "
                     f"{fmt(a['train_cpu_s'], 1)} | {a['mem_peak_gb_median']:.2f} | "
                     f"{a['mem_increment_gb_median']:.3f} | "
                     f"{a['clip_frac_mb0']:.3f} |")
    lines += ["", "## Claims (paired t-interval over the same seeds and evaluation draws; Welch "
              "beside; Holm across all claims of this table)", "",
              *sel.claims_table(an["claims"], an["holm"], "+.4f")]
    lines += ["", "## Evaluation curve (mean over seeds; CPU s: training so far)", "",
              "| arm | " + " | ".join(f"epoch {c['epoch']}: reward / gold (CPU s)"
                                      for c in next(iter(an["arms"].values()))["curve"]) + " |",
              "|---|" + "---|" * len(next(iter(an["arms"].values()))["curve"])] \
        if an["arms"] else []
    for m, a in an["arms"].items():
        lines.append(f"| {m} | " + " | ".join(
            f"{c['reward'][0]:.4f} / {c['gold'][0]:.3f} ({c['cpu_s']:.1f})" for c in a["curve"])
            + " |")
    lines += ["", "## Hyper-parameter selection (tuning seeds and draws, never reported)", "",
              f"Rule: {rec['selection_rule']}. Interval: {rec['interval']}. Correction: "
              f"{rec['correction']}. Collapse: {rec['collapse_rule']}. Split: tuning seeds "
              f"{rec['split']['tuning_seeds']}, evaluation draws from "
              f"{rec['split']['tuning_draws']}"
              f"; reported seeds {rec['split']['reported_seeds']}, draws from "
              f"{rec['split']['reported_draws']}.", "",
              "| arm | hyper-parameter | grid: final reward / gold (mean over the tuning seeds; "
              "[per seed: reward / gold] where more than one) | pick | edge | widened | note |",
              "|---|---|---|---|---|---|---|"]

    def one(v: dict) -> str:
        ps = v.get("per_seed", [])
        per = "" if len(ps) < 2 else " [" + "; ".join(
            f"{x['seed']}: {x['reward']:.4f} / {x['gold']:.3f}" for x in ps) + "]"
        return f"{v['reward']:.4f} / {v['gold']:.3f}{per}"

    def row(arm: str, hp: str, t: dict) -> str:
        sc = ", ".join(f"{k}: {one(v)}"
                       for k, v in sorted(t["scores"].items(), key=lambda kv: float(kv[0])))
        pick = "none" if t["pick"] is None else f"{t['pick']:g}"
        return (f"| {arm} | {hp} | {sc} | {pick} | {'yes' if t['edge'] else 'no'} | "
                f"{t['widened']} | {t['reason']} |")

    for m, ch in rec["chosen"].items():
        if m in res["lam_selection"]:
            lines.append(row(m, "λ (lr tuned per λ)", res["lam_selection"][m]))
            for lam, t in res["lr_by_lam"][m].items():
                lines.append(row(m, f"lr at λ = {lam}", t))
        else:
            lines.append(row(m, "lr", ch))
    path.write_text("\n".join(lines) + "\n")


def write_figures(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for xkey, label, name in (("queries", "reward queries", "reward_vs_queries"),
                              ("cpu_s", "training CPU seconds (single thread)", "reward_vs_cpu")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for m, a in res["analysis"]["arms"].items():
            x = [c[xkey] for c in a["curve"]]
            for ax, key in zip(axes, ("reward", "gold")):
                mu = np.array([c[key][0] for c in a["curve"]])
                h = np.nan_to_num(np.array([c[key][1] for c in a["curve"]]))
                ax.plot(x, mu, marker="o", label=f"{m} (lr {a['lr']:g})")
                ax.fill_between(x, mu - h, mu + h, alpha=0.15)
        axes[0].set_ylabel("eval reward (aesthetic_proxy)")
        axes[1].set_ylabel("eval gold (digit probability)")
        for ax in axes:
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)


def write_per_seed(res: dict, path: Path) -> None:
    csv = ["method,lr,lam,seed,eval_reward,eval_gold,cpu_s,mem_peak_gb"]
    for m, a in res["analysis"]["arms"].items():
        lam = "" if a["lam"] is None else f"{a['lam']:g}"
        csv += [f"{m},{a['lr']:g},{lam},{r['seed']},{r['eval_reward']:.6f},"
                f"{r['eval_gold']:.6f},{r['cpu_s']:.2f},{r['mem_peak_gb']:.4f}"
                for r in a["per_seed"]]
    path.write_text("\n".join(csv) + "\n")


# ----------------------------------------------------------------------------------------------
# text cache (a machine without the MiniLM weights)
# ----------------------------------------------------------------------------------------------


def write_text_cache(path: Path) -> None:
    """Save the frozen MiniLM outputs of the digit prompts: {prompt: (token states, pooled)},
    exactly what TextEncoder caches."""
    import torch

    from scorealign.data.digits import prompt_for
    from scorealign.nets import get_text_encoder

    enc = get_text_encoder("cpu")
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


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="pretrained:digits8-flow")
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--quick", action="store_true", help="tiny run for the test")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--methods", nargs="+", default=None, help="subset of arms")
    ap.add_argument("--seeds", type=int, default=None, help="reported seeds (default: mode's)")
    ap.add_argument("--reverse", action="store_true",
                    help="compute the reported cells in reverse order (a second invocation)")
    ap.add_argument("--no-new-cells", action="store_true",
                    help="tabulate the cached cells only (missing ones are named)")
    ap.add_argument("--text-cache", default=None,
                    help="precomputed prompt embeddings (see --write-text-cache)")
    ap.add_argument("--write-text-cache", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.write_text_cache:
        write_text_cache(a.write_text_cache)
        return 0
    if a.text_cache:  # before the workers fork: they inherit the patched encoder
        install_text_cache(a.text_cache)
    mode = QUICK if a.quick else FULL
    if a.methods:
        unknown = set(a.methods) - set(METHODS)
        if unknown:
            ap.error(f"unknown methods {sorted(unknown)}; known: {list(METHODS)}")
        mode = replace(mode, methods=tuple(m for m in METHODS if m in a.methods))
    if a.seeds is not None:
        mode = replace(mode, seeds=a.seeds)
    root = a.results / "cells" / mode.name
    root.mkdir(parents=True, exist_ok=True)
    split = sel.split(mode.seeds, mode.tuning_seeds, draws_reported=1_000_000,
                      draws_tuning=2_000_000)
    new = not a.no_new_cells
    t0 = time.time()
    tuned, floor, missing = tune_all(root, mode, split, a.base, a.jobs, new)
    rep = reported_cells(tuned, split)
    if new:  # arm by arm (priority: the reference first), so a stopped run leaves whole arms
        run_cells([c for m in sorted(rep, key=PRIORITY.index) for c in rep[m]], root, mode,
                  a.base, a.jobs, a.reverse)
    per = {m: {c.seed: d for c in cs if (d := _load(root, c)) is not None}
           for m, cs in rep.items()}
    an = analyse(per, split.reported_seeds)
    short = {m: len(v) for m, v in per.items() if len(v) < mode.seeds}
    partial = missing or short
    status = ("complete" if not partial else
              "PARTIAL — arms without a finished selection: " + (", ".join(missing) or "none")
              + "; arms with fewer reported seeds: " +
              (", ".join(f"{m} {n}/{mode.seeds}" for m, n in short.items()) or "none"))
    chosen = {m: t["lr"] for m, t in tuned.items() if t.get("lr") is not None}
    rule = (sel.selection_rule(floor, "final eval reward") +
            f" (the base model's gold on the tuning draws − {GOLD_DROP:g}); Score as Action: lr "
            "tuned per λ, then λ by the same rule over the per-λ picks, the λ grid widened "
            f"geometrically (up to {mode.lam_widen} times) while its pick sits at an edge" + (
            "" if len(split.tuning_seeds) < 2 or not np.isfinite(mode.two_seed_lam) else
            f". Tuning seeds: {split.tuning_seeds[0]} alone for every lr grid of the arms without λ "
            f"and for the λ < {mode.two_seed_lam:g} points of both Score as Action arms; the mean "
            f"over {', '.join(map(str, split.tuning_seeds))} for every (λ, lr) cell with λ ≥ "
            f"{mode.two_seed_lam:g} of both Score as Action arms"))
    res = {"mode": asdict(mode), "status": status, "gold_floor": floor,
           "not_run": [m for m in METHODS if m not in mode.methods],
           "selection": sel.record(chosen, selection=rule,
                                   correction="Holm (FWER 0.05) across all claims of this table",
                                   collapse=sel.collapse_rule(COLLAPSE_MARGIN), split_=split),
           "lam_selection": {m: t["lam"].as_dict() for m, t in tuned.items() if "lam" in t},
           "lr_by_lam": {m: {f"{k:g}": v.as_dict() for k, v in t["lr_by_lam"].items()}
                         for m, t in tuned.items() if "lr_by_lam" in t},
           "analysis": an, "wall_s_this_call": round(time.time() - t0)}
    res["selection"]["any_edge"] = res["selection"]["any_edge"] or any(
        t["edge"] for t in res["lam_selection"].values())
    out = a.results / ("quick" if a.quick else "")
    write_json(out / "results.json", res)
    write_table(res, mode, out / "table.md")
    write_per_seed(res, out / "per_seed.csv")
    if an["arms"]:
        write_figures(res, out / "figures")
    print(status)
    return 0



if __name__ == "__main__":
    sys.exit(main())
