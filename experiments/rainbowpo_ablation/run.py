"""DPO vs MallowsPO vs RainbowPO (and SimPO) on the offline demo task, at the authors' settings
[Zhao+24 RainbowPO, §4; Chen+24 MallowsPO].

    .venv/bin/python experiments/rainbowpo_ablation/run.py             # ~10 CPU-min; cached cells
    .venv/bin/python experiments/rainbowpo_ablation/run.py --quick --out /tmp/rb   # the test

Every variant of a seed starts from the same SFT model and the same oracle-labelled pairs of
``configs/dpo/demo.yaml`` (tiny GPT-2, 200 steps, batch 32) and has the same budget. Metric: the
oracle win rate of the policy's samples against the SFT model's on 512 held-out prompts (ties ½)
and the mean oracle reward. Fairness: the learning rate is swept per variant on a separate seed
(``--tune-seed``, its own SFT model and pairs) and picked by the win rate there; the evaluation
seeds are disjoint; 95 % Student-t intervals over the seeds, and the per-seed difference to DPO
(paired: same SFT model and pairs).

Variants (the authors' values where they have one; hanyang1999/RainbowPO
``trl/trainer/dpo_config.py``: β = 10 on mean token log-probs, ``mixing_alpha`` 0.25,
``home_advantage`` 0.1, ``neg_log_dispersion_mean`` λ = 0.29, ``length_normalization``; the
MallowsPO repo has the same λ):

* DPO: sigmoid, β = 0.1 on summed log-probs.
* Mallows-θ (λ = 0.29): the authors' λ. On this 10-token vocabulary the reference's normalized
  entropy is H̄ ≈ 0.84, so c = −0.29 log H̄ ≈ 0.05: β is effectively 20× smaller than DPO's. On an
  LLM vocabulary H̄ is far smaller and c ≈ 1 (the authors' regime), which λ = 0.29 does not
  transfer to a tiny vocabulary; hence also
* Mallows-θ (λ auto): λ with mean c = 1 over the reference cache.
* RainbowPO: LN + reference mixing α = 0.25 with margin γ + contextual scaling (λ auto), sigmoid.
  β = 0.6 on mean token log-probs (β × mean completion length ≈ DPO's 0.1 × 6), γ = 0.5, so the
  shift β(1 − α)γ = 0.225 in logit units (the authors' is 10 × 0.75 × 0.1 = 0.75 on LLM data).

One JSON per (variant, seed, lr) cell under ``cells/``; a stopped run continues.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

from scorealign.config import load_config
from scorealign.preference.config import DPOConfig
from scorealign.preference.stats import mean_ci
from scorealign.preference.trainer import train
from scorealign.run.rundir import RunDir

HERE = Path(__file__).parent
CONFIG = HERE.parents[1] / "configs" / "dpo" / "demo.yaml"

LN = {"length_normalization": True, "beta": 0.6}
RECIPE = {**LN, "mixing": True, "mixing_alpha": 0.25, "margin": 0.5, "contextual_scaling": True}
VARIANTS: dict[str, tuple[str, dict, list[str]]] = {
    "DPO": ("sigmoid", {"beta": 0.1}, []),
    "Mallows-θ (λ=0.29)": ("mallows_theta", {"beta": 0.1}, []),
    "Mallows-θ (λ auto)": ("mallows_theta", {"beta": 0.1, "dispersion_scale": "auto"}, []),
    "RainbowPO (λ auto)": ("rainbowpo", {**RECIPE, "dispersion_scale": "auto"}, []),
}


def run_cell(name: str, seed: int, lr: float, work: Path, cells: Path, sets: list[str]) -> dict:
    """Train one variant at one seed and lr from the seed's shared SFT model/pairs; cached."""
    path = cells / f"{_slug(name)}-s{seed}-lr{lr:g}.json"
    if path.is_file():
        return json.loads(path.read_text())
    loss, params, extra = VARIANTS[name]
    cfg = load_config(CONFIG, DPOConfig, [f"train.seed={seed}", "train.progress=false",
                                          "train.eval_every=0",
                                          f"train.lr={lr}", f"loss.name={loss}",
                                          f"loss.params={json.dumps(params)}", *extra, *sets])
    out = work / f"{_slug(name)}-s{seed}-lr{lr:g}"
    shutil.rmtree(out, ignore_errors=True)
    run = RunDir.create(out, cfg)
    cache = work / f"cache-s{seed}"
    if cache.is_dir():  # the seed's SFT weights and pairs
        shutil.copytree(cache, run.path / "demo")
    summary = train(cfg, run, export_final=False)  # metrics only: no final/ or report
    if not cache.is_dir():  # publish atomically: parallel workers may race on the same seed
        tmp = work / f".cache-s{seed}-{os.getpid()}"
        shutil.copytree(run.path / "demo", tmp)
        try:
            tmp.rename(cache)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    metrics = run.read_metrics()
    cell = {"variant": name, "seed": seed, "lr": lr, **summary["eval_start"],
            **{f"end_{k.split('/')[-1]}": v for k, v in summary["eval_end"].items()},
            "train_accuracy": summary["last"].get("rewards/accuracy"),
            "dispersion_scale": summary.get("dispersion_scale"),
            # per-step breakdown of the summed loss: chosen and rejected implicit rewards
            "curve": [{k: r[k] for k in ("step", "loss", "rewards/chosen", "rewards/rejected",
                                          "rewards/accuracy", "eval/win_rate") if k in r}
                      for r in metrics]}
    shutil.rmtree(out, ignore_errors=True)
    cells.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell))
    tmp.replace(path)
    return cell


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tune-seed", type=int, default=100)
    ap.add_argument("--lrs", default="3e-4,1e-3", help="swept per variant on --tune-seed")
    ap.add_argument("--work", default="runs/rainbowpo_ablation", help="scratch run directories")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test)")
    ap.add_argument("--cached-only", action="store_true", help="tabulate the cached cells only "
                    "(variants without a full lr sweep are left out)")
    ap.add_argument("--worker", default=None, help="i/W: run only every W-th cell from i of the "
                    "phase (tune, then eval once every tune cell is cached) and exit")
    args = ap.parse_args(argv)
    sets: list[str] = []
    if args.quick:
        args.seeds, args.lrs = 2, "3e-4,1e-3"
        sets = ["train.steps=4", "train.batch_size=4", "demo.sft_steps=10", "demo.n_prompts=16",
                "demo.eval_prompts=8", "train.eval_every=0", "train.log_every=2"]
    out, work = Path(args.out), Path(args.work) / ("quick" if args.quick else "full")
    cells = out / "cells"
    work.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else list(VARIANTS)
    lrs = [float(v) for v in args.lrs.split(",")]
    if args.worker:  # tune share, wait for the whole sweep, then the eval share
        import time

        i, n_workers = (int(v) for v in args.worker.split("/"))
        tune = [(nm, args.tune_seed, lr) for nm in names for lr in lrs]
        for nm, sd, lr in tune[i::n_workers]:
            run_cell(nm, sd, lr, work, cells, sets)
            print(f"worker {i}: {nm} seed {sd} lr {lr:g} done", flush=True)
        path = lambda nm, sd, lr: cells / f"{_slug(nm)}-s{sd}-lr{lr:g}.json"  # noqa: E731
        while not all(path(*c).is_file() for c in tune):
            time.sleep(10)
        chosen = {nm: max(lrs, key=lambda lr: json.loads(path(nm, args.tune_seed, lr)
                                                         .read_text())["end_win_rate"])
                  for nm in names}
        todo = [(nm, sd, chosen[nm]) for sd in range(args.seeds) for nm in names]
        for nm, sd, lr in todo[i::n_workers]:
            run_cell(nm, sd, lr, work, cells, sets)
            print(f"worker {i}: {nm} seed {sd} lr {lr:g} done", flush=True)
        return
    chosen, rows = {}, []
    if args.cached_only:
        have = lambda nm, sd, lr: (cells / f"{_slug(nm)}-s{sd}-lr{lr:g}.json").is_file()  # noqa
        names = [nm for nm in names if all(have(nm, args.tune_seed, lr) for lr in lrs)]
    for name in names:
        tune = {lr: run_cell(name, args.tune_seed, lr, work, cells, sets)["end_win_rate"]
                for lr in lrs}
        chosen[name] = max(tune, key=tune.get)
        print(f"{name}: lr sweep {tune} -> {chosen[name]:g}", flush=True)
    for seed in range(args.seeds):
        for name in names:
            if args.cached_only and not (cells / f"{_slug(name)}-s{seed}-lr"
                                         f"{chosen[name]:g}.json").is_file():
                continue
            r = run_cell(name, seed, chosen[name], work, cells, sets)
            rows.append(r)
            print(f"{name:26s} seed {seed}: win {r['end_win_rate']:.3f}  reward "
                  f"{r['end_reward_mean']:.3f} (SFT {r['end_sft_reward_mean']:.3f})", flush=True)
    (out / "results.json").write_text(json.dumps({"lr": chosen, "rows": rows}, indent=1))
    (out / "table.md").write_text(table(rows, names, chosen))
    print(table(rows, names, chosen))


