"""MallowsPO's synthetic bandit: DPO vs Mallows-θ-DPO vs Mallows-φ-DPO, on a control world whose
prompts all have the same preference dispersion and on worlds where it differs [Chen+24
MallowsPO, §5 "synthetic bandit"; set-up re-derived here, the paper's exact arm/prompt counts were
not available].

    OMP_NUM_THREADS=1 python experiments/mallows_bandit/run.py [--jobs 2]   # 3.3 CPU-min; cached
    python experiments/mallows_bandit/run.py --quick --out <dir>              # seconds (the test)

World: P prompts, K arms. Prompt x has a central ranking μ₀(x) (a random permutation) and a
dispersion φ(x). A label compares two random arms by their order in a ranking drawn from
Mallows(φ(x), Kendall τ) around μ₀(x). The true reward of an arm is its normalized central rank,
r = 1 − pos/(K − 1). Three worlds:

* ``homogeneous`` (the control): φ(x) = 0.5 for every prompt. MallowsPO's premise is that
  weighting by the dispersion helps when it varies across prompts; here it does not vary, so any
  difference to DPO in this world is not that mechanism (Mallows-θ with the true, mean-normalized
  c is exactly DPO here);
* ``two_group``: half the prompts concentrated (φ = 0.2), half dispersed (φ = 0.9);
* ``graded``: φ(x) evenly spread over [0.05, 0.95].

Common random numbers: the central rankings, the compared arm pairs and the uniforms of the
Mallows draws of world seed s come from generators keyed by s alone (not by the world), and a
ranking is drawn by repeated insertion with one uniform per insertion (inverse CDF,
:func:`mallows_from_uniforms`). So the three worlds of seed s differ only in φ(x), and a
difference between worlds is paired by seed.

Policy: tabular logits θ[x, a], π = softmax(θ), reference uniform, so the margin is h = θ_w − θ_l.
Each method minimizes its pairwise loss (``preference.losses.pairwise_loss``) by full-batch
gradient descent for a fixed budget (on finite data the DPO optimum is at infinity for a pair
always won the same way, so the budget is part of the method) with step size lr/β (the gradient of
every link is ∝ β, so lr/β makes the budget comparable across β; plain SGD, not Adam, whose
per-parameter normalization would undo the per-prompt weight c(x) on tabular parameters).

Dispersion for the Mallows losses:
* ``true``: θ link: c(x) = −log φ(x) rescaled to mean 1 (a constant factor is a reparametrization of
  β); φ link: the generating φ(x) itself, c = −log φ(x), unscaled (the φ link's shape depends on φ);
* ``entropy``: the paper's entropy proxy c(x) = −λ log H̄(x), H̄(x) the mean normalized binary
  entropy of the empirical pairwise win rates of prompt x (the uniform reference has no entropy
  signal: this is our adaptation), with λ = "auto" (mean c = 1,
  ``mallows.auto_dispersion_scale``), for both links.

Metric: expected true reward E_x E_π[r] at matched KL(π ‖ π_ref): each seed's reward-vs-KL
frontier over β, linearly interpolated at ``--kl-budgets``; the primary number of a (world, seed,
method) is its mean over the budgets (NaN if the frontier misses one).

Protocol (``experiments/_selection.py``):
* lr·β of every (world, method) is chosen on tuning world seeds 1000.. that are never reported
  (``_selection.split``), by the mean primary metric there; the grid starts at ``--lrs`` and is
  widened geometrically while the pick sits at an edge (``tune_grid``; ``edge`` if capped). The
  evaluation is exact (expectations under π, no sampled draws), so there are no evaluation draws
  to split.
* reported: ``--seeds`` world seeds 0.. . Claims, Holm-corrected together (FWER 0.05), paired
  t-intervals with Welch beside: (i) difference-in-differences, the heterogeneous world against
  the control, per Mallows variant: [R_m − R_DPO](world, s) − [R_m − R_DPO](homogeneous, s);
  (ii) the plain difference to DPO in each world, R_m − R_DPO, paired by seed.

One JSON per (world, seed, method, lr) cell under ``cells/`` (with its CPU seconds); a stopped
run continues.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from scorealign.preference.losses import pairwise_loss
from scorealign.preference.mallows import auto_dispersion_scale, neg_log_dispersion
from scorealign.rng import generator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import _selection as sel  # noqa: E402
from _cells import cached, ci95, map_jobs, portable_path, write_json  # noqa: E402

CONTROL = "homogeneous"
WORLDS = {"homogeneous": lambda p: [0.5] * p,
          "two_group": lambda p: [(0.2, 0.9)[i % 2] for i in range(p)],
          "graded": lambda p: [0.05 + 0.9 * i / max(1, p - 1) for i in range(p)]}
METHODS = ("dpo", "mallows_theta[true]", "mallows_theta[entropy]", "mallows_phi[true]",
           "mallows_phi[entropy]")
FULL = {"prompts": 20, "arms": 8, "pairs": 40, "seeds": 20, "tuning_seeds": 4, "steps": 300,
        "lrs": "0.1,0.2,0.5", "betas": "0.02,0.05,0.1,0.2,0.5,1,2,5,10,20",
        "kl_budgets": "0.1,0.25,0.5", "max_widen": 3}
QUICK = {"prompts": 4, "arms": 4, "pairs": 12, "seeds": 3, "tuning_seeds": 1, "steps": 30,
         "lrs": "0.5,1,2", "betas": "0.1,0.3,1,3,10", "kl_budgets": "0.05,0.1", "max_widen": 1}


def mallows_from_uniforms(k: int, c: float, u: list[float]) -> list[int]:
    """A ranking of 0..k−1 from Mallows(φ = e^{−c}, Kendall τ) centred at the identity, best first.

    Repeated insertion (as ``mallows.sample_mallows``): item i is inserted at position j ∈ {0..i}
    with probability ∝ φ^{i−j}, which gives P(π) ∝ φ^{d_K(π, id)}; here j is the inverse CDF of
    that law at the uniform u[i], so the same uniforms under two dispersions give coupled draws.
    """
    order: list[int] = []
    for i in range(k):
        w = [math.exp(-c * (i - j)) for j in range(i + 1)]
        t, acc, pick = u[i] * sum(w), 0.0, i
        for j, wj in enumerate(w):
            acc += wj
            if t < acc:
                pick = j
                break
        order.insert(pick, i)
    return order


def make_world(kind: str, p: int, k: int, n_pairs: int, seed: int) -> dict:
    """Central rankings, dispersions, and n_pairs Mallows-labelled comparisons per prompt.

    Everything random is keyed by ``seed`` only (common random numbers across worlds)."""
    phi = torch.tensor(WORLDS[kind](p), dtype=torch.float64)
    g_center = generator(seed, "bandit-world", "center")
    center = torch.stack([torch.randperm(k, generator=g_center) for _ in range(p)])  # [x, pos]
    pos = torch.argsort(center, dim=1)                                              # [x, arm]
    reward = 1.0 - pos.double() / (k - 1)
    g_pair = generator(seed, "bandit-world", "pairs")
    arms = torch.stack([torch.randperm(k, generator=g_pair)[:2] for _ in range(p * n_pairs)])
    u = torch.rand(p * n_pairs, k, generator=generator(seed, "bandit-world", "mallows"),
                   dtype=torch.float64).tolist()
    xs, ws, ls = [], [], []
    for x in range(p):
        c = -math.log(float(phi[x]))
        cen = center[x].tolist()
        for i in range(n_pairs):
            n = x * n_pairs + i
            order = [cen[j] for j in mallows_from_uniforms(k, c, u[n])]  # arms, best first
            rank = {arm: r for r, arm in enumerate(order)}
            a, b = arms[n].tolist()
            w, l = (a, b) if rank[a] < rank[b] else (b, a)
            xs.append(x), ws.append(w), ls.append(l)
    return {"phi": phi, "reward": reward, "x": torch.tensor(xs), "w": torch.tensor(ws),
            "l": torch.tensor(ls), "k": k}


def entropy_dispersion(world: dict) -> torch.Tensor:
    """H̄(x): mean normalized binary entropy of the empirical pairwise win rates of prompt x."""
    p, k = world["reward"].shape
    wins = torch.zeros(p, k, k, dtype=torch.float64)
    wins.index_put_((world["x"], world["w"], world["l"]),
                    torch.ones(len(world["x"]), dtype=torch.float64), accumulate=True)
    n = wins + wins.transpose(1, 2)
    q = (wins + 0.5) / (n + 1.0)  # Jeffreys-smoothed P(a ≻ b)
    hb = -(q * q.log() + (1 - q) * (1 - q).log()) / math.log(2)
    seen = n > 0
    return (hb * seen).sum((1, 2)) / seen.sum((1, 2))


def dispersions(world: dict) -> dict[str, torch.Tensor]:
    """c(x) per method (see the module docstring); DPO has none."""
    c_true = -world["phi"].log()
    h_bar = entropy_dispersion(world)
    c_ent = neg_log_dispersion(h_bar, scale=auto_dispersion_scale(h_bar))  # mean c = 1
    return {"mallows_theta[true]": c_true / c_true.mean(), "mallows_theta[entropy]": c_ent,
            "mallows_phi[true]": c_true, "mallows_phi[entropy]": c_ent}


def train_policies(world: dict, method: str, betas: list[float], c: torch.Tensor | None,
                   steps: int, lr: float) -> torch.Tensor:
    """Tabular logits θ[β, x, a], one independent policy per β, trained on the labelled pairs.

    All β are trained at once on a stacked tensor (their losses are summed, and they share no
    parameter, so each slice follows its own gradient descent with step size lr/β: the β slice's
    loss is divided by β under one global step size lr). Returns π = softmax(θ), [nβ, P, K].
    """
    p, k = world["reward"].shape
    beta = torch.tensor(betas, dtype=torch.float64)[:, None]          # [nβ, 1]
    theta = torch.zeros(len(betas), p, k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=lr)
    n_per_prompt = len(world["x"]) / p
    x, w, l = world["x"], world["w"], world["l"]
    link = method.split("[")[0]
    name = "sigmoid" if link == "dpo" else link
    kw = {} if c is None else {"c": c[x]}
    for _ in range(steps):
        logp = torch.log_softmax(theta, dim=2) + math.log(k)   # Δ = log π − log π_ref
        # The per-prompt mean loss, summed over prompts; slice β scaled by 1/β (step size lr/β).
        per = pairwise_loss(name, logp[:, x, w], logp[:, x, l], beta=beta, **kw)  # [nβ, N]
        loss = (per.sum(1) / beta[:, 0]).sum() / n_per_prompt
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.softmax(theta.detach(), dim=2)


def evaluate(world: dict, pi: torch.Tensor) -> dict[str, float]:
    """Expected true reward and KL(π ‖ uniform), overall and by dispersion half."""
    k = pi.shape[1]
    rew = (pi * world["reward"]).sum(1)
    kl = (pi * (pi.clamp_min(1e-300).log() + math.log(k))).sum(1)
    low = world["phi"] <= world["phi"].median()
    return {"reward": float(rew.mean()), "kl": float(kl.mean()),
            "reward_concentrated": float(rew[low].mean()),
            "reward_dispersed": float(rew[~low].mean()) if bool((~low).any()) else float("nan")}


def cell_path(cells: Path, kind: str, seed: int, method: str, lr: float) -> Path:
    return cells / f"{kind}-s{seed}-{_slug(method)}-lr{lr:g}.json"


def run_cell(job: tuple) -> dict:
    """One (world, seed, method, lr) cell: the frontier over β; cached as JSON with its CPU s."""
    cells, kind, seed, method, lr, cfg = job

    def compute() -> dict:
        torch.set_num_threads(1)
        world = make_world(kind, cfg["prompts"], cfg["arms"], cfg["pairs"], seed)
        c = dispersions(world).get(method)
        betas = [float(b) for b in cfg["betas"].split(",")]
        pis = train_policies(world, method, betas, c, cfg["steps"], lr)
        cell = {"world": kind, "seed": seed, "method": method, "lr": lr,
                "points": [{"beta": b, **evaluate(world, pi)} for b, pi in zip(betas, pis)]}
        if c is not None and kind != CONTROL:
            cell["corr_c_phi"] = float(torch.corrcoef(torch.stack([c, -world["phi"].log()]))[0, 1])
        return cell

    return cached(cell_path(cells, kind, seed, method, lr), compute, cpu_key="cpu_s")


def at_kl(points: list[dict], budget: float, key: str = "reward") -> float:
    """``key`` interpolated at KL = budget along the frontier (nan outside its KL range)."""
    pts = sorted((p["kl"], p[key]) for p in points)
    for (k0, r0), (k1, r1) in zip(pts, pts[1:]):
        if k0 <= budget <= k1:
            return r0 if k1 == k0 else r0 + (r1 - r0) * (budget - k0) / (k1 - k0)
    return float("nan")


def primary(cell: dict, budgets: list[float], key: str = "reward") -> float:
    """Mean of ``key`` at the KL budgets (NaN if the frontier misses one)."""
    return float(np.mean([at_kl(cell["points"], b, key) for b in budgets]))


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s).strip("_")


def tune_job(job: tuple) -> tuple:
    """Tune one (world, method) on the tuning seeds (``_selection.tune_grid``)."""
    cells, kind, method, cfg, split, budgets, grid = job

    def score(lr: float) -> dict:
        vals = [primary(run_cell((cells, kind, s, method, lr, cfg)), budgets)
                for s in split.tuning_seeds]
        return {"reward": float(np.mean(vals))}

    return kind, method, sel.tune_grid(grid, score, max_widen=cfg["max_widen"])


def analyse(per: dict, budgets: list[float], worlds: list[str]) -> dict:
    """Rows per (world, method) and the claims with Holm.

    ``per[kind][method]`` is the list of reported cells, ordered by seed."""
    rows: dict = {}
    prim = {k: {m: [primary(c, budgets) for c in cs] for m, cs in per[k].items()} for k in per}
    for kind in worlds:
        rows[kind] = {}
        for m, cs in per[kind].items():
            row = {"seeds": len(cs), "primary": ci95(prim[kind][m]),
                   "cpu_s": float(sum(c.get("cpu_s", 0.0) for c in cs))}
            for b in budgets:
                row[f"kl{b:g}"] = ci95([at_kl(c["points"], b) for c in cs])
            for half in ("reward_concentrated", "reward_dispersed"):
                row[half] = ci95([primary(c, budgets, half) for c in cs])
            corr = [c["corr_c_phi"] for c in cs if c.get("corr_c_phi") is not None]
            if corr:
                row["corr_c_vs_true"] = ci95(corr)
            rows[kind][m] = row
    claims: dict = {}
    delta = {k: {m: [a - b for a, b in zip(prim[k][m], prim[k]["dpo"])] for m in prim[k]}
             for k in prim}
    for kind in worlds:
        if kind == CONTROL:
            continue
        for m in METHODS[1:]:
            claims[f"DiD {m}: ({kind} − DPO) − ({CONTROL} − DPO)"] = {
                "kind": "did", "world": kind, "method": m,
                "paired": sel.paired_interval(delta[kind][m], delta[CONTROL][m]),
                "welch": sel.welch_interval(delta[kind][m], delta[CONTROL][m])}
    for kind in worlds:
        for m in METHODS[1:]:
            claims[f"Δ {m} − DPO in {kind}"] = {
                "kind": "delta", "world": kind, "method": m,
                "paired": sel.paired_interval(prim[kind][m], prim[kind]["dpo"]),
                "welch": sel.welch_interval(prim[kind][m], prim[kind]["dpo"])}
    holm = sel.holm({k: v["paired"]["p"] for k, v in claims.items()})
    return {"rows": rows, "claims": claims, "holm": holm}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    for k, v in FULL.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=None,
                        help=f"default {v} (quick: {QUICK[k]})")
    a = ap.parse_args(argv)
    cfg = {k: (getattr(a, k) if getattr(a, k) is not None else (QUICK if a.quick else FULL)[k])
           for k in FULL}
    t0 = time.process_time()
    out = Path(a.out)
    cells = out / "cells"
    worlds = list(WORLDS)
    budgets = [float(v) for v in cfg["kl_budgets"].split(",")]
    grid = [float(v) for v in cfg["lrs"].split(",")]
    split = sel.split(cfg["seeds"], cfg["tuning_seeds"])
    # 1. the starting grid's tuning cells (in parallel), then tuning with widening
    map_jobs(run_cell, [(cells, k, s, m, lr, cfg) for k in worlds for m in METHODS for lr in grid
                        for s in split.tuning_seeds], a.jobs, chunksize=4)
    tuned = map_jobs(tune_job, [(cells, k, m, cfg, split, budgets, grid) for k in worlds
                                for m in METHODS], a.jobs, chunksize=4)
    chosen = {(k, m): t for k, m, t in tuned}
    # 2. reported seeds at the chosen lr
    jobs = [(cells, k, s, m, chosen[(k, m)].pick, cfg) for k in worlds for s in split.reported_seeds
            for m in METHODS if chosen[(k, m)].pick is not None]
    done = map_jobs(run_cell, jobs, a.jobs, chunksize=4)
    per: dict = {k: {m: [] for m in METHODS if chosen[(k, m)].pick is not None} for k in worlds}
    for j, c in zip(jobs, done):
        per[j[1]][j[3]].append(c)
    an = analyse(per, budgets, worlds)
    cpu_cells = sum(json.loads(p.read_text()).get("cpu_s", 0.0) for p in cells.glob("*.json"))
    res = {"config": cfg, "worlds": worlds, "control": CONTROL, "kl_budgets": budgets,
           "selection": sel.record({f"{k} {m}": t for (k, m), t in chosen.items()},
                                   selection="max mean R over the tuning world seeds "
                                   f"{split.tuning_seeds[0]}–{split.tuning_seeds[-1]} (exact "
                                   "evaluation, no sampled draws); an lr whose frontier misses a "
                                   "KL budget on a tuning seed scores NaN and is not eligible",
                                   split_=split),
           "analysis": an, "cells": portable_path(cells),
           "cpu_s_all_cells": round(cpu_cells, 1),
           "cpu_s_this_call": round(time.process_time() - t0, 1),
           "peak_rss_mb_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                             / 1024, 1)}
    write_json(out / "summary.json", json.loads(json.dumps(res, default=_jsonable)))
    (out / "table.md").write_text(table(res))
    plot(out, res, per)
    print(table(res))
    return 0


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(type(o))


def _fmt(mh, signed: bool = False, d: int = 4) -> str:
    m, h = mh
    if m is None or not math.isfinite(m):
        return "n/a"
    hs = "?" if h is None or not math.isfinite(h) else f"{h:.{d}f}"
    return f"{m:{'+' if signed else ''}.{d}f} ± {hs}"


def table(res: dict) -> str:
    """Markdown: the claims with Holm, rewards per world, the lr selection."""
    cfg, an, b = res["config"], res["analysis"], res["kl_budgets"]
    sp = res["selection"]["split"]
    lines = [f"# Mallows bandit: DPO vs Mallows-θ/φ-DPO, control world `{res['control']}`", "",
             f"{cfg['prompts']} prompts × {cfg['arms']} arms, {cfg['pairs']} labelled pairs per "
             f"prompt, {cfg['steps']} full-batch steps of size lr/β, β ∈ {{{cfg['betas']}}}. "
             f"Primary metric R: expected true reward at matched KL(π ‖ π_ref), mean over the KL "
             f"budgets {b} (each seed's frontier interpolated). Reported world seeds "
             f"{sp['reported_seeds'][0]}–{sp['reported_seeds'][-1]} "
             f"({len(sp['reported_seeds'])}); the three worlds of one seed share central "
             "rankings, compared pairs and Mallows uniforms (only φ(x) differs), so differences "
             "between worlds are paired by seed.", "",
             "## Claims (paired t-interval, 95 %; Welch beside; Holm across all rows of this "
             "table, FWER 0.05)", "",
             "DiD = [R(method) − R(DPO)] in the heterogeneous world minus the same in the "
             f"control world `{res['control']}`: the part of a method's difference to DPO that "
             "needs the dispersion to vary. Δ = R(method) − R(DPO) in one world.", "",
             *sel.claims_table(an["claims"], an["holm"], "+.4f")]
    chosen = res["selection"]["chosen"]
    lines += ["", "## Expected true reward (mean ± 95 % t half-width over the reported seeds)", "",
              "| world | method | lr·β (edge?) | seeds | R | " +
              " | ".join(f"@KL {x:g}" for x in b) + " | R concentrated half | R dispersed half "
              "| CPU s (all seeds) |", "|---" * (8 + len(b)) + "|"]
    for kind, rows in an["rows"].items():
        for m, row in rows.items():
            ch = chosen[f"{kind} {m}"]
            lines.append(f"| {kind} | {m} | {ch['pick']:g} ({'edge' if ch['edge'] else 'interior'}"
                         f") | {row['seeds']} | {_fmt(row['primary'])} | " +
                         " | ".join(_fmt(row[f'kl{x:g}']) for x in b) +
                         f" | {_fmt(row['reward_concentrated'])} | {_fmt(row['reward_dispersed'])}"
                         f" | {row['cpu_s']:.1f} |")
    lines += ["", "## Learning-rate selection (tuning world seeds, never reported)", "",
              f"Rule: {res['selection']['selection_rule']}. Tuning seeds "
              f"{sp['tuning_seeds']}; grid widened geometrically while the pick sits at an edge "
              f"(at most {cfg['max_widen']} times).", "",
              "| world | method | grid: tuning R | pick | edge | widened | note |",
              "|---|---|---|---|---|---|---|"]
    for key, ch in chosen.items():
        kind, m = key.split(" ", 1)
        sc = ", ".join(f"{k}: {v['reward']:.4f}"
                       for k, v in sorted(ch["scores"].items(), key=lambda kv: float(kv[0])))
        vals = sorted(ch["scores"], key=float)
        i = vals.index(f"{ch['pick']:g}")
        nan_nb = [v for v in vals[max(0, i - 1):i + 2]
                  if not math.isfinite(ch["scores"][v]["reward"])]
        note = ch["reason"] + "".join(f"; lr·β {v} misses a KL budget (not eligible)"
                                      for v in nan_nb)
        lines.append(f"| {kind} | {m} | {sc} | {ch['pick']:g} | {ch['edge']} | {ch['widened']} | "
                     f"{note} |")
    lines += ["", f"CPU: {res['cpu_s_all_cells'] / 60:.1f} CPU-min over all cells (tuning and "
              f"reported; `time.process_time` per cell); peak RSS of this call's process "
              f"{res['peak_rss_mb_this_process']:.0f} MB.", ""]
    return "\n".join(lines)


def plot(out: Path, res: dict, per: dict) -> None:
    """Reward-vs-KL frontiers (seed means over β), one panel per world."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(per)
    fig, axes = plt.subplots(1, len(worlds), figsize=(4.2 * len(worlds), 3.6), dpi=100,
                             squeeze=False)
    for ax, kind in zip(axes[0], worlds):
        for m, cs in per[kind].items():
            n_b = len(cs[0]["points"])
            pts = [(float(np.mean([c["points"][i]["kl"] for c in cs])),
                    float(np.mean([c["points"][i]["reward"] for c in cs]))) for i in range(n_b)]
            ax.plot(*zip(*sorted(pts)), marker="o", ms=3, label=m)
        ax.set_title(kind + (" (control)" if kind == res["control"] else ""))
        ax.set_xlabel("KL(π ‖ π_ref)")
        ax.set_xlim(0, 2 * max(res["kl_budgets"]))
    axes[0][0].set_ylabel("expected true reward")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "frontier.png")
    plt.close(fig)


if __name__ == "__main__":
    torch.set_num_threads(1)  # single-threaded cells (in a test: the caller's setting)
    sys.exit(main())
