"""Are contractive SDEs the most robust to score error and few steps? [Tang & Zhao 24, CDPM]

One command trains the five SDE families (VE, VP, sub-VP, contractive OU, contractive sub-VP) with
the project's own pretraining loop and identical budgets, then samples each one with injected score
error and with few to many steps, on the 2-D eight-Gaussian ring (sliced Wasserstein) and on 8×8
digits (classifier Fréchet distance and class accuracy):

    OMP_NUM_THREADS=1 .venv/bin/python experiments/cdpm_robustness/run.py [--quick]

Writes ``results.json``, ``results.csv``, ``table.md`` and ``cdpm_robustness.png`` to
``--results`` (default: experiments/cdpm_robustness/results for the full run, OUT/results for
``--quick``); run directories go to ``--out``. A finished training run in ``--out`` is reused
(delete it to retrain), and so
are the measured cells (``OUT/<part>/rows.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import Condition, draw, error_sweep, step_sweep  # noqa: E402
from cdpm_report import write_outputs  # noqa: E402

from scorealign.data import load_digits  # noqa: E402
from scorealign.eval.classifier import load_classifier  # noqa: E402
from scorealign.eval.metrics import digits_metrics, sliced_wasserstein  # noqa: E402
from scorealign.nets import ModelConfig  # noqa: E402
from scorealign.rng import generator  # noqa: E402
from scorealign.sde import GaussianMixture, build_sde  # noqa: E402
from scorealign.sde.transform import TransformedModel  # noqa: E402
from scorealign.commands.pretrain import train_and_export as pretrain  # noqa: E402
from scorealign.train.bases import load_run  # noqa: E402
from scorealign.train.evaluate import balanced_labels  # noqa: E402
from scorealign.train.pretrain import PretrainConfig, TrainConfig  # noqa: E402
from scorealign.run.rundir import RunDir  # noqa: E402
from scorealign.train.task import DataConfig, SDEConfig  # noqa: E402

FAMILIES = ("ve", "vp", "subvp", "cou", "csubvp")
# Contractive families that also run on the VP network through sde/transform.py (no retraining).
REUSED = ("csubvp", "cou")
SEED = 0


@dataclass(frozen=True)
class Part:
    """One data set: network, training budget, samples per condition and the conditions."""

    name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    num_samples: int
    conditions: tuple[Condition, ...]
    oracle: bool  # also sample with the exact mixture score (2-D only)


def parts(quick: bool) -> list[Part]:
    """The 2-D and digits parts (``quick``: tiny budgets, a few conditions)."""
    q = quick
    mlp = ModelConfig(type="mlp", cond="none", kind="eps", hidden=128, depth=3)
    unet = ModelConfig(type="unet", cond="label", kind="eps", sample_size=8,
                       block_out_channels=(32, 64), cfg_dropout=0.0)
    toy_err = {("score", "bias"): [0.03, 0.1, 0.3], ("score", "noise"): [0.5, 2.0, 8.0],
               ("eps", "bias"): [0.05, 0.1, 0.2], ("eps", "noise"): [0.2, 0.5, 1.0]}
    img_err = {("score", "bias"): [0.1], ("score", "noise"): [8.0],
               ("eps", "bias"): [0.05, 0.1], ("eps", "noise"): [1.0]}
    if q:
        toy_err = {k: v[-1:] for k, v in toy_err.items()}
        img_err = {k: v[-1:] for k, v in img_err.items() if k[0] == "eps"}
    toy_cond = step_sweep([5, 10, 20] if q else [5, 10, 20, 50, 100], ["uniform", "karras"]) + \
        error_sweep(toy_err, 20 if q else 50)
    img_cond = step_sweep([10] if q else [10, 20, 30], ["karras"]) + \
        error_sweep(img_err, 10 if q else 20)
    toy_train = TrainConfig(steps=300 if q else 1500, batch_size=256, lr=2e-3, ema_decay=0.995,
                            seed=SEED, log_every=50, ckpt_every=10**9)
    img_train = TrainConfig(steps=40 if q else 400, batch_size=128, lr=2e-3, ema_decay=0.999,
                            seed=SEED, log_every=25, ckpt_every=10**9)
    return [Part("2d", DataConfig(name="gaussians"), mlp, toy_train, 1000 if q else 4000,
                 tuple(toy_cond), oracle=True),
            Part("digits", DataConfig(name="digits", image_size=8), unet, img_train,
                 100 if q else 300, tuple(img_cond), oracle=False)]


def train_family(part: Part, family: str, out: Path):
    """Pretrain ``family`` with the project's DSM loop (a finished run is reused)."""
    run_path = out / part.name / family
    if not (run_path / "final" / "model.safetensors").is_file():
        cfg = PretrainConfig(data=part.data, sde=SDEConfig(name=family), model=part.model,
                             train=replace(part.train, ckpt_every=part.train.steps), device="cpu")
        t0 = time.time()
        pretrain(cfg, RunDir.create(run_path, cfg))
        print(f"[{part.name}] trained {family} in {time.time() - t0:.0f} s", flush=True)
    _, task, model = load_run(run_path)
    return task, model