def table(rows: list[dict], names: list[str], chosen: dict) -> str:
    """Markdown: mean ± 95 % half-width over seeds; paired difference to DPO."""
    def ci(v: list[float], signed: bool = False) -> str:
        m, h = mean_ci(v)
        return f"{m:{'+' if signed else ''}.3f} ± {'?' if math.isnan(h) else f'{h:.3f}'}"

    dpo = {r["seed"]: r for r in rows if r["variant"] == "DPO"}
    lines = ["| variant | lr | win rate vs SFT | Δ win vs DPO | oracle reward | Δ reward vs DPO "
             "| train reward acc. |", "|---|---|---|---|---|---|---|"]
    for name in names:
        rs = [r for r in rows if r["variant"] == name]
        w = [r["end_win_rate"] for r in rs]
        m = [r["end_reward_mean"] for r in rs]
        a = [r["train_accuracy"] or 0.0 for r in rs]
        dw = [r["end_win_rate"] - dpo[r["seed"]]["end_win_rate"] for r in rs if r["seed"] in dpo]
        dm = [r["end_reward_mean"] - dpo[r["seed"]]["end_reward_mean"] for r in rs
              if r["seed"] in dpo]
        lines.append(f"| {name} | {chosen[name]:g} | {ci(w)} | "
                     f"{ci(dw, True) if name != 'DPO' and dw else '—'} | {ci(m)} | "
                     f"{ci(dm, True) if name != 'DPO' and dm else '—'} | {sum(a) / len(a):.2f} |")
    sft = sum(r["end_sft_reward_mean"] for r in rows) / len(rows)
    n = len({r["seed"] for r in rows})
    return (f"Oracle win rate against the SFT model (0.5 = no change) and mean oracle reward "
            f"(SFT: {sft:.3f}); mean ± 95 % Student-t half-width over {n} seeds; Δ paired by "
            "seed (same SFT model and pairs); lr picked per variant on a separate seed.\n\n"
            + "\n".join(lines) + "\n")


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # single-threaded cells (in a test: the caller's setting)
    main()
