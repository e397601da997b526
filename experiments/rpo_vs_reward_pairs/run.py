"""RPO pairs vs reward-labelled pairs from the same prompts, as alignment-vs-FD curves over
Diffusion-DPO training (digits) [Zhao+25 RPO, arXiv:2503.11720; Wallace+23, Eq. 14].

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/rpo_vs_reward_pairs/run.py
    .venv/bin/python experiments/rpo_vs_reward_pairs/run.py --quick --out /tmp/rpo   # the test

Full run: ~8 CPU-minutes single-threaded; one JSON per cell under ``cells/`` (a stopped run
continues where it stopped; ``--summary-only`` re-tabulates the cached cells).

Per seed (prompts, samples, edits, DPO noise and data order all derive from it):

1. N prompts (balanced digits); two samples A, B per prompt from the base model at the sampling
   guidance G (``--guidance``, 1.0: plain conditional sampling, the deployment setting).
2. RPO arm: critique every A (project classifier seed 0 + image statistics), turn findings into
   edit instructions, edit with SDEdit **at the same guidance G** (the old set-up edited at 3 while
   sampling at 1, so the pairs differed by guidance rather than by the fix) or image operations,
   keep the verified fixes: edited(A) ≻ A. The verifier re-critiques with the same critic, or
   (variant ``verifier``, RPO arm) with a classifier of another training seed (2).
3. Reward arm: for the same prompts the RPO arm kept, A vs B, the higher classifier (seed 0)
   log-prob of the prompted digit wins. Both arms are cut to the prompts both have, so they have
   the same prompts and the same number of pairs.
4. Diffusion-DPO (sigmoid, β = 5000, T ω = ½ of ``configs/dpo/digits_rpo.yaml``, the authors'
   values) on each arm with the same seed; every ``eval_every`` steps the policy is judged by a
   held-out classifier (seed 1: prompt accuracy, p(prompted digit)) and by the Fréchet distance
   of its features to real test digits, on one fixed evaluation set (prompts and sampling seed).
   Variants ``sft`` / ``sft_matched`` (RPO arm) add w × the denoising loss on the chosen images
   (``loss.sft_weight``), w = 0.5 and w = 1250 (= β·s·σ(0), the DPO term's own gradient on
   the chosen error at the start). The options are compared, paired by seed, with the default
   RPO arm.

Learning rate: swept per arm on a separate seed (``sweep_seed``, variant ``default``); the rule
picks the lr with the highest final prompt accuracy whose final FD stays within 1.5× the base
model's, the lowest lr if none does. The picked lr serves every variant and seed of that arm.

Pair building is shared: A, B and the step-0 evaluation are computed once per seed (the base
evaluation once in all), the two verifiers' datasets once per seed for all variants.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

FULL = dict(prompts=80, steps=40, batch=8, eval_every=20, eval_samples=100, gen_steps=8,
            seeds=5, lrs=(3e-6, 1e-5), sweep_seed=100)
QUICK = dict(prompts=20, steps=2, batch=4, eval_every=1, eval_samples=10, gen_steps=2,
             seeds=2, lrs=(1e-6, 1e-4), sweep_seed=100)
# The options change the RPO arm; they are compared with the default RPO arm of the same seed.
VARIANTS = {"default": dict(verifier="same", sft=0.0, arms=("rpo", "reward")),
            "verifier": dict(verifier="independent", sft=0.0, arms=("rpo",)),
            "sft": dict(verifier="same", sft=0.5, arms=("rpo",)),
            # at policy = reference d(loss)/d(chosen error) = β·s·σ(0) = 5000·½·½ = 1250: this
            # weight gives the SFT term the DPO term's pull on the chosen images
            "sft_matched": dict(verifier="same", sft=1250.0, arms=("rpo",))}
ARMS = ("rpo", "reward")
KEYS = ("eval/accuracy", "eval/label_prob", "eval/fd", "eval/diversity", "eval/flagged")
FD_LIMIT = 1.5  # lr rule: final FD at most this × the base model's


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def draw(args, seed: int, base, budget: dict) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The seed's prompts and two base samples A, B per prompt (shared by every verifier)."""
    from scorealign.data.digits import prompt_for
    from scorealign.preference.rpo.base import generate, hash_seed

    prompts = [prompt_for(i % 10) for i in range(budget["prompts"])]
    gen = dict(steps=budget["gen_steps"], guidance=args.guidance)
    a = generate(base, base.model, prompts, seed=hash_seed(seed, "a"), **gen)
    b = generate(base, base.model, prompts, seed=hash_seed(seed, "b"), **gen)
    return prompts, a, b


