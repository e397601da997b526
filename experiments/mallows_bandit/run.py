"""MallowsPO's synthetic bandit: DPO vs Mallows-θ-DPO vs Mallows-φ-DPO, on worlds whose prompts
have equal or different preference dispersions [Chen+24 MallowsPO, §5 "synthetic bandit"; set-up
re-derived here, the paper's exact arm/prompt counts were not available].

    .venv/bin/python experiments/mallows_bandit/run.py            # ~5 CPU-min; cached cells
    .venv/bin/python experiments/mallows_bandit/run.py --quick --out /tmp/mb   # seconds

World: P prompts, K arms. Prompt x has a central ranking μ₀(x) (a random permutation) and a
dispersion φ(x). A label compares two random arms by their order in a ranking drawn from
Mallows(φ(x), Kendall τ) around μ₀(x). The true reward of an arm is its normalized central rank,
r = 1 − pos/(K − 1). Three worlds:

* ``homogeneous``: φ(x) = 0.5 for every prompt (MallowsPO has nothing to exploit: Mallows-θ with
  the true, mean-normalized c is exactly DPO here);
* ``two_group``: half the prompts concentrated (φ = 0.2), half dispersed (φ = 0.9);
* ``graded``: φ(x) evenly spread over [0.05, 0.95] (the dispersion-heterogeneous setting
  MallowsPO is about, with every level of noise).

Policy: tabular logits θ[x, a], π = softmax(θ), reference uniform, so the margin is h = θ_w − θ_l.
Each method minimizes its pairwise loss (``preference.losses.pairwise_loss``) by full-batch
gradient descent for a fixed budget (on finite data the DPO optimum is at infinity for a pair
always won the same way, so the budget is part of the method) with step size lr/β (the gradient of
every link is ∝ β, so lr/β makes the budget comparable across β; plain SGD, not Adam, whose
per-parameter normalization would undo the per-prompt weight c(x) on tabular parameters). The
learning rate is swept per method on a separate seed (``--tune-seed``) and picked by the mean
reward at the matched-KL budgets below; the evaluation seeds are disjoint from it.

Dispersion for the Mallows losses:
* ``true``: θ link: c(x) = −log φ(x) rescaled to mean 1 (a constant factor is a reparametrization of
  β); φ link: the generating φ(x) itself, c = −log φ(x), unscaled (the φ link's shape depends on φ);
* ``entropy``: the paper's entropy proxy c(x) = −λ log H̄(x), H̄(x) the mean normalized binary
  entropy of the empirical pairwise win rates of prompt x (the uniform reference has no entropy
  signal: this is our adaptation), with λ = "auto" (mean c = 1,
  ``mallows.auto_dispersion_scale``), for both links.

Metric: expected true reward E_x E_π[r] at matched KL(π ‖ π_ref) (linear interpolation of each
seed's reward-vs-KL frontier over β at ``--kl-budgets``); differences to DPO are paired by world
seed; 95 % Student-t intervals over the seeds. One JSON per (world, seed, method, lr) cell under
``cells/`` (a stopped run continues).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from scorealign.preference.losses import pairwise_loss
from scorealign.preference.mallows import auto_dispersion_scale, neg_log_dispersion, sample_mallows
from scorealign.preference.stats import mean_ci
from scorealign.rng import generator

HERE = Path(__file__).parent
WORLDS = {"homogeneous": lambda p: [0.5] * p,
          "two_group": lambda p: [(0.2, 0.9)[i % 2] for i in range(p)],
          "graded": lambda p: [0.05 + 0.9 * i / max(1, p - 1) for i in range(p)]}
METHODS = ("dpo", "mallows_theta[true]", "mallows_theta[entropy]", "mallows_phi[true]",
           "mallows_phi[entropy]")


def make_world(kind: str, p: int, k: int, n_pairs: int, seed: int) -> dict:
    """Central rankings, dispersions, and n_pairs Mallows-labelled comparisons per prompt."""
    g = generator(seed, "bandit-world", kind)
    phi = torch.tensor(WORLDS[kind](p), dtype=torch.float64)
    center = torch.stack([torch.randperm(k, generator=g) for _ in range(p)])  # center[x, pos] = arm
    pos = torch.argsort(center, dim=1)                                        # pos[x, arm]
    reward = 1.0 - pos.double() / (k - 1)
    xs, ws, ls = [], [], []
    for x in range(p):
        for _ in range(n_pairs):
            order = center[x][sample_mallows(k, -math.log(phi[x]), g)]  # a ranking of the arms
            a, b = torch.randperm(k, generator=g)[:2].tolist()
            rank = torch.argsort(order)
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


def run_cell(path: Path, kind: str, seed: int, method: str, lr: float, args) -> dict:
    """One (world, seed, method, lr) cell: the frontier over β; cached as JSON."""
    if path.is_file():
        return json.loads(path.read_text())
    world = make_world(kind, args.prompts, args.arms, args.pairs, seed)
    c = dispersions(world).get(method)
    pis = train_policies(world, method, args.betas, c, args.steps, lr)
    points = [{"beta": b, **evaluate(world, pi)} for b, pi in zip(args.betas, pis)]
    cell = {"world": kind, "seed": seed, "method": method, "lr": lr, "points": points}
    if c is not None:
        cell["corr_c_phi"] = float(torch.corrcoef(torch.stack([c, -world["phi"].log()]))[0, 1]) \
            if kind != "homogeneous" else None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell))
    tmp.replace(path)
    return cell


def at_kl(points: list[dict], budget: float, key: str = "reward") -> float:
    """``key`` interpolated at KL = budget along the frontier (nan outside its KL range)."""
    pts = sorted((p["kl"], p[key]) for p in points)
    for (k0, r0), (k1, r1) in zip(pts, pts[1:]):
        if k0 <= budget <= k1:
            return r0 if k1 == k0 else r0 + (r1 - r0) * (budget - k0) / (k1 - k0)
    return float("nan")


def score(cell: dict, budgets: list[float]) -> tuple[int, float]:
    """The lr-selection criterion: (budgets the frontier reaches, mean reward over those)."""
    vals = [at_kl(cell["points"], b) for b in budgets]
    vals = [v for v in vals if not math.isnan(v)]
    return len(vals), (sum(vals) / len(vals) if vals else -math.inf)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--arms", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=40, help="labelled pairs per prompt")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tune-seed", type=int, default=100, help="world seed of the lr sweep")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lrs", default="0.2,0.5", help="step size × β, swept per method")
    ap.add_argument("--betas", default="0.05,0.1,0.2,0.5,1,2,5")
    ap.add_argument("--kl-budgets", default="0.1,0.25,0.5")
    ap.add_argument("--worlds", default=",".join(WORLDS))
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test)")
    ap.add_argument("--worker", default=None, help="i/W: compute every W-th cell from i (lr "
                    "sweep first, then the seeds) and exit; a plain run then aggregates")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.arms, args.pairs, args.seeds, args.steps = 4, 4, 12, 2, 30
        args.lrs, args.betas, args.kl_budgets = "0.5,1", "0.1,1,5", "0.05,0.1"
        args.worlds = "graded"
    args.betas = [float(b) for b in args.betas.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    budgets = [float(v) for v in args.kl_budgets.split(",")]
    out = Path(args.out)
    cells = out / "cells"
    results: dict = {"args": {k: v for k, v in vars(args).items()
                              if k not in ("out", "worker")}, "worlds": {}}
    if args.worker:
        i, n_workers = (int(v) for v in args.worker.split("/"))
        tune = [(kind, m, lr) for kind in args.worlds.split(",") for m in METHODS for lr in lrs]
        for kind, m, lr in tune[i::n_workers]:
            run_cell(cells / f"{kind}-tune{args.tune_seed}-{_slug(m)}-lr{lr:g}.json", kind,
                     args.tune_seed, m, lr, args)
        evals = [(kind, m, s) for kind in args.worlds.split(",") for s in range(args.seeds)
                 for m in METHODS]
        for kind, m, s in evals[i::n_workers]:
            lr = max(lrs, key=lambda v: _tune_score(cells, kind, m, v, args, budgets, wait=True))
            run_cell(cells / f"{kind}-s{s}-{_slug(m)}-lr{lr:g}.json", kind, s, m, lr, args)
        return
    for kind in args.worlds.split(","):
        chosen = {}
        for method in METHODS:  # lr sweep on the tuning seed
            scores = {lr: score(run_cell(cells / f"{kind}-tune{args.tune_seed}-{_slug(method)}"
                                         f"-lr{lr:g}.json", kind, args.tune_seed, method, lr,
                                         args), budgets) for lr in lrs}
            chosen[method] = max(scores, key=scores.get)
        per = {m: [run_cell(cells / f"{kind}-s{s}-{_slug(m)}-lr{chosen[m]:g}.json", kind, s, m,
                            chosen[m], args) for s in range(args.seeds)] for m in METHODS}
        results["worlds"][kind] = summarize(per, chosen, budgets)
        print(f"{kind}: lr picked {chosen}", flush=True)
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table(results, budgets))
    plot(out, results, cells, args)
    print(table(results, budgets))


def _tune_score(cells: Path, kind: str, m: str, lr: float, args, budgets: list[float],
                wait: bool = False) -> tuple[int, float]:
    """The lr-sweep score of a tuning cell (waits for another worker to write it if asked)."""
    import time

    path = cells / f"{kind}-tune{args.tune_seed}-{_slug(m)}-lr{lr:g}.json"
    while wait and not path.is_file():
        time.sleep(5)
    return score(run_cell(path, kind, args.tune_seed, m, lr, args), budgets)


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s).strip("_")


def summarize(per: dict, chosen: dict, budgets: list[float]) -> dict:
    """Per method: reward at each KL budget (mean, 95 % half-width), and paired Δ vs DPO."""
    out = {}
    dpo = per["dpo"]
    for m, cells in per.items():
        row: dict = {"lr": chosen[m]}
        for b in budgets:
            r = [at_kl(c["points"], b) for c in cells]
            d = [x - at_kl(c0["points"], b) for x, c0 in zip(r, dpo)]
            rc = [at_kl(c["points"], b, "reward_concentrated") for c in cells]
            rd = [at_kl(c["points"], b, "reward_dispersed") for c in cells]
            row[f"kl{b:g}"] = {"reward": _ci(r), "delta_vs_dpo": _ci(d),
                               "reward_concentrated": _ci(rc), "reward_dispersed": _ci(rd)}
        corr = [c.get("corr_c_phi") for c in cells if c.get("corr_c_phi") is not None]
        if corr:
            row["corr_c_vs_true"] = _ci(corr)
        out[m] = row
    return out


def _ci(vals: list[float]) -> dict:
    ok = [v for v in vals if not math.isnan(v)]
    if not ok:
        return {"mean": None, "ci95": None, "n": 0}
    m, h = mean_ci(ok)
    return {"mean": m, "ci95": None if math.isnan(h) else h, "n": len(ok)}


def table(results: dict, budgets: list[float]) -> str:
    """Markdown: per world, reward at matched KL and its paired difference to DPO."""
    lines = [f"Expected true reward at matched KL(π ‖ π_ref) ∈ {budgets}; mean ± 95 % half-width "
             f"over {results['args']['seeds']} world seeds; Δ = method − DPO, paired by seed. "
             "(n < seeds: the frontier of some seeds does not reach that KL.)", ""]
    for kind, rows in results["worlds"].items():
        lines += [f"### {kind}", "", "| method | lr·β | " + " | ".join(
            f"reward @KL {b:g} | Δ vs DPO @KL {b:g}" for b in budgets) + " |",
            "|---" * (2 + 2 * len(budgets)) + "|"]
        for m, row in rows.items():
            cells = []
            for b in budgets:
                r = row[f"kl{b:g}"]
                cells += [_fmt(r["reward"]),
                          _fmt(r["delta_vs_dpo"], signed=True) if m != "dpo" else "—"]
            lines.append(f"| {m} | {row['lr']:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt(c: dict, signed: bool = False) -> str:
    if c["mean"] is None:
        return "n/a"
    h = "?" if c["ci95"] is None else f"{c['ci95']:.3f}"
    return f"{c['mean']:{'+' if signed else ''}.3f} ± {h} (n={c['n']})"


def plot(out: Path, results: dict, cells: Path, args) -> None:
    """Reward-vs-KL frontiers (seed means over β), one panel per world."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(results["worlds"])
    fig, axes = plt.subplots(1, len(worlds), figsize=(4.2 * len(worlds), 3.6), dpi=100,
                             squeeze=False)
    for ax, kind in zip(axes[0], worlds):
        for m, row in results["worlds"][kind].items():
            cs = [json.loads((cells / f"{kind}-s{s}-{_slug(m)}-lr{row['lr']:g}.json").read_text())
                  for s in range(args.seeds)]
            pts = [(sum(c["points"][i]["kl"] for c in cs) / len(cs),
                    sum(c["points"][i]["reward"] for c in cs) / len(cs))
                   for i in range(len(args.betas))]
            ax.plot(*zip(*sorted(pts)), marker="o", ms=3, label=m)
        ax.set_title(kind)
        ax.set_xlabel("KL(π ‖ π_ref)")
    axes[0][0].set_ylabel("expected true reward")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "frontier.png")
    plt.close(fig)


if __name__ == "__main__":
    torch.set_num_threads(1)  # single-threaded cells (in a test: the caller's setting)
    main()
