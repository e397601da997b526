"""RainbowPO component ablation on the offline demo task [Zhao+24 RainbowPO, §4 ablations].

    .venv/bin/python experiments/rainbowpo_ablation/run.py      # ~10 min on 1 CPU core

Every variant starts from the same SFT model and (except RSO) the same oracle-labelled pairs of
``configs/dpo/demo.yaml`` and trains with the same budget; the metric is the oracle win rate of the
policy's samples against the SFT model's on 512 held-out prompts (ties ½), and the mean oracle
reward. One component is switched on at a time on top of DPO, then the paper's final combination
(length normalization + reference mixing with a margin + contextual scaling), plus SimPO.
``--only A,B`` re-runs some variants and merges them into the saved results.

β is not re-tuned per variant beyond one rule: length-normalized variants use β × 6 (the mean
completion length), so that β × margin has the same scale as for summed log-probs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from scorealign.config import load_config
from scorealign.preference.config import DPOConfig
from scorealign.preference.trainer import train
from scorealign.train.rundir import RunDir

HERE = Path(__file__).parent
CONFIG = HERE.parents[1] / "configs" / "dpo" / "demo.yaml"

LN = {"length_normalization": True, "beta": 0.6}
# The SFT model's normalized entropy on the demo pairs is H̄ ≈ 0.84, so c = −log H̄ ≈ 0.18 at λ = 1:
# an effective β five times smaller. λ = 5 (the authors' ``dispersion_mean``) brings mean c to ≈ 1.
CS_SCALE = 5.0
VARIANTS: dict[str, tuple[str, dict, list[str]]] = {
    "DPO": ("rainbowpo", {"beta": 0.1}, []),
    "+ length norm.": ("rainbowpo", LN, []),
    "+ link: IPO": ("rainbowpo", {"beta": 0.1, "link": "ipo"}, []),
    "+ link: hinge": ("rainbowpo", {"beta": 0.1, "link": "hinge"}, []),
    "+ home advantage γ": ("rainbowpo", {"beta": 0.1, "margin": 2.0}, []),
    "+ ref. mixing (α=0.5, γ)": ("rainbowpo", {"beta": 0.1, "mixing": True, "mixing_alpha": 0.5,
                                               "margin": 2.0}, []),
    "+ contextual scaling (λ=1)": ("rainbowpo", {"beta": 0.1, "contextual_scaling": True}, []),
    "+ contextual scaling (λ=5)": ("rainbowpo", {"beta": 0.1, "contextual_scaling": True,
                                                  "dispersion_scale": CS_SCALE}, []),
    "+ RSO pairs": ("rainbowpo", {"beta": 0.1}, ["demo.pairing=rso", "demo.candidates=4"]),
    "+ SFT loss": ("rainbowpo", {"beta": 0.1, "sft_coef": 0.05}, []),
    "RainbowPO (LN + mix + CS λ=5)": ("rainbowpo", {**LN, "mixing": True, "mixing_alpha": 0.5,
                                                    "margin": 0.3, "contextual_scaling": True,
                                                    "dispersion_scale": CS_SCALE}, []),
    "SimPO": ("simpo", {"beta": 0.6, "gamma": 0.3}, ["reference.mode=none"]),
}


def run_variant(name: str, seed: int, root: Path) -> dict:
    """Train one variant from the shared SFT model/pairs cache; return its final evaluation."""
    loss, params, extra = VARIANTS[name]
    sets = [f"train.seed={seed}", "train.progress=false", f"loss.name={loss}",
            f"loss.params={json.dumps(params)}", *extra]
    cfg = load_config(CONFIG, DPOConfig, sets)
    out = root / f"{_slug(name)}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    run = RunDir.create(out, cfg)
    cache = root / f"cache-s{seed}-{'rso' if extra and 'rso' in extra[0] else 'random'}"
    if cache.is_dir():  # reuse SFT weights and pairs of the same seed and pairing
        shutil.copytree(cache, run.path / "demo")
    elif (root / f"cache-s{seed}-random" / "sft.safetensors").is_file():
        (run.path / "demo").mkdir(parents=True)
        shutil.copy(root / f"cache-s{seed}-random" / "sft.safetensors", run.path / "demo")
    summary = train(cfg, run)
    if not cache.is_dir():
        shutil.copytree(run.path / "demo", cache)
    return {"variant": name, "seed": seed, **summary["eval_start"], **{
        f"end_{k.split('/')[-1]}": v for k, v in summary["eval_end"].items()},
        "train_accuracy": summary["last"].get("rewards/accuracy")}


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--work", default="runs/rainbowpo_ablation", help="scratch run directories")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else list(VARIANTS)
    rows = []
    for seed in range(args.seeds):
        for name in names:
            rows.append(run_variant(name, seed, root))
            r = rows[-1]
            print(f"{name:28s} seed {seed}: win {r['end_win_rate']:.3f}  reward "
                  f"{r['end_reward_mean']:.3f} (SFT {r['end_sft_reward_mean']:.3f})", flush=True)
    saved = HERE / "results.json"
    if args.only and saved.is_file():  # merge: keep the other variants' saved rows
        rows = [r for r in json.loads(saved.read_text()) if r["variant"] not in names] + rows
    names = [n for n in VARIANTS if any(r["variant"] == n for r in rows)]
    saved.write_text(json.dumps(rows, indent=1))
    (HERE / "table.md").write_text(table(rows, names))
    print(table(rows, names))


def table(rows: list[dict], names: list[str]) -> str:
    """Markdown table: mean ± half-range over seeds of the win rate and reward."""
    lines = ["| variant | win rate vs SFT | oracle reward | train reward acc. |", "|---|---|---|---|"]
    for name in names:
        rs = [r for r in rows if r["variant"] == name]
        w = [r["end_win_rate"] for r in rs]
        m = [r["end_reward_mean"] for r in rs]
        a = [r["train_accuracy"] or 0.0 for r in rs]
        pm = lambda v: f"{sum(v) / len(v):.3f} ± {(max(v) - min(v)) / 2:.3f}"  # noqa: E731
        lines.append(f"| {name} | {pm(w)} | {pm(m)} | {sum(a) / len(a):.2f} |")
    sft = sum(r["end_sft_reward_mean"] for r in rows) / len(rows)
    return (f"Oracle win rate against the SFT model (0.5 = no change) and mean oracle reward "
            f"(SFT: {sft:.3f}), mean ± half-range over {len({r['seed'] for r in rows})} seeds.\n\n"
            + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