def build_arms(args, seed: int, verifier: str, drawn: tuple, base, budget: dict,
               work: Path) -> dict:
    """RPO and reward pair datasets for the same prompts (module docstring), one verifier."""
    from scorealign.rewards import build_reward
    from scorealign.preference.rpo.build import write_dataset
    from scorealign.preference.rpo.digits_critic import DigitsCritic
    from scorealign.preference.rpo.editors import digits_editor
    from scorealign.preference.rpo.instructions import DigitsInstructionExtractor
    from scorealign.preference.rpo.pipeline import build_reward_pairs, build_rpo_pairs
    from scorealign.preference.rpo.verifier import CritiqueVerifier

    size = base.task.model_cfg.sample_size
    prompts, a, b = drawn
    critic = DigitsCritic.calibrated(size=size, classifier_seed=0)
    reward = build_reward({"name": "digit_alignment", "seed": 0, "size": size})
    check = critic if verifier == "same" else DigitsCritic.calibrated(
        size=size, classifier_seed=2)
    editor = digits_editor(base, steps=budget["gen_steps"], guidance=args.guidance,
                           seed=seed)
    rpo, rpo_stats = build_rpo_pairs(a, prompts, critic,
                                     DigitsInstructionExtractor(0.6, 0.35), editor,
                                     CritiqueVerifier(check), attempts=2)
    idx = [p.meta["index"] for p in rpo]
    rw, _ = build_reward_pairs(a[idx], b[idx], [prompts[i] for i in idx], reward)
    # Same prompts in both arms: drop RPO pairs whose reward pair was a tie.
    by_prompt: dict[str, list] = {}
    for p in rw:
        by_prompt.setdefault(p.prompt, []).append(p)
    rpo_kept, rw_kept = [], []
    for p, i in zip(rpo, idx):
        match = [q for q in by_prompt.get(p.prompt, [])
                 if torch.equal(q.chosen, a[i]) or torch.equal(q.rejected, a[i])]
        if match:
            rpo_kept.append(p)
            rw_kept.append(match[0])
    info = {"prompts": len(prompts), "verifier": verifier,
            "rpo_build": rpo_stats.to_dict(), "pairs": len(rpo_kept)}
    tag = f"s{seed}_{verifier}"
    return {
        "rpo": str(write_dataset(work / f"pairs_rpo_{tag}", rpo_kept, {"stats": info},
                                 overwrite=True)),
        "reward": str(write_dataset(work / f"pairs_reward_{tag}", rw_kept, {"stats": info},
                                    overwrite=True)),
        "info": info}


def eval_config(args, budget: dict):
    from scorealign.preference.rpo.config import DiffusionEvalConfig, GenerationConfig

    return DiffusionEvalConfig(num_samples=budget["eval_samples"], judge_seed=1, seed=1234,
                               generation=GenerationConfig(steps=budget["gen_steps"],
                                                           guidance=args.guidance))


def curve(args, seed: int, name: str, data: str, lr: float, sft: float, base, budget: dict,
          work: Path) -> list[dict]:
    """Diffusion-DPO on one arm's pairs; judged every eval_every steps (step 0 is the base)."""
    from scorealign.config import config_from_dict, load_config
    from scorealign.preference.rpo.config import DiffusionDPOConfig
    from scorealign.preference.diffusion_dpo import train
    from scorealign.preference.rpo.evaluate import evaluate_policy
    from scorealign.run.rundir import RunDir

    shipped = load_config(ROOT / "configs/dpo/digits_rpo.yaml", DiffusionDPOConfig,
                          [f"data.path={data}"])
    cfg = config_from_dict({
        "task": "diffusion", "device": "cpu", "base": {"path": args.base},
        "data": {"path": data},
        "loss": {"link": "sigmoid", "beta": shipped.loss.beta, "scale": shipped.loss.scale,
                 "sft_weight": sft},
        "train": {"steps": budget["steps"], "batch_size": budget["batch"], "lr": lr,
                  "log_every": budget["eval_every"], "ckpt_every": budget["steps"],
                  "seed": seed, "progress": False},
        "eval": {"enabled": False}}, DiffusionDPOConfig)
    run_path = work / f"dpo_{name}"
    shutil.rmtree(run_path, ignore_errors=True)
    run = RunDir.create(run_path, cfg)
    ev = eval_config(args, budget)
    judged: dict[int, dict] = {}

    def judge(step: int, policy) -> None:  # evaluation along training, same weights as a ckpt
        if step % budget["eval_every"] == 0:
            judged[step], _ = evaluate_policy(base, policy, ev)

    train(cfg, run, base=base, callback=judge, export_final=False)
    logged = {r["step"]: r for r in run.read_metrics()}
    points = []
    for step, m in sorted(judged.items()):
        train_m = {k: logged[step][k] for k in ("loss", "rewards/accuracy", "rewards/margin")
                   if step in logged and k in logged[step]}
        points.append({"step": step, **{k: m[k] for k in KEYS}, **train_m})
    shutil.rmtree(run_path, ignore_errors=True)
    return points


