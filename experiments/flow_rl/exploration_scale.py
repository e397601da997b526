"""How far Score as Action's exploration moves a rectified-flow sample, step by step.

On a flow x_t = (1 − t) x_0 + t ε the Euler ODE step of an ε-space action ε_a = ε_θ + λ z is
x_{t−Δ} = x_t − Δ (ε_a − x_t)/(1 − t), so the action noise enters the state as
−Δ λ z/(1 − t): at the first grid time t_max = 0.999 (``FlowSDE``'s start with ε-actions)
the factor Δ/(1 − t) is in the hundreds. Measured on ``pretrained:digits8-flow`` with the
experiment's 6 steps: for each λ and each action step k alone, the same prompts and
x_T are rolled out with noise at step k only and without any noise, and it reports the RMS of
the difference of the final samples relative to the RMS of the noise-free sample, and the
optimized and gold rewards of both (``results/exploration_scale.md``, ``.json``).

    OMP_NUM_THREADS=1 python experiments/flow_rl/exploration_scale.py
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as flow_rl  # noqa: E402


def measure(lams, n: int, base: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from scorealign.rl.trainer import Finetuner

    mode = flow_rl.FULL
    out: dict = {"n": n, "steps": mode.steps, "rows": []}
    for lam in lams:
        cell = flow_rl.Cell(flow_rl.SAA, lam, 1e-4, 0, 3_000_000)
        for k in range(mode.steps - 1):  # the final step is never an action
            cfg = flow_rl.build(cell, mode, base)
            cfg = replace(cfg, policy=replace(cfg.policy, action_steps=f"steps:{k}"))
            ft = Finetuner(cfg, None)
            pol, s = ft.policy, ft.setup
            prompts = [s.prompts[i % len(s.prompts)] for i in range(n)]
            seeds = torch.arange(n) + 3_000_000
            with torch.no_grad():
                x_T = pol.initial_state(seeds)
                det = pol.rollout(prompts, 1, seeds=seeds, deterministic=True, x_T=x_T).x0
                exp = pol.rollout(prompts, 1, seeds=seeds, x_T=x_T).x0
                rd = ft.rewards(s.decode(det), prompts, {"epoch": -1})
                re = ft.rewards(s.decode(exp), prompts, {"epoch": -1})
            t, t_next = float(pol.ts[k]), float(pol.ts[k + 1])
            out["rows"].append({
                "lam": lam, "step": k, "t": t, "dt": t - t_next,
                "factor": (t - t_next) / (1 - t),
                "rel_rms": float((exp - det).pow(2).mean().sqrt() / det.pow(2).mean().sqrt()),
                "reward_ode": float(rd.optimized.mean()),
                "reward_explore": float(re.optimized.mean()),
                "gold_ode": float(rd.gold.mean()), "gold_explore": float(re.gold.mean())})
            print(out["rows"][-1], flush=True)
    return out


def write(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "exploration_scale.json").write_text(json.dumps(res, indent=1))
    lines = ["# Score as Action on the digits flow: the effect of one step's exploration", "",
             f"{res['n']} samples, {res['steps']} Euler steps, guidance 2, the base model; noise "
             "at the named action step only vs no noise (same x_T and prompts). Δ/(1 − t): the "
             "factor by which an ε-space action noise λz enters the state.", "",
             "| λ | step | t | Δ/(1 − t) | RMS(x₀ change) / RMS(x₀) | reward: ODE → with "
             "noise | gold: ODE → with noise |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['lam']:g} | {r['step']} | {r['t']:.3f} | {r['factor']:.1f} | "
                     f"{r['rel_rms']:.3f} | {r['reward_ode']:.4f} → {r['reward_explore']:.4f} | "
                     f"{r['gold_ode']:.3f} → {r['gold_explore']:.3f} |")
    (out / "exploration_scale.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lams", type=float, nargs="+", default=list(flow_rl.FULL.lams))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--base", default="pretrained:digits8-flow")
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args(argv)
    write(measure(a.lams, a.n, a.base), a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
