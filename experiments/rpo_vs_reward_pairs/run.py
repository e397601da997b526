"""RPO pairs vs reward-labelled pairs under the same Diffusion-DPO budget (digits).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/rpo_vs_reward_pairs/run.py [--quick]
        [--base PATH] [--out runs/rpo_vs_reward_pairs]

1. Sample the base model for N prompts (balanced digits, no guidance so that it errs).
2. RPO: critique every sample (project classifier, seed 0, + image statistics), extract edit
   instructions, edit (SDEdit with the base model / image operations), keep verified fixes:
   edited ≻ original [Zhao+25, arXiv:2503.11720].
3. Baseline: two fresh samples per prompt, the higher classifier log-prob (same classifier,
   seed 0) wins.
4. Both datasets are cut to the same number of pairs K; Diffusion-DPO [Wallace+23, Eq. 14] runs
   with identical settings (steps, batch, β, lr, seed) on each.
5. Base, RPO-tuned and reward-tuned models are judged on the same prompts and seeds by a held-out
   classifier (seed 1): prompt alignment (accuracy, p(prompted digit)) and sample quality
   (Fréchet distance to real test digits, critic finding rates).

Writes ``results.md``, ``results.json`` and ``samples.png`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

FULL = dict(prompts=1500, steps=300, batch=32, eval_samples=1000)
QUICK = dict(prompts=300, steps=40, batch=16, eval_samples=200)
GEN_GUIDANCE = 1.0  # deployment setting: plain conditional sampling (no CFG)


def default_base() -> Path:
    for p in (ROOT / "src/scorealign/assets/pretrained/digits8", ROOT / "runs/dev_digits_rpo"):
        if (p / "model_config.json").is_file() or (p / "config.yaml").is_file():
            return p
    sys.exit("no base model: pass --base RUN_OR_MODEL_DIR (e.g. a `scorealign pretrain` run)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small budget smoke run (~3 min)")
    ap.add_argument("--base", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "rpo_vs_reward_pairs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    budget = QUICK if args.quick else FULL
    base_path = args.base or default_base()

    from scorealign.config import config_from_dict
    from scorealign.report.figures import save_image_grid
    from scorealign.rpo.base import load_base
    from scorealign.rpo.build import build_pairs, write_dataset
    from scorealign.rpo.config import (BuildPairsConfig, DiffusionDPOConfig, DiffusionEvalConfig,
                                       GenerationConfig)
    from scorealign.rpo.dataset import read_pairs
    from scorealign.rpo.dpo_train import train
    from scorealign.rpo.evaluate import evaluate_policy
    from scorealign.train.rundir import RunDir

    t0 = time.time()
    out = args.out
    base = load_base(base_path)
    gen = {"steps": 25, "guidance": GEN_GUIDANCE}
    build = {"seed": args.seed, "base": {"path": str(base_path)},
             "prompts": {"n": budget["prompts"]}, "generation": gen}
    rpo_cfg = config_from_dict({**build, "method": "rpo"}, BuildPairsConfig)
    rpo_dir, rpo_stats = build_pairs(rpo_cfg, out / "pairs_rpo", base=base, overwrite=True)
    k = len(read_pairs(rpo_dir))
    print(f"RPO: {k} verified pairs from {budget['prompts']} samples; {rpo_stats.to_dict()}")
    if k < 4:
        sys.exit("too few RPO pairs to train on; use more prompts")
    # Reward pairs: enough prompts for k pairs after ties, cut to exactly k.
    rw_cfg = config_from_dict({**build, "method": "reward", "max_pairs": k,
                               "prompts": {"n": k + k // 10 + 2}}, BuildPairsConfig)
    rw_dir, rw_stats = build_pairs(rw_cfg, out / "pairs_reward", base=base, overwrite=True)
    print(f"reward: {len(read_pairs(rw_dir))} pairs; {rw_stats.to_dict()}")

    ev = DiffusionEvalConfig(num_samples=budget["eval_samples"], judge_seed=1,
                             generation=GenerationConfig(**gen), seed=1234)
    results, samples = {}, {}
    results["base"], samples["base"] = evaluate_policy(base, base.model, ev)
    for name, data in (("rpo", rpo_dir), ("reward", rw_dir)):
        cfg = config_from_dict({
            "task": "diffusion", "device": "cpu", "base": {"path": str(base_path)},
            "data": {"path": str(data)},
            "loss": {"link": "sigmoid", "beta": 2000.0, "scale": 0.5},
            "train": {"steps": budget["steps"], "batch_size": budget["batch"], "lr": 1e-5,
                      "log_every": 10, "ckpt_every": budget["steps"], "seed": args.seed,
                      "progress": False},
            "eval": {"enabled": False}}, DiffusionDPOConfig)
        run_path = out / f"dpo_{name}"
        if run_path.exists():
            import shutil
            shutil.rmtree(run_path)
        summary = train(cfg, RunDir.create(run_path, cfg), base=load_base(base_path))
        results[name], samples[name] = evaluate_policy(base, summary["policy"], ev)
        results[name]["train/rewards_accuracy"] = summary["last"]["rewards/accuracy"]
        results[name]["train/loss"] = summary["last"]["loss"]
        print(name, {k_: round(v, 4) for k_, v in results[name].items()})

    meta = {"base": str(base_path), "pairs": k, "budget": budget, "generation_guidance":
            GEN_GUIDANCE, "rpo_build": rpo_stats.to_dict(), "reward_build": rw_stats.to_dict(),
            "minutes": round((time.time() - t0) / 60, 1), "quick": args.quick}
    tag = "_quick" if args.quick else ""
    (HERE / f"results{tag}.json").write_text(json.dumps({"meta": meta, "results": results},
                                                        indent=2))
    (HERE / f"results{tag}.md").write_text(table(results, meta))
    # One row per model: digits 0-9, two samples each (the same prompts and seeds).
    idx = torch.cat([torch.arange(d, 20 * 10, 10)[:2] for d in range(10)])
    grid = torch.cat([samples[m][idx] for m in ("base", "rpo", "reward")])
    save_image_grid(grid, HERE / f"samples{tag}.png", nrow=20, upscale=3)
    print(table(results, meta))


ROWS = (("eval/accuracy", "prompt accuracy (judge) ↑"), ("eval/label_prob", "p(prompted digit) ↑"),
        ("eval/fd", "Fréchet distance to real ↓"), ("eval/diversity", "diversity"),
        ("eval/flagged", "critic: any finding ↓"), ("eval/rate_wrong_digit", "  wrong digit ↓"),
        ("eval/rate_broken_stroke", "  broken stroke ↓"), ("eval/rate_off_centre", "  off-centre ↓"),
        ("eval/rate_low_contrast", "  low contrast ↓"))


def table(results: dict, meta: dict) -> str:
    lines = [f"Pairs per arm: {meta['pairs']}; DPO: {meta['budget']['steps']} steps × "
             f"{meta['budget']['batch']} pairs, β = 2000, lr 1e-5; judged on "
             f"{meta['budget']['eval_samples']} samples (guidance {meta['generation_guidance']}).",
             "", "| metric | base | DPO on RPO pairs | DPO on reward pairs |", "|---|---|---|---|"]
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{results[m][key]:.3f}"
                                                  for m in ("base", "rpo", "reward")) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
