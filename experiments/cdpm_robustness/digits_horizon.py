"""Digits at the horizon each SDE family trains best with, same budget [Tang & Zhao 24, CDPM].

    OMP_NUM_THREADS=1 .venv/bin/python experiments/cdpm_robustness/digits_horizon.py [--quick]

Every family (VE, VP, sub-VP, contractive OU, contractive sub-VP) is trained with the project's
pretraining loop (``scorealign.train.pretrain``) on 8×8 digits with the same small class-
conditional UNet, steps, batch, learning rate and per-seed batches, at each horizon of a small
grid (the horizon knob per family in ``HORIZONS``: T for VP, sub-VP and CsubVP, whose β(t)
schedule then spans a longer time; θ for COU at T = 1; σ_max for VE, where T alone is only a
time change). The horizon is picked per family on a separate seed (``TUNE_SEED``, lowest
classifier Fréchet distance), then every family is retrained at its picked horizon on the
evaluation seeds and scored on class-balanced samples of the Euler–Maruyama reverse SDE (η = 1,
20 Karras steps, prior start): classifier FD to the test split and class accuracy, mean
and 95 % t-interval over seeds.

Cells (one training run + its evaluation) are cached one JSON each in ``<out>/cells/``; the run
directories go to ``--runs``. A stopped run continues; ``--table-only`` rebuilds the outputs.
Writes ``results.json`` (per-seed rows, tuning rows, picks, intervals), ``rows.csv``,
``table.md`` and ``digits_horizon.png`` to ``<out>`` (default ``results/digits_horizon``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _cells import cached, ci95  # noqa: E402
from conditions import Condition, draw  # noqa: E402

from scorealign.data import load_digits  # noqa: E402
from scorealign.eval.classifier import load_classifier  # noqa: E402
from scorealign.eval.metrics import digits_metrics  # noqa: E402
from scorealign.nets import ModelConfig  # noqa: E402
from scorealign.sde import build_sde  # noqa: E402
from scorealign.commands.pretrain import train_and_export as pretrain  # noqa: E402
from scorealign.train.bases import load_run  # noqa: E402
from scorealign.train.evaluate import balanced_labels  # noqa: E402
from scorealign.train.pretrain import PretrainConfig, TrainConfig  # noqa: E402
from scorealign.run.rundir import RunDir  # noqa: E402
from scorealign.train.task import DataConfig, SDEConfig  # noqa: E402

# family → (horizon parameter, grid); the middle value is the registered default.
HORIZONS = {"ve": ("sigma_max", (12.5, 50.0, 200.0)),
            "vp": ("T", (0.5, 1.0, 2.0)),
            "subvp": ("T", (0.5, 1.0, 2.0)),
            "cou": ("theta", (0.5, 1.0, 2.0)),
            "csubvp": ("T", (0.5, 1.0, 1.5))}
TUNE_SEED = 100
SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Budget:
    """Training and evaluation size shared by every cell."""

    steps: int
    batch: int
    samples: int
    sampler_steps: int
    widths: tuple[int, ...]


# Sized for ~10 CPU-s per training run on one core (30 runs: ~15 CPU-min with the evaluation).
FULL = Budget(steps=150, batch=64, samples=200, sampler_steps=20, widths=(16, 32))
QUICK = Budget(steps=6, batch=16, samples=40, sampler_steps=4, widths=(8, 16))


def sde_config(family: str, h: float) -> SDEConfig:
    return SDEConfig(name=family, params={HORIZONS[family][0]: h})


def horizon_stats(family: str, h: float) -> dict:
    """∫g² over [0, T] and the noise-to-signal ratio s/m at T of the family at horizon h."""
    sde = build_sde(family, **sde_config(family, h).params)
    T = float(sde.t_max)
    t = torch.linspace(0.0, T, 4001, dtype=torch.float64)
    g2 = sde.diffusion(t) ** 2
    int_g2 = float(torch.trapezoid(g2, t))
    m = sde.marginal(torch.tensor(T, dtype=torch.float64))
    return {"int_g2": int_g2, "nsr_T": float(m.std / m.mean_coef), "T": T}


def cell_key(budget: Budget, family: str, h: float, seed: int) -> str:
    """Cell name; the budget is part of it, so a changed budget never reuses a cell."""
    return (f"{family}_{HORIZONS[family][0]}={h:g}_seed={seed}_b{budget.steps}x{budget.batch}"
            f"_n{budget.samples}_k{budget.sampler_steps}")


def run_cell(out: Path, runs: Path, budget: Budget, family: str, h: float, seed: int) -> dict:
    """Train ``family`` at horizon ``h`` on ``seed`` and score its samples (cached)."""
    key = cell_key(budget, family, h, seed)

    def compute() -> dict:
        run_path = runs / key
        if run_path.exists():  # an interrupted training run: start it again
            shutil.rmtree(run_path)
        model = ModelConfig(type="unet", cond="label", kind="eps", sample_size=8,
                            block_out_channels=budget.widths, cfg_dropout=0.0,
                            norm_num_groups=8)
        train = TrainConfig(steps=budget.steps, batch_size=budget.batch, lr=2e-3,
                            warmup_steps=max(1, budget.steps // 10), ema_decay=0.99, seed=seed,
                            log_every=max(1, budget.steps // 4), ckpt_every=budget.steps)
        cfg = PretrainConfig(data=DataConfig(name="digits", image_size=8),
                             sde=sde_config(family, h), model=model, train=train, device="cpu")
        pretrain(cfg, RunDir.create(run_path, cfg))
        _, task, net = load_run(run_path)
        n = budget.samples
        labels = balanced_labels(n)
        cond = task.cond_for(labels)
        c = Condition(steps=budget.sampler_steps, grid="karras")
        with torch.no_grad():
            x = draw(lambda x, t: net(x, t, cond), "eps", task.sde, (n, 1, 8, 8), c, seed)
        finite = float(torch.isfinite(x).flatten(1).all(1).float().mean())
        x = torch.nan_to_num(x, nan=0.0).clamp(-1, 1)
        real = load_digits("test", size=8).images
        m = digits_metrics(load_classifier(size=8), x, labels, real)
        return {"family": family, "knob": HORIZONS[family][0], "horizon": h, "seed": seed,
                "fd": m["eval/fd"], "accuracy": m["eval/accuracy"], "finite": finite,
                **horizon_stats(family, h)}

    return cached(out / "cells" / f"{key}.json", compute, cpu_key="cpu_s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="test size: 2 families, 2 horizons")
    ap.add_argument("--out", type=Path, default=None, help="cells and results")
    ap.add_argument("--runs", type=Path, default=None, help="training run directories")
    ap.add_argument("--table-only", action="store_true", help="only rebuild from cached cells")
    ap.add_argument("--seeds", type=int, default=None, help="evaluation seeds (default 5)")
    args = ap.parse_args(argv)
    budget = QUICK if args.quick else FULL
    out = args.out or HERE / "results" / ("digits_horizon_quick" if args.quick
                                          else "digits_horizon")
    runs = args.runs or Path("runs") / ("cdpm_digits_horizon" + ("_quick" if args.quick else ""))
    families = ("vp", "cou") if args.quick else tuple(HORIZONS)
    grid = {f: HORIZONS[f][1][:2] if args.quick else HORIZONS[f][1] for f in families}
    seeds = SEEDS[:args.seeds or (2 if args.quick else len(SEEDS))]
    torch.set_num_threads(1)
    cell = (lambda f, h, s: run_cell(out, runs, budget, f, h, s)) if not args.table_only else \
        (lambda f, h, s: _read(out / "cells" / f"{cell_key(budget, f, h, s)}.json"))
    tuning = [r for f in families for h in grid[f] if (r := cell(f, h, TUNE_SEED))]
    picked = {}
    for f in families:
        rs = [r for r in tuning if r["family"] == f]
        if len(rs) == len(grid[f]):
            picked[f] = min(rs, key=lambda r: r["fd"])["horizon"]
    rows = [r for s in seeds for f in families if f in picked
            if (r := cell(f, picked[f], s))]
    real = load_digits("test", size=8).images
    floor = digits_metrics(load_classifier(size=8), load_digits("train", size=8).images[
        :budget.samples], None, real)["eval/fd"]
    write_outputs(out, rows, tuning, picked, budget, families, floor)
    cpu = sum(r.get("cpu_s", 0.0) for r in rows + tuning)
    print(f"{len(tuning)} tuning + {len(rows)} evaluation cells, {cpu:.0f} CPU-s -> {out}")


def _read(p: Path) -> dict | None:
    return json.loads(p.read_text()) if p.is_file() else None


def write_outputs(out: Path, rows: list[dict], tuning: list[dict], picked: dict,
                  budget: Budget, families, floor: float) -> None:
    """results.json, rows.csv, table.md and the figure; ``floor``: FD of as many training
    images as samples (the data-vs-data floor of the metric at this sample size)."""
    summary = {}
    for f in families:
        rs = [r for r in rows if r["family"] == f]
        if rs:
            fd, fd_h = ci95(r["fd"] for r in rs)
            acc, acc_h = ci95(r["accuracy"] for r in rs)
            summary[f] = {"horizon": picked[f], "fd": fd, "fd_ci95": fd_h, "accuracy": acc,
                          "accuracy_ci95": acc_h, "n": len(rs)}
    out.mkdir(parents=True, exist_ok=True)
    meta = {"budget": budget.__dict__, "tune_seed": TUNE_SEED, "horizons": HORIZONS,
            "fd_floor_data_vs_data": floor,
            "sampler": f"euler_maruyama eta=1, {budget.sampler_steps} karras steps, prior start"}
    (out / "results.json").write_text(json.dumps(
        {**meta, "picked": picked, "summary": summary, "rows": rows, "tuning": tuning},
        indent=1))
    keys = ["family", "knob", "horizon", "seed", "fd", "accuracy", "finite", "int_g2", "nsr_T",
            "cpu_s"]
    with open(out / "rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows({k: r.get(k) for k in keys} for r in tuning + rows)
    (out / "table.md").write_text(table(summary, tuning, budget, families, floor))
    plot(rows, tuning, summary, families, out / "digits_horizon.png")


def _pm(m: float, h: float, fmt: str) -> str:
    return f"{m:{fmt}}" if h != h else f"{m:{fmt}} ± {h:{fmt}}"


def table(summary: dict, tuning: list[dict], budget: Budget, families, floor: float) -> str:
    n = max((s["n"] for s in summary.values()), default=0)
    lines = [f"Same budget for every family: UNet {budget.widths}, {budget.steps} steps × "
             f"{budget.batch}, lr 2e-3, EMA 0.99; {budget.samples} class-balanced samples, "
             f"Euler–Maruyama η = 1, {budget.sampler_steps} Karras steps from the prior. "
             f"Mean ± 95 % t-interval over {n} seeds; horizon picked on seed {TUNE_SEED}. "
             f"FD of {budget.samples} training images (data-vs-data floor): {floor:.1f}.", "",
             "| family | horizon | ∫g² | s/m at T | FD ↓ | accuracy ↑ |",
             "|---|---|---|---|---|---|"]
    for f in families:
        if f not in summary:
            continue
        s = summary[f]
        st = next(r for r in tuning if r["family"] == f and r["horizon"] == s["horizon"])
        lines.append(f"| {f} | {HORIZONS[f][0]} = {s['horizon']:g} | {st['int_g2']:.3g} | "
                     f"{st['nsr_T']:.3g} | {_pm(s['fd'], s['fd_ci95'], '.1f')} | "
                     f"{_pm(s['accuracy'], s['accuracy_ci95'], '.3f')} |")
    lines += ["", f"Horizon sweep on the tuning seed {TUNE_SEED} (one seed: FD / accuracy):", "",
              "| family | knob | " + " | ".join(["low", "registered", "high"]) + " |",
              "|---|---|---|---|---|"]
    for f in families:
        rs = sorted((r for r in tuning if r["family"] == f), key=lambda r: r["horizon"])
        vals = [f"{r['horizon']:g}: {r['fd']:.1f} / {r['accuracy']:.2f}" for r in rs]
        lines.append(f"| {f} | {HORIZONS[f][0]} | " + " | ".join(vals + ["–"] * (3 - len(vals)))
                     + " |")
    return "\n".join(lines) + "\n"


def plot(rows, tuning, summary, families, path: Path) -> None:
    """Left: FD against the horizon on the tuning seed; right: seeds and 95 % CI at the pick."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, f in enumerate(families):
        rs = sorted((r for r in tuning if r["family"] == f), key=lambda r: r["horizon"])
        a.plot(range(len(rs)), [r["fd"] for r in rs], "o-", color=f"C{i}", label=f)
        fd = [r["fd"] for r in rows if r["family"] == f]
        b.plot([i] * len(fd), fd, "o", ms=3, alpha=0.5, color=f"C{i}")
        if f in summary:
            s = summary[f]
            h = 0.0 if s["fd_ci95"] != s["fd_ci95"] else s["fd_ci95"]
            b.errorbar([i + 0.15], [s["fd"]], yerr=[h], fmt="s", color=f"C{i}", capsize=3)
    a.set_xticks([0, 1, 2], ["low", "registered", "high"])
    a.set_ylabel("classifier FD (tuning seed)")
    a.set_yscale("log")
    a.legend(fontsize=7)
    b.set_xticks(range(len(families)),
                 [f"{f}\n{HORIZONS[f][0]}={summary[f]['horizon']:g}" if f in summary else f
                  for f in families], fontsize=7)
    b.set_ylabel("classifier FD at the picked horizon")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