def pick_lr(cells: list[dict], base_fd: float) -> float:
    """The swept lr with the highest final accuracy whose final FD ≤ FD_LIMIT × base FD."""
    ok = [c for c in cells if c["points"][-1]["eval/fd"] <= FD_LIMIT * base_fd]
    if not ok:
        return min(c["lr"] for c in cells)
    return max(ok, key=lambda c: (c["points"][-1]["eval/accuracy"], -c["lr"]))["lr"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--base", type=str, default=None)
    ap.add_argument("--guidance", type=float, default=1.0, help="sampling = editing guidance")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants")
    ap.add_argument("--summary-only", action="store_true", help="tabulate the cached cells")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "rpo_vs_reward_pairs")
    args = ap.parse_args(argv)
    budget = dict(QUICK if args.quick else FULL)
    if args.seeds:
        budget["seeds"] = args.seeds
    variants = [v for v in args.variants.split(",") if v]
    if unknown := [v for v in variants if v not in VARIANTS]:
        ap.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    from scorealign.preference.rpo.base import load_base
    from scorealign.preference.rpo.config import DEFAULT_BASE

    args.base = args.base or DEFAULT_BASE
    q = "quick-" if args.quick else ""
    prefix = f"{q}g{args.guidance:g}"
    cells = args.out / "cells"
    work = args.work / prefix
    if not args.summary_only:
        run_cells(args, budget, variants, prefix, cells, work, load_base(args.base))
    summary = summarize(cells, prefix, budget, variants)
    suffix = "_quick" if args.quick else ""
    _write(args.out / f"results{suffix}.json", summary)
    (args.out / f"results{suffix}.md").write_text(table(summary))
    plot(summary, args.out / f"frontier{suffix}.png")
    print(table(summary))


def run_cells(args, budget: dict, variants: list[str], prefix: str, cells: Path, work: Path,
              base) -> None:
    """Every missing cell: base evaluation, lr sweep (per arm), then variants × seeds × arms."""
    from scorealign.preference.rpo.evaluate import evaluate_policy

    base_cell = cells / f"{prefix}-base.json"
    if not base_cell.is_file():
        t0 = time.process_time()
        m, _ = evaluate_policy(base, base.model, eval_config(args, budget))
        _write(base_cell, {"step": 0, **{k: m[k] for k in KEYS}, "budget": budget,
                           "cpu_s": time.process_time() - t0})
    cached = json.loads(base_cell.read_text())
    if cached.get("budget") != json.loads(json.dumps(budget)):
        raise SystemExit(f"{cells}: cells of another budget ({cached.get('budget')}); "
                         f"move them away or pass --out elsewhere")
    base_fd = cached["eval/fd"]
    drawn: dict[int, tuple] = {}
    built: dict[tuple[int, str], dict] = {}

    def arms(seed: int, verifier: str) -> dict:
        """The seed's pair datasets for ``verifier``; reused from ``work`` when sealed there
        (written last, after both datasets' manifests), so a restarted run does not rebuild."""
        index = work / f"pairs_s{seed}_{verifier}.json"
        if (seed, verifier) not in built and index.is_file():
            built[(seed, verifier)] = json.loads(index.read_text())
        if (seed, verifier) not in built:
            t0 = time.process_time()
            if seed not in drawn:
                drawn[seed] = draw(args, seed, base, budget)
            out = build_arms(args, seed, verifier, drawn[seed], base, budget, work)
            out["info"]["cpu_s"] = time.process_time() - t0
            _write(index, out)
            built[(seed, verifier)] = out
        return built[(seed, verifier)]

    def cell(path: Path, seed: int, arm: str, variant: str, lr: float) -> dict:
        if path.is_file():
            return json.loads(path.read_text())
        opts = VARIANTS[variant]
        pairs = arms(seed, opts["verifier"])
        if pairs["info"]["pairs"] < 2:
            raise SystemExit(f"seed {seed}: only {pairs['info']['pairs']} pairs; more prompts")
        t0 = time.process_time()
        pts = curve(args, seed, path.stem, pairs[arm], lr, opts["sft"], base, budget, work)
        out = {"seed": seed, "arm": arm, "variant": variant, "lr": lr, "build": pairs["info"],
               "budget": budget, "points": pts, "cpu_s": time.process_time() - t0}
        _write(path, out)
        print(f"{path.stem}: " + ", ".join(
            f"step {p['step']}: acc {p['eval/accuracy']:.3f} FD {p['eval/fd']:.1f}"
            for p in pts) + f" ({out['cpu_s']:.0f} CPU-s)", flush=True)
        return out

    lr_of = {}
    s = budget["sweep_seed"]
    for arm in ARMS:
        swept = [cell(cells / f"{prefix}-sweep-lr{lr:g}-s{s}-{arm}.json", s, arm, "default", lr)
                 for lr in budget["lrs"]]
        lr_of[arm] = pick_lr(swept, base_fd)
    for seed in range(budget["seeds"]):
        for variant in variants:
            for arm in VARIANTS[variant]["arms"]:
                cell(cells / f"{prefix}-{variant}-s{seed}-{arm}.json", seed, arm, variant,
                     lr_of[arm])