def models(part: Part, out: Path) -> tuple[dict, object]:
    """name → (pred_fn factory(cond), kind, sde): trained families, VP reuse, oracle."""
    table, task = {}, None
    for fam in FAMILIES:
        task, net = train_family(part, fam, out)
        table[fam] = (lambda c, net=net: (lambda x, t: net(x, t, c)), "eps", task.sde)
        if fam == "vp":
            vp_net, vp_sde = net, task.sde
    for fam in REUSED:
        sde = build_sde(fam)
        reused = TransformedModel(vp_net, vp_sde, sde)
        table[f"{fam}<-vp"] = (lambda c, m=reused: (lambda x, t: m(x, t, c)), "eps", sde)
    if part.oracle:
        mix = GaussianMixture.ring(8, radius=2.0, std=0.2)  # data.toys 'gaussians' defaults
        for fam in FAMILIES:
            sde = build_sde(fam)
            table[f"{fam}:exact"] = (lambda c, f=mix.pred_fn(sde, "eps"): f, "eps", sde)
    return table, task


class RowCache:
    """Rows already measured in ``OUT/<part>/rows.jsonl``: a re-run only adds missing cells."""

    def __init__(self, out: Path, part: str):
        self.path = out / part / "rows.jsonl"
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        self.rows = {(r["model"], r["condition"]): r for r in map(json.loads, lines)}

    def get(self, model: str, cond: Condition, measure) -> dict:
        """The cached row of (model, cond), else ``measure()``, appended to the cache."""
        if (model, cond.name) not in self.rows:
            row = measure()
            self.rows[(model, cond.name)] = row
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        return self.rows[(model, cond.name)]


def evaluate_2d(part: Part, table: dict, cache: RowCache) -> list[dict]:
    """Sliced W2 to fresh data for every model × condition (plus the data-vs-data floor)."""
    n = part.num_samples
    mix = GaussianMixture.ring(8, radius=2.0, std=0.2)
    ref = mix.sample(n, generator(SEED, "cdpm/ref"))
    proj = lambda: generator(SEED, "cdpm/proj")  # noqa: E731  (same directions everywhere)
    floor = sliced_wasserstein(mix.sample(n, generator(SEED, "cdpm/ref2")), ref, proj())
    rows = [{"part": part.name, "model": "data", "condition": "floor", "sw2": floor}]
    for name, (factory, kind, sde) in table.items():
        for cond in part.conditions:
            def measure(factory=factory, kind=kind, sde=sde, cond=cond, name=name):
                x = draw(factory(None), kind, sde, (n, 2), cond, SEED)
                ok = bool(torch.isfinite(x).all())
                sw = sliced_wasserstein(x, ref, proj()) if ok else float("nan")
                return {"part": part.name, "model": name, "condition": cond.name, **asdict(cond),
                        "sw2": sw}
            rows.append(cache.get(name, cond, measure))
        print(f"[2d] {name}: done", flush=True)
    return rows


def evaluate_digits(part: Part, table: dict, task, cache: RowCache) -> list[dict]:
    """Classifier Fréchet distance / accuracy of class-conditional samples (balanced labels)."""
    n = part.num_samples
    clf = load_classifier(size=8)
    real = load_digits("test", size=8, seed=part.data.split_seed).images
    labels = balanced_labels(n)
    floor = digits_metrics(clf, load_digits("train", size=8).images[:n], None, real)
    rows = [{"part": part.name, "model": "data", "condition": "floor", "fd": floor["eval/fd"]}]
    for name, (factory, kind, sde) in table.items():
        for cond in part.conditions:
            def measure(factory=factory, kind=kind, sde=sde, cond=cond, name=name):
                x = draw(factory(task.cond_for(labels)), kind, sde, (n, 1, 8, 8), cond, SEED)
                finite = float(torch.isfinite(x).flatten(1).all(1).float().mean())
                m = digits_metrics(clf, torch.nan_to_num(x, nan=0.0).clamp(-1, 1), labels, real)
                return {"part": part.name, "model": name, "condition": cond.name, **asdict(cond),
                        "fd": m["eval/fd"], "accuracy": m["eval/accuracy"], "finite": finite}
            rows.append(cache.get(name, cond, measure))
        print(f"[digits] {name}: done", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets (a few minutes)")
    ap.add_argument("--out", type=Path, default=None, help="run directories (default runs/...)")
    ap.add_argument("--results", type=Path, default=None, help="where results/figure go")
    ap.add_argument("--parts", default="2d,digits", help="comma list of 2d, digits")
    args = ap.parse_args(argv)
    out = args.out or Path("runs") / ("cdpm_robustness_quick" if args.quick else "cdpm_robustness")
    results = args.results or (out / "results" if args.quick
                               else Path(__file__).resolve().parent / "results")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows, timing = [], {}
    for part in parts(args.quick):
        if part.name not in args.parts.split(","):
            continue
        t0 = time.time()
        table, task = models(part, out)
        cache = RowCache(out, part.name)
        rows += evaluate_2d(part, table, cache) if part.name == "2d" else \
            evaluate_digits(part, table, task, cache)
        timing[part.name] = round(time.time() - t0, 1)
    meta = {"quick": args.quick, "families": FAMILIES,
            "seconds_this_invocation_cached_cells_reused": timing,
            "train": {p.name: asdict(p.train) for p in parts(args.quick)},
            "num_samples": {p.name: p.num_samples for p in parts(args.quick)}}
    write_outputs(rows, meta, results)
    print(json.dumps(timing), "->", results)


if __name__ == "__main__":
    main()
