"""Per-step variance of the advantage A_k = r − V(x_k, t_k) under four value designs.

Designs (docs/methods/score_as_action.md): ``batch`` (V = batch mean reward, today's default),
``learned`` (DPOK's V_φ(x_t, t, c), rl/value.py), ``x0`` (V = r(x̂₀(x_t, t)), the reward of the
model's denoised prediction, Score as Action's value design) and ``x0+c`` (x0 plus a learned
correction c_φ fitted on r − r(x̂₀)). V_φ and c_φ are fitted on ``--train-batches`` batches of
base-model rollouts and evaluated on fresh rollouts (the shipped digits model, the demo's
sampler: 10 DDIM η = 1 steps, reward aesthetic_proxy on samples clamped to [−1, 1]).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/rl_sample_efficiency/advantage_variance.py

Writes ``results/advantage_variance.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from _cells import portable_path as _portable  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from scorealign.config import load_config
    from scorealign.rewards.compose import build_reward_set
    from scorealign.rl.config import FinetuneConfig
    from scorealign.rl.setup import build_setup
    from scorealign.rl.value import ValueBaseline, x0_rewards
    from scorealign.rng import derive_seed

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--train-batches", type=int, default=4)
    ap.add_argument("--eval-rows", type=int, default=64)
    ap.add_argument("--fit-steps", type=int, default=300)
    a = ap.parse_args(argv)
    cfg = load_config(ROOT / "configs/finetune/demo.yaml", FinetuneConfig, ["device=cpu"])
    setup = build_setup(cfg)
    pol = setup.policy(cfg)
    rewards = build_reward_set(cfg.reward.optimized, None, cfg.reward.clamp)

    def batch(tag: str, n: int):
        prompts = [setup.prompts[i % len(setup.prompts)] for i in range(n)]
        seeds = torch.tensor([derive_seed(7, tag, i) for i in range(n)])
        traj = pol.rollout(prompts, 1, seeds=seeds)
        r = rewards(setup.decode(traj.x0), traj.prompts).optimized.float()
        rx = x0_rewards(pol, traj, setup.decode, rewards, {})
        return traj, r, rx

    train = [batch(f"train{i}", a.rows) for i in range(a.train_batches)]
    test_traj, r, rx = batch("eval", a.eval_rows)

    def fitted(target_fn):
        vb = ValueBaseline(64, 3e-3, a.fit_steps, setup.shape, setup.prompts, 0)
        from scorealign.rl.updates import cat_trajectories
        traj = cat_trajectories([t for t, _, _ in train])
        vb.fit(traj, torch.cat([target_fn(rr, rrx) for _, rr, rrx in train]))
        return vb.predict(test_traj)

    v_learned = fitted(lambda rr, rrx: rr)
    corr = fitted(lambda rr, rrx: rr[:, None] - rrx)
    designs = {"batch": r.mean().expand_as(rx), "learned": v_learned, "x0": rx,
               "x0+c": rx + corr}
    steps = test_traj.trained[0].nonzero().flatten().tolist()
    table = {name: [float((r - v[:, k]).var(unbiased=True)) for k in steps]
             for name, v in designs.items()}
    out = {"steps": steps, "t": [float(test_traj.ts[k]) for k in steps], "var": table,
           "reward_var": float(r.var(unbiased=True)), "settings": vars(a) | {"results": _portable(
               a.results)}}
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "advantage_variance.json").write_text(json.dumps(out, indent=1))
    lines = ["# Per-step advantage variance Var[r − V(x_k, t_k)] on the evaluation rollouts", "",
             f"{a.eval_rows} fresh rollouts of the base model (demo sampler, action steps "
             f"{steps}); V_φ and c_φ fitted on {a.train_batches}×{a.rows} other rollouts.", "",
             "| step k | t_k | " + " | ".join(designs) + " |", "|---|---|" + "---|" * len(designs)]
    for i, k in enumerate(steps):
        lines.append(f"| {k} | {out['t'][i]:.3f} | " +
                     " | ".join(f"{table[n][i]:.2e}" for n in designs) + " |")
    lines.append(f"| mean | | " + " | ".join(f"{sum(table[n]) / len(steps):.2e}"
                                             for n in designs) + " |")
    (a.results / "advantage_variance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
