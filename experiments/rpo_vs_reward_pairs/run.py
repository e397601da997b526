"""RPO pairs vs reward-labelled pairs from the same prompts, as alignment-vs-FD curves over
Diffusion-DPO training (digits) [Zhao+25 RPO, arXiv:2503.11720; Wallace+23, Eq. 14].

    OMP_NUM_THREADS=1 .venv/bin/python experiments/rpo_vs_reward_pairs/run.py   # ~2 CPU-h
    .venv/bin/python experiments/rpo_vs_reward_pairs/run.py --quick --out /tmp/rpo   # the test
    options: --seeds 5 --verifier independent --sft-weight 0.5 --base PATH

Per seed (prompts, samples, edits, DPO noise and data order all derive from it):

1. N prompts (balanced digits); two samples A, B per prompt from the base model at the sampling
   guidance G (``--guidance``, 1.0: plain conditional sampling, the deployment setting).
2. RPO arm: critique every A (project classifier seed 0 + image statistics), turn findings into
   edit instructions, edit with SDEdit **at the same guidance G** (the old set-up edited at 3 while
   sampling at 1, so the pairs differed by guidance rather than by the fix) or image operations,
   keep the verified fixes: edited(A) ≻ A. The verifier re-critiques with the same critic, or
   (``--verifier independent``) with a classifier of another training seed (2).
3. Reward arm: for the same prompts the RPO arm kept, A vs B, the higher classifier (seed 0)
   log-prob of the prompted digit wins. Both arms are cut to the prompts both have, so they have
   the same prompts and the same number of pairs.
4. Diffusion-DPO (sigmoid, β = 5000, the authors' value; lr and batch of
   ``configs/dpo/digits_rpo.yaml``) on each arm with the same seed; every ``--eval-every`` steps
   the policy is judged by a held-out classifier (seed 1: prompt accuracy, p(prompted digit)) and
   by the Fréchet distance of its samples to real test digits, on the same prompts and seeds.
   ``--sft-weight w`` adds w × the denoising loss on the chosen images (``loss.sft_weight``).

The comparison is the frontier: alignment against FD over training steps, both arms, mean and 95 %
Student-t intervals over the seeds. One JSON per (seed, arm, options) cell under ``cells/``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

FULL = dict(prompts=600, steps=150, batch=32, eval_every=25, eval_samples=500, gen_steps=25,
            seeds=5)
QUICK = dict(prompts=30, steps=4, batch=4, eval_every=2, eval_samples=20, gen_steps=4, seeds=2)
KEYS = ("eval/accuracy", "eval/label_prob", "eval/fd", "eval/diversity", "eval/flagged")


def build_arms(args, seed: int, base, budget: dict, work: Path) -> tuple[Path, Path, dict]:
    """RPO and reward pair datasets for the same prompts (see the module docstring)."""
    from scorealign.data.digits import prompt_for
    from scorealign.rewards import build_reward
    from scorealign.rpo.base import generate, hash_seed
    from scorealign.rpo.build import write_dataset
    from scorealign.rpo.digits_critic import DigitsCritic
    from scorealign.rpo.editors import digits_editor
    from scorealign.rpo.instructions import DigitsInstructionExtractor
    from scorealign.rpo.pipeline import build_reward_pairs, build_rpo_pairs
    from scorealign.rpo.verifier import CritiqueVerifier

    size = base.task.model_cfg.sample_size
    prompts = [prompt_for(i % 10) for i in range(budget["prompts"])]
    gen = dict(steps=budget["gen_steps"], guidance=args.guidance)
    a = generate(base, base.model, prompts, seed=hash_seed(seed, "a"), **gen)
    b = generate(base, base.model, prompts, seed=hash_seed(seed, "b"), **gen)
    critic = DigitsCritic.calibrated(size=size, classifier_seed=0)
    verifier_critic = critic if args.verifier == "same" else DigitsCritic.calibrated(
        size=size, classifier_seed=2)
    editor = digits_editor(base, steps=budget["gen_steps"], guidance=args.guidance, seed=seed)
    rpo, rpo_stats = build_rpo_pairs(a, prompts, critic, DigitsInstructionExtractor(0.6, 0.35),
                                     editor, CritiqueVerifier(verifier_critic), attempts=2)
    idx = [p.meta["index"] for p in rpo]
    reward = build_reward({"name": "digit_alignment", "seed": 0, "size": size})
    rw, _ = build_reward_pairs(a[idx], b[idx], [prompts[i] for i in idx], reward)
    # Same prompts in both arms: drop RPO pairs whose reward pair was a tie.
    rw_by_img = {}
    for p in rw:
        rw_by_img.setdefault(p.prompt, []).append(p)
    rpo_kept, rw_kept = [], []
    for p, i in zip(rpo, idx):
        match = [q for q in rw_by_img.get(p.prompt, [])
                 if torch.equal(q.chosen, a[i]) or torch.equal(q.rejected, a[i])]
        if match:
            rpo_kept.append(p)
            rw_kept.append(match[0])
    info = {"prompts": len(prompts), "rpo_build": rpo_stats.to_dict(), "pairs": len(rpo_kept)}
    d_rpo = write_dataset(work / f"pairs_rpo_s{seed}", rpo_kept, {"stats": info}, overwrite=True)
    d_rw = write_dataset(work / f"pairs_reward_s{seed}", rw_kept, {"stats": info}, overwrite=True)
    return d_rpo, d_rw, info


def curve(args, seed: int, arm: str, data: Path, base_path: str, budget: dict,
          work: Path) -> list[dict]:
    """Diffusion-DPO on one arm; judged at step 0 and every eval_every steps."""
    from scorealign.config import config_from_dict, load_config
    from scorealign.rpo.base import load_base
    from scorealign.rpo.config import DiffusionDPOConfig, DiffusionEvalConfig, GenerationConfig
    from scorealign.rpo.dpo_train import build_policy, train
    from scorealign.rpo.evaluate import evaluate_policy
    from scorealign.train.checkpoint import load_checkpoint
    from scorealign.train.rundir import RunDir

    shipped = load_config(ROOT / "configs/dpo/digits_rpo.yaml", DiffusionDPOConfig,
                          [f"data.path={data}"])
    cfg = config_from_dict({
        "task": "diffusion", "device": "cpu", "base": {"path": base_path},
        "data": {"path": str(data)},
        "loss": {"link": "sigmoid", "beta": shipped.loss.beta, "scale": shipped.loss.scale,
                 "sft_weight": args.sft_weight},
        "train": {"steps": budget["steps"], "batch_size": budget["batch"], "lr": shipped.train.lr,
                  "log_every": budget["eval_every"], "ckpt_every": budget["eval_every"],
                  "keep_checkpoints": 1000, "seed": seed, "progress": False},
        "eval": {"enabled": False}}, DiffusionDPOConfig)
    run_path = work / f"dpo_{arm}_s{seed}"
    shutil.rmtree(run_path, ignore_errors=True)
    run = RunDir.create(run_path, cfg)
    base = load_base(base_path)
    train(cfg, run, base=base)
    ev = DiffusionEvalConfig(num_samples=budget["eval_samples"], judge_seed=1, seed=1234,
                             generation=GenerationConfig(steps=budget["gen_steps"],
                                                         guidance=args.guidance))
    logged = {r["step"]: r for r in run.read_metrics()}
    points = []
    for step in range(0, budget["steps"] + 1, budget["eval_every"]):
        policy, _, _ = build_policy(cfg, base)
        if step:
            states, _ = load_checkpoint(run.checkpoints / f"step_{step:06d}")
            policy.load_state_dict(states["model"])
        m, _ = evaluate_policy(base, policy, ev)
        train_m = {k: logged[step][k] for k in ("loss", "rewards/accuracy", "rewards/margin")
                   if step in logged and k in logged[step]}
        points.append({"step": step, **{k: m[k] for k in KEYS}, **train_m})
    shutil.rmtree(run_path, ignore_errors=True)
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--base", type=str, default=None)
    ap.add_argument("--guidance", type=float, default=1.0, help="sampling = editing guidance")
    ap.add_argument("--verifier", choices=["same", "independent"], default="same")
    ap.add_argument("--sft-weight", type=float, default=0.0)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "rpo_vs_reward_pairs")
    args = ap.parse_args()
    budget = dict(QUICK if args.quick else FULL)
    if args.seeds:
        budget["seeds"] = args.seeds
    torch.set_num_threads(1)
    from scorealign.rpo.base import load_base
    from scorealign.rpo.config import DEFAULT_BASE

    base_path = args.base or DEFAULT_BASE
    tag = f"g{args.guidance:g}-{args.verifier}-sft{args.sft_weight:g}" + ("-quick" * args.quick)
    cells = args.out / "cells"
    work = args.work / tag
    for seed in range(budget["seeds"]):
        todo = [arm for arm in ("rpo", "reward") if not (cells / f"{tag}-s{seed}-{arm}.json")
                .is_file()]
        if not todo:
            continue
        d_rpo, d_rw, info = build_arms(args, seed, load_base(base_path), budget, work)
        if info["pairs"] < 2:
            sys.exit(f"seed {seed}: only {info['pairs']} pairs; use more prompts")
        for arm, data in (("rpo", d_rpo), ("reward", d_rw)):
            if arm not in todo:
                continue
            pts = curve(args, seed, arm, data, base_path, budget, work)
            cells.mkdir(parents=True, exist_ok=True)
            path = cells / f"{tag}-s{seed}-{arm}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"seed": seed, "arm": arm, "tag": tag, "build": info,
                                       "budget": budget, "points": pts}))
            tmp.replace(path)
            print(f"seed {seed} {arm}: " + ", ".join(
                f"step {p['step']}: acc {p['eval/accuracy']:.3f} FD {p['eval/fd']:.1f}"
                for p in pts), flush=True)
    summary = summarize(cells, tag, budget)
    suffix = "_quick" if args.quick else ""
    (args.out / f"results{suffix}.json").write_text(json.dumps(summary, indent=1))
    (args.out / f"results{suffix}.md").write_text(table(summary))
    plot(summary, args.out / f"frontier{suffix}.png")
    print(table(summary))


def summarize(cells: Path, tag: str, budget: dict) -> dict:
    """Per arm and step: mean and 95 % half-width over seeds of each metric."""
    from scorealign.preference.stats import mean_ci

    out: dict = {"tag": tag, "budget": budget, "arms": {}}
    for arm in ("rpo", "reward"):
        runs = [json.loads(p.read_text()) for p in sorted(cells.glob(f"{tag}-s*-{arm}.json"))]
        if not runs:
            continue
        steps = [p["step"] for p in runs[0]["points"]]
        rows = []
        for i, step in enumerate(steps):
            row = {"step": step, "n": len(runs)}
            for k in KEYS:
                m, h = mean_ci([r["points"][i][k] for r in runs])
                row[k] = {"mean": m, "ci95": None if math.isnan(h) else h}
            rows.append(row)
        out["arms"][arm] = {"pairs": [r["build"]["pairs"] for r in runs], "curve": rows}
    return out


def table(summary: dict) -> str:
    """Markdown: alignment and FD per arm and step (mean ± 95 % half-width)."""
    def f(c: dict, d: int = 3) -> str:
        h = "?" if c["ci95"] is None else f"{c['ci95']:.{d}f}"
        return f"{c['mean']:.{d}f} ± {h}"

    lines = [f"Options: {summary['tag']}; budget: {summary['budget']}.", "",
             "| arm | step | prompt accuracy ↑ | p(prompted digit) ↑ | FD to real ↓ | "
             "critic: any finding ↓ | seeds |", "|---|---|---|---|---|---|---|"]
    for arm, d in summary["arms"].items():
        for r in d["curve"]:
            lines.append(f"| {arm} | {r['step']} | {f(r['eval/accuracy'])} | "
                         f"{f(r['eval/label_prob'])} | {f(r['eval/fd'], 1)} | "
                         f"{f(r['eval/flagged'])} | {r['n']} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Alignment (judge accuracy) against FD over training steps, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.8), dpi=100)
    for arm, d in summary["arms"].items():
        xs = [r["eval/fd"]["mean"] for r in d["curve"]]
        ys = [r["eval/accuracy"]["mean"] for r in d["curve"]]
        ax.plot(xs, ys, marker="o", ms=3, label=arm)
        for r, x, y in zip(d["curve"], xs, ys):
            ax.annotate(str(r["step"]), (x, y), fontsize=6)
    ax.set_xlabel("Fréchet distance to real digits (lower is better)")
    ax.set_ylabel("prompt accuracy (held-out judge)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