def summarize(cells: Path, prefix: str, budget: dict, variants: list[str]) -> dict:
    """Per variant, arm and step: mean and 95 % half-width over seeds, per-seed rows, and the
    paired (same seed, same prompts) difference RPO − reward."""
    from scorealign.preference.stats import mean_ci

    def ci(vals: list[float]) -> dict:
        m, h = mean_ci(vals)
        return {"mean": m, "ci95": None if math.isnan(h) else h}

    base_path = cells / f"{prefix}-base.json"
    if not base_path.is_file():
        return {"prefix": prefix, "budget": budget, "variants": {}, "sweep": {}}
    base = json.loads(base_path.read_text())
    load = lambda p: json.loads(p.read_text())  # noqa: E731
    sweep = {arm: [load(p) for p in sorted(cells.glob(f"{prefix}-sweep-lr*-{arm}.json"))]
             for arm in ARMS}
    out: dict = {"prefix": prefix, "budget": budget, "base": base, "fd_limit": FD_LIMIT,
                 "sweep": {arm: [{"lr": c["lr"], "points": [base] + c["points"]} for c in cs]
                           for arm, cs in sweep.items()},
                 "picked_lr": {arm: pick_lr(cs, base["eval/fd"]) for arm, cs in sweep.items()
                               if cs},
                 "variants": {}}
    cpu = [base["cpu_s"]] + [c["cpu_s"] for cs in sweep.values() for c in cs]
    runs = {(variant, arm): {c["seed"]: c for c in map(load, cells.glob(
        f"{prefix}-{variant}-s*-{arm}.json"))} for variant in variants
        for arm in VARIANTS[variant]["arms"]}
    cpu += [c["cpu_s"] for r in runs.values() for c in r.values()]
    for variant in variants:
        arms = VARIANTS[variant]["arms"]
        # paired by seed: RPO − reward (default); RPO with the option − default RPO (options)
        other = ("default", "reward") if variant == "default" else ("default", "rpo")
        have = [runs[(variant, arm)] for arm in arms] + [runs.get(other, {})]
        seeds = sorted(set.intersection(*(set(r) for r in have)))
        if not seeds:
            continue
        v: dict = {"seeds": seeds, "compared_with": "/".join(other),
                   "pairs": [runs[(variant, "rpo")][s]["build"]["pairs"] for s in seeds],
                   "lr": {arm: runs[(variant, arm)][seeds[0]]["lr"] for arm in arms},
                   "arms": {}, "per_seed": [], "paired": []}
        for arm in arms:
            curves = [[base] + runs[(variant, arm)][s]["points"] for s in seeds]
            v["arms"][arm] = [{"step": pts[0]["step"], "n": len(seeds),
                               **{k: ci([c[i][k] for c in curves]) for k in KEYS}}
                              for i, pts in enumerate(zip(*curves))]
            for s, c in zip(seeds, curves):
                v["per_seed"] += [{"arm": arm, "seed": s, "step": p["step"],
                                   **{k: p[k] for k in KEYS}} for p in c[1:]]
        mine, ref = runs[(variant, "rpo")], runs[other]
        for i, p in enumerate(mine[seeds[0]]["points"]):
            d = {k: ci([mine[s]["points"][i][k] - ref[s]["points"][i][k] for s in seeds])
                 for k in ("eval/accuracy", "eval/fd", "eval/flagged")}
            v["paired"].append({"step": p["step"], **d})
        out["variants"][variant] = v
    out["cpu_minutes"] = sum(cpu) / 60
    return out


