"""Consistency models on 8×8 digits: quality and cost against sampling steps, and few-step RL.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/consistency/run.py [--quick]

Part A (sampling). Class accuracy (project classifier) and Fréchet distance (classifier features,
real test split) of ``--n`` samples with balanced labels, against network calls NFE ∈ {1,2,4,8}:

* ``teacher/ddim``: the shipped digits8 (eps, VP) with DDIM η = 0, S = NFE steps, CFG 2;
* ``teacher/heun``: the same with Heun (EDM Alg. 1), S = NFE/2 steps (2 calls a step);
* ``cd/consistency``: the distilled model (``pretrained:digits8-cd`` or ``--cd RUN``), S = NFE
  steps of multistep consistency sampling (Song+23 Alg. 1, Karras grid), no CFG (it distils the
  guided teacher);
* ``ct/consistency``: a CT run (``--ct RUN``), same sampler; skipped when no run is given.

An NFE counts one (batched) network evaluation; CFG doubles the rows of the teacher's calls,
which the wall time per sample (measured in the same process, one thread) shows.

Part B (RL). LOOP fine-tuning (same reward as the demo: aesthetic_proxy, gold digit_alignment)
of the 2-step consistency policy (η = 1, every step Gaussian) against the 10-step teacher
(DDIM η = 1, the demo's policy), equal epochs and rollouts; logs reward per epoch against
cumulative wall-clock seconds.

Every cell is cached as ``OUT/cells/<name>.json`` (a stopped run continues); outputs
``results.json`` and ``table.md`` go to ``--results`` (default experiments/consistency/results,
or OUT/results with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from scorealign.config import load_config
from scorealign.data import load_digits
from scorealign.eval.classifier import load_classifier
from scorealign.eval.metrics import digits_metrics
from scorealign.train.bases import load_digits_base, resolve_base_path
from scorealign.train.evaluate import balanced_labels
from scorealign.train.task import SamplingConfig

ROOT = Path(__file__).resolve().parents[2]
NFES = (1, 2, 4, 8)


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _cached(path: Path, fn) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    out = fn()
    _write(path, out)
    return out


def sampling_cells(models: dict, nfes, n: int) -> list[tuple[str, str, int, SamplingConfig]]:
    """(model key, label, nfe, SamplingConfig) of every Part A cell."""
    cells = []
    for nfe in nfes:
        if "teacher" in models:
            cells.append(("teacher", "teacher/ddim", nfe, SamplingConfig(
                sampler="ddim", steps=nfe, eta=0.0, guidance=2.0, grid="uniform", num_eval=n)))
            if nfe % 2 == 0:
                cells.append(("teacher", "teacher/heun", nfe, SamplingConfig(
                    sampler="heun_ode", steps=nfe // 2, guidance=2.0, grid="karras",
                    num_eval=n)))
        for key in ("cd", "ct"):
            if key in models:
                cells.append((key, f"{key}/consistency", nfe, SamplingConfig(
                    sampler="consistency", steps=nfe, eta=0.0, guidance=1.0, grid="karras",
                    num_eval=n)))
    return cells


def measure(task, model, cfg: SamplingConfig, clf, real) -> dict:
    labels = balanced_labels(cfg.num_eval)
    cond = task.cond_for(labels)
    t0 = time.perf_counter()
    x = task.generate(model, cond, cfg.num_eval, cfg)
    wall = time.perf_counter() - t0
    m = digits_metrics(clf, x, labels, real)
    return {"accuracy": m["eval/accuracy"], "fd": m["eval/fd"],
            "ms_per_sample": 1000 * wall / cfg.num_eval}


def part_a(out: Path, models: dict, nfes, n: int) -> list[dict]:
    clf = load_classifier(size=8)
    real = load_digits("test", size=8, seed=0).images
    loaded: dict = {}
    rows = []
    for key, label, nfe, cfg in sampling_cells(models, nfes, n):
        name = f"{label.replace('/', '_')}_nfe{nfe}_n{n}"

        def run():
            if key not in loaded:
                loaded[key] = load_digits_base(models[key])
            task, model = loaded[key]
            return {"method": label, "nfe": nfe, "steps": cfg.steps, "n": n,
                    **measure(task, model, cfg, clf, real)}

        rows.append(_cached(out / "cells" / f"{name}.json", run))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def part_b(out: Path, cd_path: str, epochs: int, per_epoch: int, k: int,
           seeds: int = 1) -> list[dict]:
    """LOOP on the 2-step consistency policy vs the 10-step teacher; per-epoch reward/time."""
    from scorealign.rl.config import FinetuneConfig
    from scorealign.rl.trainer import finetune
    from scorealign.run.rundir import RunDir

    common = [f"train.epochs={epochs}", f"prompts.per_epoch={per_epoch}", f"prompts.k={k}",
              f"train.minibatch_size={per_epoch * k}", f"train.sample_batch_size={per_epoch * k}",
              f"train.ckpt_every={epochs}", "device=cpu"]
    arms = {"cm_2step": ("configs/finetune/digits_cm_loop.yaml", [f"base.path={cd_path}"]),
            "teacher_10step": ("configs/finetune/demo.yaml", [])}
    rows = []
    for seed, (arm, (config, sets)) in ((s, a) for s in range(seeds) for a in arms.items()):
        name = f"rl_{arm}_e{epochs}_p{per_epoch}_k{k}_s{seed}"

        def run():
            cfg = load_config(ROOT / config, FinetuneConfig,
                              sets + common + [f"train.seed={seed}"])
            run_dir = out / "runs" / name
            import shutil
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            finetune(cfg, RunDir.create(run_dir, cfg))
            total = time.perf_counter() - t0
            hist = RunDir(run_dir).read_metrics()
            wall = 0.0
            curve = []
            for r in hist:
                wall += r["time/epoch_s"]
                curve.append({"epoch": r["step"], "wall_s": wall, "reward": r["reward/mean"],
                              "gold": r.get("reward/gold_mean")})
            return {"arm": arm, "seed": seed, "steps": cfg.policy.steps, "total_s": total,
                    "curve": curve,
                    "reward_gain": curve[-1]["reward"] - curve[0]["reward"],
                    "gain_per_s": (curve[-1]["reward"] - curve[0]["reward"]) / wall}

        rows.append(_cached(out / "cells" / f"{name}.json", run))
        print(json.dumps({k2: v for k2, v in rows[-1].items() if k2 != "curve"}), flush=True)
    return rows


def _ci(values: list[float]) -> str:
    """mean ± 95% interval (t quantile) of per-seed values."""
    import statistics
    n = len(values)
    m = statistics.fmean(values)
    if n < 2:
        return f"{m:.3g}"
    t95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36}.get(n, 2.26)
    return f"{m:.3g} ± {t95 * statistics.stdev(values) / n ** 0.5:.2g}"


def rl_summary(b: list[dict]) -> list[str]:
    """Per arm over seeds: reward gain per wall second, wall time, last-epoch reward and gold."""
    lines = ["", "| RL arm | policy steps | seeds | wall s | reward epoch 1 | reward last | "
                 "gain / s | gold epoch 1 | gold last |", "|---|---|---|---|---|---|---|---|---|"]
    for arm in dict.fromkeys(r["arm"] for r in b):
        rs = [r for r in b if r["arm"] == arm]
        col = lambda f: _ci([f(r) for r in rs])  # noqa: E731
        lines.append(f"| {arm} | {rs[0]['steps']} | {len(rs)} | "
                     f"{col(lambda r: r['curve'][-1]['wall_s'])} | "
                     f"{col(lambda r: r['curve'][0]['reward'])} | "
                     f"{col(lambda r: r['curve'][-1]['reward'])} | "
                     f"{col(lambda r: r['gain_per_s'])} | "
                     f"{col(lambda r: r['curve'][0]['gold'] or 0.0)} | "
                     f"{col(lambda r: r['curve'][-1]['gold'] or 0.0)} |")
    return lines


def table(a: list[dict], b: list[dict]) -> str:
    lines = ["| method | NFE | steps | accuracy | FD | ms/sample |", "|---|---|---|---|---|---|"]
    for r in sorted(a, key=lambda r: (r["method"], r["nfe"])):
        lines.append(f"| {r['method']} | {r['nfe']} | {r['steps']} | {r['accuracy']:.3f} | "
                     f"{r['fd']:.1f} | {r['ms_per_sample']:.2f} |")
    if b:
        lines += rl_summary(b)
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "exp_consistency")
    p.add_argument("--results", type=Path, default=None)
    p.add_argument("--cd", default="pretrained:digits8-cd", help="CD model (run dir or name)")
    p.add_argument("--ct", default=None, help="CT run directory (optional)")
    p.add_argument("--n", type=int, default=500, help="samples per Part A cell")
    p.add_argument("--rl-epochs", type=int, default=6)
    p.add_argument("--rl-seeds", type=int, default=5)
    p.add_argument("--no-rl", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = a.out / ("quick" if a.quick else "full")
    results = a.results or (out / "results" if a.quick else Path(__file__).parent / "results")
    models = {"teacher": "pretrained:digits8", "cd": a.cd}
    if a.ct:
        models["ct"] = a.ct
    for key, path in list(models.items()):
        if not resolve_base_path(path).exists():
            print(f"skipping {key}: {path} not found", file=sys.stderr)
            del models[key]
    nfes, n = ((1, 2), 20) if a.quick else (NFES, a.n)
    rows_a = part_a(out, models, nfes, n)
    rows_b = []
    if not a.no_rl and "cd" in models:
        rows_b = part_b(out, models["cd"], 1 if a.quick else a.rl_epochs,
                        2 if a.quick else 4, 2 if a.quick else 4, 1 if a.quick else a.rl_seeds)
    _write(results / "results.json", {"sampling": rows_a, "rl": rows_b})
    (results / "table.md").write_text(table(rows_a, rows_b))
    print((results / "table.md").read_text())


if __name__ == "__main__":
    main()
