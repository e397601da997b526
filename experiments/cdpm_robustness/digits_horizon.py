"""Digits at the horizon each SDE family trains best with, same budget [Tang & Zhao 24, CDPM].

    OMP_NUM_THREADS=1 .venv/bin/python experiments/cdpm_robustness/digits_horizon.py [--quick]

Every family (VE, VP, sub-VP, contractive OU, contractive sub-VP) is trained with the project's
pretraining loop (``scorealign.train.pretrain``) on 8×8 digits with the same small class-
conditional UNet, steps, batch, learning rate and per-seed batches, at each horizon of a small
grid (the horizon knob per family in ``HORIZONS``: T for VP, sub-VP and CsubVP, whose β(t)
schedule then spans a longer time; θ for COU at T = 1; σ_max for VE, where T alone is only a
time change). The horizon is picked per family on a tuning seed never reported (``TUNE_SEED``,
lowest classifier Fréchet distance), the grid widened geometrically while the pick sits at an
edge (``experiments/_selection.py``: ``tune_grid``, at most ``MAX_WIDEN`` times within
``LIMITS``); then every family is retrained at its pick on the reported seeds 0..N_SEEDS−1 (the
same seeds for every family: paired) and scored on class-balanced samples of the Euler–Maruyama
reverse SDE (η = 1, 20 Karras steps, prior start): classifier FD to the test split and class
accuracy, mean and 95 % t-interval over seeds; every pair of families is compared with a paired
t-interval over seeds (Welch beside it), Holm's correction across all pairs and both metrics.

Cells (one training run + its evaluation) are cached one JSON each in ``<out>/cells/``; the run
directories go to ``--runs``. A stopped run continues; ``--table-only`` rebuilds the outputs.
Writes ``results.json`` (per-seed rows, tuning rows, the selection record, paired claims), ``rows.csv``,
``table.md`` and ``digits_horizon.png`` to ``<out>`` (default ``results/digits_horizon``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import _selection as sel  # noqa: E402
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

# family → (horizon parameter, starting grid); the middle value is the registered default. The
# grid is widened geometrically while the pick sits at an edge (``_selection.tune_grid``).
HORIZONS = {"ve": ("sigma_max", (12.5, 50.0, 200.0)),
            "vp": ("T", (0.5, 1.0, 2.0)),
            "subvp": ("T", (0.5, 1.0, 2.0)),
            "cou": ("theta", (0.5, 1.0, 2.0)),
            "csubvp": ("T", (0.5, 1.0, 1.5))}
TUNE_SEED = 100  # the tuning seed, never reported (``_selection.split``)
N_SEEDS = 10  # reported seeds 0..9, the same for every family (paired: same batches and noise)
MAX_WIDEN = 3
# the widened knob stays where the family is defined (CsubVP's ∫g² explodes beyond T ≈ 2)
LIMITS = {"ve": (0.5, 1e4), "vp": (0.05, 4.0), "subvp": (0.05, 4.0), "cou": (0.05, 8.0),
          "csubvp": (0.05, 2.0)}
SELECTION = ("min classifier FD on the tuning seed (max −FD; no gold floor), the grid widened "
             "geometrically while the pick sits at an edge")


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


@lru_cache(maxsize=1)
def judge_tag() -> str:
    """First 8 hex digits of the SHA-256 of the judging classifier's weights.

    The classifier is trained on first use and cached per machine; a retrained one (another
    machine, another torch build) scores the same samples differently (the data-vs-data FD floor
    moved from 61.1 to 56.5 between two of them), so cells judged by different classifiers must
    never be compared: the tag is part of every cell's name.
    """
    sd = load_classifier(size=8).state_dict()
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def cell_key(budget: Budget, family: str, h: float, seed: int) -> str:
    """Cell name; the budget and the judge (:func:`judge_tag`) are part of it, so a changed
    budget or another classifier never reuses a cell."""
    return (f"{family}_{HORIZONS[family][0]}={h:g}_seed={seed}_b{budget.steps}x{budget.batch}"
            f"_n{budget.samples}_k{budget.sampler_steps}_j{judge_tag()}")


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


def tune_family(family: str, grid: tuple, cell, max_widen: int) -> sel.Tuned:
    """Horizon of one family on the tuning seed: lowest FD, widened while at an edge.
    ``cell(family, h, seed)`` returns the cell (None when missing: LookupError)."""
    def score(h: float) -> dict:
        r = cell(family, h, TUNE_SEED)
        if r is None:
            raise LookupError(f"{family} {h:g}: tuning cell missing")
        return {"reward": -r["fd"], "fd": r["fd"], "accuracy": r["accuracy"]}

    return sel.tune_grid(grid, score, max_widen=max_widen, geometric=True,
                         limits=LIMITS[family])


def claims(rows: list[dict], families) -> dict:
    """Every pair of families, FD and accuracy, paired by seed (the same seed gives the same
    batches and noise draws); Welch beside; Holm across all of them."""
    by = {(r["family"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out, pvals = {}, {}
    fams = [f for f in families if any(r["family"] == f for r in rows)]
    for i, a in enumerate(fams):
        for b in fams[i + 1:]:
            common = [s for s in seeds if (a, s) in by and (b, s) in by]
            if len(common) < 2:
                continue
            for key in ("fd", "accuracy"):
                xa = [by[(a, s)][key] for s in common]
                xb = [by[(b, s)][key] for s in common]
                # metric first: "vp − cou" is a substring of "subvp − cou", "FD: vp − cou"
                # is not of "FD: subvp − cou" (a doc cites a row by a substring of it)
                name = f"{'FD' if key == 'fd' else 'accuracy'}: {a} − {b}"
                out[name] = {"key": key, "paired": sel.paired_interval(xa, xb),
                             "welch": sel.welch_interval(xa, xb)}
                pvals[name] = out[name]["paired"]["p"]
    holm = sel.holm(pvals)
    for name, c in out.items():
        c["holm"] = holm[name]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="test size: 2 families, 2 horizons")
    ap.add_argument("--out", type=Path, default=None, help="cells and results")
    ap.add_argument("--runs", type=Path, default=None, help="training run directories")
    ap.add_argument("--table-only", action="store_true", help="only rebuild from cached cells")
    ap.add_argument("--seeds", type=int, default=None, help="reported seeds (default 10)")
    ap.add_argument("--worker", default="0/1", help="i/n: tune every n-th family and train "
                    "every n-th reported cell, from the i-th (waits for the others' tuning)")
    args = ap.parse_args(argv)
    budget = QUICK if args.quick else FULL
    out = args.out or HERE / "results" / ("digits_horizon_quick" if args.quick
                                          else "digits_horizon")
    runs = args.runs or Path("runs") / ("cdpm_digits_horizon" + ("_quick" if args.quick else ""))
    families = ("vp", "cou") if args.quick else tuple(HORIZONS)
    grid = {f: HORIZONS[f][1][:2] if args.quick else HORIZONS[f][1] for f in families}
    split = sel.split(args.seeds or (2 if args.quick else N_SEEDS), 1, tuning_offset=TUNE_SEED)
    seeds = split.reported_seeds
    max_widen = 1 if args.quick else MAX_WIDEN
    torch.set_num_threads(1)
    wi, wn = map(int, args.worker.split("/"))
    path = lambda f, h, s: out / "cells" / f"{cell_key(budget, f, h, s)}.json"  # noqa: E731

    def wait(f: str, h: float, s: int) -> dict:  # another worker's cell
        while not path(f, h, s).is_file():
            time.sleep(5)
        return _read(path(f, h, s))

    chosen = {}
    for own in (True, False):  # a worker tunes its own families, then waits for the others'
        for i, f in enumerate(families):
            if (i % wn == wi) != own:
                continue
            cell = (lambda f, h, s: _read(path(f, h, s))) if args.table_only else (
                (lambda f, h, s: run_cell(out, runs, budget, f, h, s)) if own else wait)
            try:
                chosen[f] = tune_family(f, grid[f], cell, max_widen)
            except LookupError as e:
                print(f"tuning incomplete: {e}")
    chosen = {f: chosen[f] for f in families if f in chosen}
    picked = {f: t.pick for f, t in chosen.items() if t.pick is not None}
    tuning = [r for f, t in chosen.items() for h in t.grid if (r := _read(path(f, h, TUNE_SEED)))]
    jobs = [(f, picked[f], s) for s in seeds for f in families if f in picked]
    if not args.table_only:  # seed-major: a stopped run has whole seeds
        for j, (f, h, s) in enumerate(jobs):
            if j % wn == wi:
                run_cell(out, runs, budget, f, h, s)
    rows = [r for f, h, s in jobs if (r := _read(path(f, h, s)))]
    real = load_digits("test", size=8).images
    floor = digits_metrics(load_classifier(size=8), load_digits("train", size=8).images[
        :budget.samples], None, real)["eval/fd"]
    write_outputs(out, rows, tuning, chosen, budget, families, floor, split, max_widen)
    cpu = sum(r.get("cpu_s", 0.0) for r in rows + tuning)
    print(f"{len(tuning)} tuning + {len(rows)} evaluation cells, {cpu:.0f} CPU-s -> {out}")


def _read(p: Path) -> dict | None:
    return json.loads(p.read_text()) if p.is_file() else None


def write_outputs(out: Path, rows: list[dict], tuning: list[dict], chosen: dict,
                  budget: Budget, families, floor: float, split: sel.Split,
                  max_widen: int = MAX_WIDEN) -> None:
    """results.json, rows.csv, table.md and the figure; ``floor``: FD of as many training
    images as samples (the data-vs-data floor of the metric at this sample size)."""
    picked = {f: t.pick for f, t in chosen.items() if t.pick is not None}
    summary = {}
    for f in families:
        rs = [r for r in rows if r["family"] == f]
        if rs:
            fd, fd_h = ci95(r["fd"] for r in rs)
            acc, acc_h = ci95(r["accuracy"] for r in rs)
            summary[f] = {"horizon": picked[f], "fd": fd, "fd_ci95": fd_h, "accuracy": acc,
                          "accuracy_ci95": acc_h, "n": len(rs)}
    cl = claims(rows, families)
    complete = (set(picked) == set(families)
                and all(summary.get(f, {}).get("n") == len(split.reported_seeds)
                        for f in families))
    out.mkdir(parents=True, exist_ok=True)
    meta = {"budget": budget.__dict__, "tune_seed": TUNE_SEED, "horizons": HORIZONS,
            "fd_floor_data_vs_data": floor,
            "sampler": f"euler_maruyama eta=1, {budget.sampler_steps} karras steps, prior start"}
    (out / "results.json").write_text(json.dumps(
        {**meta, "status": "complete" if complete else "PARTIAL", "picked": picked,
         "selection": sel.record(chosen, selection=SELECTION, split_=split),
         "summary": summary, "claims": cl, "rows": rows, "tuning": tuning}, indent=1))
    keys = ["family", "knob", "horizon", "seed", "fd", "accuracy", "finite", "int_g2", "nsr_T",
            "cpu_s"]
    with open(out / "rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows({k: r.get(k) for k in keys} for r in tuning + rows)
    (out / "table.md").write_text(table(summary, tuning, chosen, cl, budget, families, floor,
                                        split, complete, max_widen))
    plot(rows, tuning, summary, families, out / "digits_horizon.png")


def _pm(m: float, h: float, fmt: str) -> str:
    return f"{m:{fmt}}" if h != h else f"{m:{fmt}} ± {h:{fmt}}"


def table(summary: dict, tuning: list[dict], chosen: dict, cl: dict, budget: Budget, families,
          floor: float, split: sel.Split, complete: bool, max_widen: int = MAX_WIDEN) -> str:
    n = max((s["n"] for s in summary.values()), default=0)
    cpu = sum(r.get("cpu_s", 0.0) for r in tuning) / 60
    lines = [f"Status: {'complete' if complete else 'PARTIAL (cells missing)'}.", "",
             f"Same budget for every family: UNet {budget.widths}, {budget.steps} steps × "
             f"{budget.batch}, lr 2e-3, EMA 0.99; {budget.samples} class-balanced samples, "
             f"Euler–Maruyama η = 1, {budget.sampler_steps} Karras steps from the prior. "
             f"Mean ± 95 % t-interval over {n} reported seeds (0–{n - 1}); horizon picked on "
             f"the tuning seed {TUNE_SEED} (never reported). FD of {budget.samples} training "
             f"images (data-vs-data floor): {floor:.1f}.", "",
             "| family | horizon (edge?) | ∫g² | s/m at T | FD ↓ | accuracy ↑ |",
             "|---|---|---|---|---|---|"]
    for f in families:
        if f not in summary:
            continue
        s = summary[f]
        st = next(r for r in tuning if r["family"] == f and r["horizon"] == s["horizon"])
        edge = "edge" if chosen[f].edge else "interior"
        lines.append(f"| {f} | {HORIZONS[f][0]} = {s['horizon']:g} ({edge}) | "
                     f"{st['int_g2']:.3g} | {st['nsr_T']:.3g} | "
                     f"{_pm(s['fd'], s['fd_ci95'], '.1f')} | "
                     f"{_pm(s['accuracy'], s['accuracy_ci95'], '.3f')} |")
    lines += ["", "## Claims", "",
              "Every pair of families, paired by seed (the same seed: the same batches and "
              "noise draws); paired t-interval 95 % with Welch beside it; Holm's step-down "
              f"correction across all {len(cl)} claims (FWER 0.05). Negative FD difference: "
              "the first family has the lower FD.", "",
              *sel.claims_table(cl, digits=lambda c: ".1f" if c["key"] == "fd" else ".3f")]
    lines += ["", f"## Horizon selection (tuning seed {TUNE_SEED}; {cpu:.1f} CPU-min)", "",
              f"Rule: {SELECTION} (at most {max_widen} times, within the family's limits "
              f"{LIMITS}); `edge: True` if the pick is still at an edge.", "",
              "| family | knob | horizon: FD / accuracy | pick | edge | widened | note |",
              "|---|---|---|---|---|---|---|"]
    for f in families:
        if f not in chosen:
            continue
        t = chosen[f]
        rs = sorted((r for r in tuning if r["family"] == f), key=lambda r: r["horizon"])
        vals = "; ".join(f"{r['horizon']:g}: {r['fd']:.1f} / {r['accuracy']:.2f}" for r in rs)
        lines.append(f"| {f} | {HORIZONS[f][0]} | {vals} | {t.pick:g} | {t.edge} | "
                     f"{t.widened} | {t.reason} |")
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
    a.set_xlabel("grid position (low → high horizon; the grid widened at an edge)")
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