def table(summary: dict) -> str:
    """Markdown: alignment and FD per variant, arm and step (mean ± 95 % half-width)."""
    def f(c: dict, d: int = 3) -> str:
        h = "?" if c["ci95"] is None else f"{c['ci95']:.{d}f}"
        return f"{c['mean']:.{d}f} ± {h}"

    b = summary.get("base")
    lines = [f"Set-up: {summary['prefix']}; budget: {summary['budget']}; CPU: "
             f"{summary.get('cpu_minutes', 0):.1f} min in the cells.", ""]
    if b:
        lines += [f"Base model (step 0, every curve): accuracy {b['eval/accuracy']:.3f}, "
                  f"FD {b['eval/fd']:.2f}.", ""]
    if summary.get("sweep"):
        lines += ["lr sweep (seed " + str(summary["budget"]["sweep_seed"]) + ", final step): "
                  + "; ".join(f"{arm} lr {c['lr']:g}: acc "
                              f"{c['points'][-1]['eval/accuracy']:.3f} FD "
                              f"{c['points'][-1]['eval/fd']:.2f}"
                              for arm, cs in summary["sweep"].items() for c in cs),
                  f"Picked (highest final accuracy with FD ≤ {FD_LIMIT} × base): "
                  f"{summary.get('picked_lr')}.", ""]
    for variant, v in summary["variants"].items():
        lines += [f"### {variant} (seeds {v['seeds']}, pairs per seed {v['pairs']}, "
                  f"lr {v['lr']})", "",
                  "| arm | step | prompt accuracy ↑ | p(prompted digit) ↑ | FD to real ↓ | "
                  "critic: any finding ↓ |", "|---|---|---|---|---|---|"]
        for arm, rows in v["arms"].items():
            for r in rows:
                lines.append(f"| {arm} | {r['step']} | {f(r['eval/accuracy'])} | "
                             f"{f(r['eval/label_prob'])} | {f(r['eval/fd'], 2)} | "
                             f"{f(r['eval/flagged'])} |")
        lines += ["", f"Paired by seed, {variant} RPO − {v['compared_with']}:", "",
                  "| step | Δ accuracy | Δ FD | Δ critic finding rate |", "|---|---|---|---|"]
        lines += [f"| {p['step']} | {f(p['eval/accuracy'])} | {f(p['eval/fd'], 2)} | "
                  f"{f(p['eval/flagged'])} |" for p in v["paired"]]
        lines += ["", "Per seed:", "", "| arm | seed | step | accuracy | FD |", "|---|---|---|---|---|"]
        lines += [f"| {r['arm']} | {r['seed']} | {r['step']} | {r['eval/accuracy']:.3f} | "
                  f"{r['eval/fd']:.2f} |" for r in v["per_seed"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Alignment (judge accuracy) against FD over training steps: every (variant, arm) curve with
    95 % intervals on both axes, and the lr sweep beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, sw) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    for variant, v in summary["variants"].items():
        for arm, rows in v["arms"].items():
            xs = [r["eval/fd"]["mean"] for r in rows]
            ys = [r["eval/accuracy"]["mean"] for r in rows]
            ax.errorbar(xs, ys, xerr=[r["eval/fd"]["ci95"] or 0 for r in rows],
                        yerr=[r["eval/accuracy"]["ci95"] or 0 for r in rows], marker="o", ms=3,
                        capsize=2, ls="-" if arm == "rpo" else "--",
                        label=f"{arm} pairs, {variant} (lr {v['lr'][arm]:g}, "
                              f"{len(v['seeds'])} seeds)")
            for r, x, y in zip(rows, xs, ys):
                ax.annotate(str(r["step"]), (x, y), fontsize=6)
    ax.set_title("alignment vs FD over Diffusion-DPO steps (labels: step)", fontsize=9)
    ax.set_xlabel("FD to real digits (judge features) ↓")
    ax.set_ylabel("prompt accuracy (held-out judge) ↑")
    ax.legend(fontsize=6)
    for arm, cs in summary.get("sweep", {}).items():
        for c in cs:
            sw.plot([p["eval/fd"] for p in c["points"]],
                    [p["eval/accuracy"] for p in c["points"]], marker=".",
                    ls="-" if arm == "rpo" else "--", label=f"{arm} lr {c['lr']:g}")
    sw.set_title(f"lr sweep (seed {summary['budget']['sweep_seed']})", fontsize=9)
    sw.set_xlabel("FD to real digits ↓")
    sw.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
