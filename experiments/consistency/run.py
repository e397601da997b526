"""Consistency models on 8×8 digits: quality and CPU cost against network calls (Part A), and
few-step RL against the 10-step teacher (Part B).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/consistency/run.py [--quick]
        [--part a|b|both] [--arm cm_2step|teacher_10step] [--table-only]

Part A (sampling). Class accuracy (project classifier) and Fréchet distance (its features, real
test split) of ``--n`` samples with balanced labels and the same sampling seed, against network
calls NFE ∈ {1, 2, 4, 8}, with the process CPU time per sample (``time.process_time``, one
thread; the machine is shared, so CPU time, not wall time, is the cost):

* ``teacher/ddim``: the shipped digits8 (eps, VP), DDIM η = 0, S = NFE steps, CFG 2 (each
  network call evaluates 2 rows per sample);
* ``teacher/heun``: EDM's Heun (Karras+22 Alg. 1), S = NFE/2 steps, Karras grid, CFG 2;
* ``teacher/dpm2m``: DPM-Solver++(2M) (Lu+22b Alg. 2, ``dpm.py``), S = NFE steps, λ-uniform
  grid, CFG 2;
* ``cd``: the shipped recipe (configs/pretrain/digits_cd_ect.yaml: ECT pairs, v student, 500
  steps of batch 16) trained with seeds 0, 1, 2 (study.py arm ``cd_ship``; seed 0 is
  ``pretrained:digits8-cd``, checked byte for byte), S = NFE multistep consistency steps (Song+23
  Alg. 1, Karras grid, η = 0), no CFG;
* ``ct_ect``: ECT proper (configs/pretrain/digits_ct_ect.yaml: CT from the diffusion model, no
  teacher in the loss) at the same budget, seeds 0, 1, 2 (arm ``ct_ect_ship``);
* ``ct_scratch``: CT from scratch with ECT's pairs (arm ``ct_scratch_ect``) at ``--scratch-steps``
  of ``--scratch-batch``, seed 0.

Students are reported as mean ± 95 % t-interval over their training seeds.

Part B (RL). LOOP [Gupta+25] with the project's current RL code: rewards on samples clamped to
[−1, 1] (``reward.clamp``), PPO clip 1e-4 on per-dimension log-probs (``algo.ratio_units:
per_dim``; DDPO's ``train.clip_range``), KL β = 1e-4 to the base (the demo's), ``policy
.action_steps: auto`` (the final step is a deterministic denoising step), 2 minibatches per
epoch (the second is off-policy, so the clip can bind). Arms, equal prompts, rollouts, epochs
and updates:

* ``cm_2step``: the CD model (``--cd``) as a 2-step consistency policy, η = 1
  (configs/finetune/digits_cm_loop.yaml);
* ``teacher_10step``: digits8 with 10-step DDIM η = 1, CFG 2 (configs/finetune/demo.yaml).

A fixed evaluation set (``EVAL_N`` prompts, balanced; x_T from seeds derived from the split's
draw seed) is sampled with each policy's own sampler at η = 0 before training, at E/2 and at E.
The learning rate of each arm is chosen on tuning seeds and tuning draws never reported
(experiments/_selection.py: ``split``, ``tune_grid`` widening geometrically while the pick sits
at an edge, gold floor ``GOLD_FLOOR``); then ``--seeds`` reported seeds run at the chosen lr on
the reported draws. Claims (paired by seed, t-intervals, Holm across the claims): CPU seconds,
reward gain (final − base eval reward) and final gold, 2-step policy − teacher.

Every cell is cached (experiments/_cells.py): Part A ``OUT/cells/*.json``, Part B
``OUT/rl/*.json``; study.py's training cells and runs under ``--study-out``. Outputs
``results.json`` and ``table.md`` go to ``--results`` (default experiments/consistency/results,
or OUT/results with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # experiments/: _cells, _selection
sys.path.insert(0, str(HERE))  # dpm.py, study.py (also when imported by a test)

import _selection as sel  # noqa: E402
from _cells import cached, ci95, write_json  # noqa: E402

NFES = (1, 2, 4, 8)
EVAL_N = 64            # fixed evaluation set of Part B (prompts 'digit k' balanced)
GOLD_FLOOR = 0.95      # selection: mean final eval gold (prompted-digit probability) ≥ this
LR_GRID = (3e-5, 1e-4, 3e-4)
ARMS = {"cm_2step": ("configs/finetune/digits_cm_loop.yaml", "cd"),
        "teacher_10step": ("configs/finetune/demo.yaml", None)}


# -- helpers kept for study.py ----------------------------------------------------------------
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


def _ci(values: list[float]) -> str:
    """mean ± 95% interval (t quantile) of per-seed values."""
    m, h = ci95(values)
    return f"{m:.3g}" if not math.isfinite(h) else f"{m:.3g} ± {h:.2g}"


# -- Part A -----------------------------------------------------------------------------------
def measure(task, model, cfg, clf, real, dpm: bool = False) -> dict:
    """Accuracy, FD, wall and process-CPU milliseconds per sample of ``cfg.num_eval`` samples
    (balanced labels, ``cfg.seed``); ``dpm``: DPM-Solver++(2M) instead of ``cfg.sampler``."""
    from scorealign.eval.metrics import digits_metrics
    from scorealign.rng import generator
    from scorealign.train.evaluate import balanced_labels

    labels = balanced_labels(cfg.num_eval)
    cond = task.cond_for(labels)
    c0, t0 = time.process_time(), time.perf_counter()
    if dpm:
        from dpm import dpm_solver_pp_2m
        model.eval()
        g = generator(cfg.seed, "generate")
        x_T = task.sde.prior_sample((cfg.num_eval, *task.train_x.shape[1:]), g)
        with torch.no_grad():
            x = dpm_solver_pp_2m(task.pred_fn(model, task.cond_to(cond, "cpu"), cfg.guidance),
                                 task.kind, task.sde, x_T, cfg.steps).float()
    else:
        with torch.no_grad():
            x = task.generate(model, cond, cfg.num_eval, cfg)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    m = digits_metrics(clf, x, labels, real)
    return {"accuracy": m["eval/accuracy"], "fd": m["eval/fd"],
            "ms_per_sample": 1000 * wall / cfg.num_eval,
            "cpu_ms_per_sample": 1000 * cpu / cfg.num_eval}


def teacher_cells(nfes, n: int) -> list[tuple[str, int, object, bool]]:
    """(method, nfe, SamplingConfig, dpm) of the teacher's cells."""
    from scorealign.train.task import SamplingConfig

    out = []
    for nfe in nfes:
        out.append(("teacher/ddim", nfe, SamplingConfig(
            sampler="ddim", steps=nfe, eta=0.0, guidance=2.0, grid="uniform", num_eval=n), False))
        if nfe % 2 == 0:
            out.append(("teacher/heun", nfe, SamplingConfig(
                sampler="heun_ode", steps=nfe // 2, guidance=2.0, grid="karras", num_eval=n),
                False))
        out.append(("teacher/dpm2m", nfe, SamplingConfig(
            sampler="ddim", steps=nfe, eta=0.0, guidance=2.0, grid="logsnr", num_eval=n), True))
    return out


def student_cfg(nfe: int, n: int):
    from scorealign.train.task import SamplingConfig
    return SamplingConfig(sampler="consistency", steps=nfe, eta=0.0, guidance=1.0,
                          grid="karras", num_eval=n)


def train_students(a) -> dict[str, list[tuple[int, str, dict]]]:
    """{family: [(seed, run path, training meta)]} via study.py's cached cells (trains the
    missing ones)."""
    import study

    out = a.study_out / ("quick" if a.quick else "full")
    plan = {"cd": ("cd_ship", a.seeds_a, a.train_steps, a.train_batch),
            "ct_ect": ("ct_ect_ship", a.seeds_a, a.train_steps, a.train_batch),
            "ct_scratch": ("ct_scratch_ect", [0], a.scratch_steps, a.scratch_batch)}
    models: dict[str, list] = {}
    for fam in [f for f in a.families if f in plan]:
        arm, seeds, steps, batch = plan[fam]
        for seed in seeds if a.only_seed is None else [x for x in seeds if x == a.only_seed]:
            cell = f"{arm}_s{seed}_k{steps}_b{batch}"
            mpath = out / "cells" / f"{cell}_train.json"
            waited = 0
            while a.no_train and not mpath.is_file() and waited < a.wait:
                time.sleep(20)   # another process trains it (study.py --only-seed)
                waited += 20
            if a.no_train and not mpath.is_file():
                print(f"skipping {cell}: not trained (--no-train)", file=sys.stderr)
                continue
            meta = _cached(mpath, lambda: study.train_arm(out, arm, seed, steps, batch))
            models.setdefault(fam, []).append((seed, str(out / "runs" / meta["run"]), meta))
    return models


def same_as_shipped(run: str) -> bool:
    """Whether a run's exported weights are byte-identical to ``pretrained:digits8-cd``'s."""
    from scorealign.train.bases import resolve_base_path
    a = Path(run) / "final" / "model.safetensors"
    b = resolve_base_path("pretrained:digits8-cd") / "final" / "model.safetensors"
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def scratch_curve(a, out: Path, n: int, env) -> list[dict]:
    """CT from scratch along its run: the EMA weights of every saved checkpoint
    (``ct_scratch_saved_ckpts/step_*``, copied while the run went, since a run keeps only its
    newest two), exported and sampled with one consistency step (``--table-only``: only the
    cells already computed)."""
    from safetensors.torch import load_file

    from scorealign.config import load_config
    from scorealign.train.bases import load_digits_base
    from scorealign.train.pretrain import PretrainConfig
    from scorealign.train.task import build_task

    runs = a.study_out / "full" / "runs"
    run = runs / f"ct_scratch_ect_s0_k{a.scratch_steps}_b{a.scratch_batch}"
    saved = runs / "ct_scratch_saved_ckpts"
    if not (run / "config.yaml").is_file() or not saved.is_dir():
        return []
    cfg = load_config(run / "config.yaml", PretrainConfig, [])
    rows = []
    for ck in sorted(saved.glob("step_*")):
        if not (ck / "ema.safetensors").is_file():
            continue
        step = int(ck.name.split("_")[1])
        for nfe in (1,):  # the CT bar is one-step accuracy
            path = out / "cells" / f"ct_scratch_{run.name}_ckpt{step}_nfe{nfe}_n{n}.json"
            if a.table_only and not path.is_file():
                continue

            def compute(ck=ck, nfe=nfe, step=step):
                model_dir = ck / "export"
                if not (model_dir / "model_config.json").is_file():
                    build_task(cfg.data, cfg.sde, cfg.model).export(
                        load_file(str(ck / "ema.safetensors")), model_dir)
                return {"step": step, "nfe": nfe, "n": n,
                        **measure(*load_digits_base(model_dir), student_cfg(nfe, n), *env())}
            rows.append(cached(path, compute))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def part_a(a, out: Path) -> dict:
    from scorealign.data import load_digits
    from scorealign.eval.classifier import load_classifier
    from scorealign.train.bases import load_digits_base

    env_: list = []

    def env():  # the classifier and the real split, loaded when a cell is first computed
        if not env_:
            env_.extend([load_classifier(size=8), load_digits("test", size=8, seed=0).images])
        return env_

    nfes, n = a.nfes, a.n
    rows, loaded = [], {}

    def load(path):
        if path not in loaded:
            loaded.clear()
            loaded[path] = load_digits_base(path)
        return loaded[path]

    for method, nfe, cfg, dpm in teacher_cells(nfes, n) if "teacher" in a.families else []:
        name = f"{method.replace('/', '_')}_nfe{nfe}_n{n}"
        rows.append(cached(out / "cells" / f"{name}.json", lambda: {
            "method": method, "family": "teacher", "seed": 0, "nfe": nfe, "steps": cfg.steps,
            "n": n, **measure(*load("pretrained:digits8"), cfg, *env(), dpm=dpm)}))
        print(json.dumps(rows[-1]), flush=True)
    students = ({"cd": [(0, a.cd, {})]} if a.quick else train_students(a))
    train = {}
    for fam, runs in students.items():
        for seed, path, meta in runs:
            train[f"{fam}_s{seed}"] = {**meta, "run": Path(path).name}
            for nfe in nfes:
                name = f"{fam}_s{seed}_{Path(path).name.replace(':', '-')}_nfe{nfe}_n{n}"
                rows.append(cached(out / "cells" / f"{name}.json", lambda: {
                    "method": f"{fam}/consistency", "family": fam, "seed": seed, "nfe": nfe,
                    "steps": nfe, "n": n,
                    **measure(*load(path), student_cfg(nfe, n), *env())}))
                print(json.dumps(rows[-1]), flush=True)
    curve = [] if a.quick or "ct_scratch" not in a.families else scratch_curve(a, out, n, env)
    shipped = None
    if not a.quick and students.get("cd"):
        seed0 = [p for s, p, _ in students["cd"] if s == 0]
        shipped = bool(seed0) and same_as_shipped(seed0[0])
    import study
    ref = None if a.quick else study.recorded_teacher(n, 25)
    return {"rows": rows, "train": train, "cd_seed0_equals_shipped": shipped, "n": n,
            "teacher25": ref, "scratch_curve": curve}


def table_a(res: dict) -> list[str]:
    """One row per (method, NFE); the first column is unique (verdicts cite it)."""
    rows, train = res["rows"], res.get("train", {})
    ref = res.get("teacher25")
    lines = []
    if ref:
        lines += [f"Reference: the teacher with 25-step DDIM, CFG 2 (50 network evaluations of a "
                  f"row per sample): accuracy {ref['accuracy']:.3f}, FD {ref['fd']:.1f} "
                  f"(n = {ref['n']}, {ref.get('source', 'computed')}).", ""]
    lines += ["| method, NFE | seeds | accuracy | FD | FD / teacher 25-step | CPU ms / sample | "
              "train CPU s |", "|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        for nfe in sorted({r["nfe"] for r in rows if r["method"] == method}):
            rs = [r for r in rows if r["method"] == method and r["nfe"] == nfe]
            fam = rs[0]["family"]
            keys = [f"{fam}_s{r['seed']}" for r in rs]
            cpu_train = [train[k]["train_cpu_s"] for k in keys if "train_cpu_s" in train.get(k, {})]
            label = LABELS.get(fam, method)
            ratio = _ci([r["fd"] / ref["fd"] for r in rs]) if ref else "-"
            lines.append(f"| {label}, NFE {nfe} | {len(rs)} | {_ci([r['accuracy'] for r in rs])} | "
                         f"{_ci([r['fd'] for r in rs])} | {ratio} | "
                         f"{_ci([r['cpu_ms_per_sample'] for r in rs])} | "
                         f"{_ci(cpu_train) if cpu_train else '-'} |")
    curve = res.get("scratch_curve") or []
    if curve:
        lines += ["", "CT from scratch along its run (EMA weights of the saved checkpoints):", "",
                  "| CT from scratch checkpoint | NFE | accuracy | FD |", "|---|---|---|---|"]
        for r in curve:
            lines.append(f"| scratch step {r['step']}, NFE {r['nfe']} | {r['nfe']} | "
                         f"{r['accuracy']:.3f} | {r['fd']:.4g} |")
    return lines


LABELS = {"cd": "CD (ECT pairs, v student)", "ct_ect": "CT (ECT, from digits8)",
          "ct_scratch": "CT from scratch (ECT pairs)"}


# -- Part B -----------------------------------------------------------------------------------
def rl_config(arm: str, a, lr: float, seed: int):
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig

    config, base = ARMS[arm]
    b = a.per_epoch * a.k
    sets = [f"train.epochs={a.epochs}", f"prompts.per_epoch={a.per_epoch}", f"prompts.k={a.k}",
            "train.inner_epochs=1", f"train.minibatch_size={b // 2}",
            f"train.sample_batch_size={b}", f"train.lr={lr:g}", f"train.seed={seed}",
            f"train.ckpt_every={a.epochs}", "train.log_kl=false", "device=cpu"]
    if base == "cd":
        sets.append(f"base.path={a.cd}")
    return load_config(ROOT / config, FinetuneConfig, sets)


class Evaluator:
    """The fixed evaluation set: ``n`` balanced prompts, x_T from seeds derived from ``draws``,
    each policy's own sampler and grid at η = 0 (no exploration noise)."""

    def __init__(self, ft, n: int, draws: int):
        from scorealign.rng import derive_seed
        self.ft = ft
        self.prompts = [ft.setup.prompts[i % len(ft.setup.prompts)] for i in range(n)]
        self.seeds = [derive_seed(draws, "eval", i) for i in range(n)]

    def __call__(self) -> dict:
        from scorealign.rng import randn_per_sample
        from scorealign.samplers import sample

        ft, s = self.ft, self.ft.setup
        pol = ft.policy
        with torch.no_grad():
            x_T = randn_per_sample(self.seeds, s.shape, "eval-xT") * s.sde.prior_std
            # multistep consistency sampling re-noises between steps even at η = 0 (Song+23
            # Alg. 1): that noise is fixed per evaluation row too
            z = randn_per_sample(self.seeds, (pol.steps, *s.shape), "eval-steps").transpose(0, 1)
            x0 = sample(pol.pred_fn(pol.cond_for(self.prompts)), pol.kind, pol.sde, x_T,
                        sampler=pol.sampler, steps=pol.steps, eta=0.0, grid=pol.ts,
                        noise=z.contiguous()).x0
            out = ft.rewards(s.decode(x0), self.prompts, {"epoch": ft.epoch})
        return {"reward": float(out.optimized.mean()), "gold": float(out.gold.mean())}


def rl_cell(arm: str, a, lr: float, seed: int, draws: int) -> dict:
    """One fine-tuning run: fixed-set evaluations at 0, E/2, E; per-epoch training metrics;
    process CPU seconds of the training epochs (evaluations excluded)."""
    from scorealign.rl.trainer import Finetuner

    cfg = rl_config(arm, a, lr, seed)
    ft = Finetuner(cfg, None)
    ev = Evaluator(ft, a.eval_n, draws)
    evals = [{"epoch": 0, **ev()}]
    cpu, epochs = 0.0, []
    while ft.epoch < cfg.train.epochs:
        c0 = time.process_time()
        m = ft.train_epoch()
        ft.epoch += 1
        cpu += time.process_time() - c0
        epochs.append({"epoch": ft.epoch, "cpu_s": cpu, **{
            k: v for k, v in m.items() if "/step/" not in k and isinstance(v, (int, float))}})
        if ft.epoch in {cfg.train.epochs // 2, cfg.train.epochs}:
            evals.append({"epoch": ft.epoch, **ev()})
    mem = max(e.get("mem/peak_gb", float("nan")) for e in epochs)
    return {"arm": arm, "lr": lr, "seed": seed, "draws": draws, "steps": cfg.policy.steps,
            "evals": evals, "epochs": epochs, "cpu_s": cpu, "peak_gb": mem,
            "gain": evals[-1]["reward"] - evals[0]["reward"], "final_gold": evals[-1]["gold"],
            "base_gold": evals[0]["gold"],
            "clip_frac_later": _mean([e.get("clip/frac_later") for e in epochs]),
            "clip_frac_mb0": _mean([e.get("clip/frac_mb0") for e in epochs])}


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def rl_tag(a) -> str:
    return f"e{a.epochs}_p{a.per_epoch}k{a.k}_ev{a.eval_n}"


def part_b(a, out: Path, arms: list[str]) -> dict:
    sp = sel.split(a.seeds, a.tuning_seeds)
    cells: dict[str, list[dict]] = {}
    tuned: dict[str, sel.Tuned] = {}
    d = out / "rl" / rl_tag(a)

    def run(arm, lr, seed, draws):
        path = d / f"{arm}_lr{lr:g}_s{seed}_d{draws}.json"
        if a.table_only and not path.is_file():
            return None
        cell = cached(path, lambda: rl_cell(arm, a, lr, seed, draws))
        print(json.dumps({k: v for k, v in cell.items() if k not in ("epochs", "evals")}),
              flush=True)
        return cell

    for arm in arms:
        def score(lr, arm=arm):
            cs = [run(arm, lr, s, sp.tuning_draws) for s in sp.tuning_seeds]
            cs = [c for c in cs if c is not None]
            if not cs:
                return {"reward": float("nan"), "gold": float("nan")}
            return {"reward": _mean([c["evals"][-1]["reward"] for c in cs]),
                    "gold": _mean([c["evals"][-1]["gold"] for c in cs])}
        tuned[arm] = sel.tune_grid(a.lr_grid, score, gold_floor=GOLD_FLOOR, max_widen=2)
        if tuned[arm].pick is None:
            continue
        cs = [run(arm, tuned[arm].pick, s, sp.reported_draws) for s in sp.reported_seeds]
        cells[arm] = [c for c in cs if c is not None]
    claims = {}
    if all(arm in cells for arm in ARMS):
        cm = {c["seed"]: c for c in cells["cm_2step"]}
        te = {c["seed"]: c for c in cells["teacher_10step"]}
        seeds = sorted(set(cm) & set(te))
        for key, label in (("cpu_s", "train CPU s"), ("gain", "reward gain"),
                           ("final_gold", "final gold")):
            claims[label] = sel.paired_interval([cm[s][key] for s in seeds],
                                                [te[s][key] for s in seeds])
            claims[label]["welch"] = sel.welch_interval([cm[s][key] for s in seeds],
                                                        [te[s][key] for s in seeds])
        holm = sel.holm({k: v["p"] for k, v in claims.items()})
        for k in claims:
            claims[k].update(holm[k])
    return {"record": sel.record(tuned, selection=sel.selection_rule(GOLD_FLOOR, "final eval "
                                                                     "reward"), split_=sp),
            "cells": cells, "claims": claims, "budget": {
                "epochs": a.epochs, "prompts_per_epoch": a.per_epoch, "k": a.k,
                "eval_n": a.eval_n, "minibatches_per_epoch": 2}}


ARM_LABELS = {"cm_2step": "cm_2step (2-step consistency, η = 1)",
              "teacher_10step": "teacher_10step (10-step DDIM, η = 1, CFG 2)"}


def table_b(res: dict) -> list[str]:
    rec, cells = res["record"], res["cells"]
    lines = ["| RL arm | policy steps | lr (chosen) | edge | seeds | train CPU s | peak RSS GB | "
             "eval reward base → final | gain | gold base → final | "
             "clip frac (off-policy mb) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, ch in rec["chosen"].items():
        cs = cells.get(arm, [])
        if not cs:
            lines.append(f"| {arm} | - | {ch['pick']} | {ch['edge']} | 0 | - | - | - | - | - "
                         f"| - |")
            continue
        lines.append(
            f"| {ARM_LABELS.get(arm, arm)} | {cs[0]['steps']} | {ch['pick']:g} | "
            f"{'yes' if ch['edge'] else 'no'} | "
            f"{len(cs)} | {_ci([c['cpu_s'] for c in cs])} | "
            f"{max(c['peak_gb'] for c in cs):.2f} | "
            f"{_ci([c['evals'][0]['reward'] for c in cs])} → "
            f"{_ci([c['evals'][-1]['reward'] for c in cs])} | {_ci([c['gain'] for c in cs])} | "
            f"{_ci([c['base_gold'] for c in cs])} → {_ci([c['final_gold'] for c in cs])} | "
            f"{_ci([c['clip_frac_later'] for c in cs])} |")
    if res["claims"]:
        lines += ["", "| claim (2-step policy − 10-step teacher, paired by seed) | difference "
                      "(95 % paired t) | Welch | p | p (Holm) | supported (Holm) |",
                  "|---|---|---|---|---|---|"]
        for k, c in res["claims"].items():
            lines.append(f"| {k}: cm_2step − teacher_10step | {c['diff']:.4g} ± {c['half']:.2g} "
                         f"| "
                         f"{c['welch']['diff']:.4g} ± {c['welch']['half']:.2g} | {c['p']:.2g} | "
                         f"{c['p_holm']:.2g} | {'yes' if c['reject'] else 'no'} |")
    lines += ["", "Learning-rate selection (tuning seeds "
              f"{', '.join(map(str, res['record']['split']['tuning_seeds']))}, tuning draws "
              f"{res['record']['split']['tuning_draws']}; {res['record']['selection_rule']}):", "",
              "| arm | lr | tuning final eval reward | tuning final gold |", "|---|---|---|---|"]
    for arm, ch in rec["chosen"].items():
        for lr, s in ch["scores"].items():
            lines.append(f"| {arm} | {lr} | {s['reward']:.4f} | {s['gold']:.4f} |")
    return lines


# -- main -------------------------------------------------------------------------------------
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--part", choices=("a", "b", "both"), default="both")
    p.add_argument("--arm", action="append", choices=sorted(ARMS), default=None,
                   help="Part B arms to run (default both); tabulate with both")
    p.add_argument("--table-only", action="store_true", help="Part B: only cached cells")
    p.add_argument("--no-train", action="store_true", help="Part A: only trained students")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "exp_consistency")
    p.add_argument("--study-out", type=Path, default=ROOT / "runs" / "exp_consistency_study")
    p.add_argument("--results", type=Path, default=None)
    p.add_argument("--cd", default="pretrained:digits8-cd", help="CD model of Part B")
    p.add_argument("--families", default="teacher,cd,ct_ect,ct_scratch")
    p.add_argument("--only-seed", type=int, default=None, help="Part A: students of this seed")
    p.add_argument("--wait", type=int, default=0,
                   help="with --no-train: seconds to wait for a student another process trains")
    p.add_argument("--n", type=int, default=500, help="samples per Part A cell")
    p.add_argument("--train-steps", type=int, default=500)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--scratch-steps", type=int, default=400)
    p.add_argument("--scratch-batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--per-epoch", type=int, default=4)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seeds", type=int, default=10, help="Part B reported seeds")
    p.add_argument("--tuning-seeds", type=int, default=1)
    p.add_argument("--eval-n", type=int, default=EVAL_N)
    p.add_argument("--fill-lr", type=float, default=None,
                   help="Part B worker: run only the cells of this lr (then tabulate without it)")
    p.add_argument("--fill-seeds", default="", help="with --fill-lr: comma-separated seeds")
    p.add_argument("--fill-draws", choices=("tuning", "reported"), default="tuning")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.families = [f for f in a.families.split(",") if f]
    a.seeds_a, a.nfes, a.lr_grid = [0, 1, 2], NFES, LR_GRID
    if a.quick:
        a.nfes, a.n, a.epochs, a.per_epoch, a.k = (1, 2), 20, 2, 2, 2
        a.seeds, a.tuning_seeds, a.eval_n, a.lr_grid = 2, 1, 8, (1e-4, 3e-4)
    out = a.out / ("quick" if a.quick else "full")
    results = a.results or (out / "results" if a.quick else HERE / "results")
    res_path = results / "results.json"
    old = json.loads(res_path.read_text()) if res_path.is_file() else {}
    res = {"part_a": old.get("part_a"), "part_b": old.get("part_b")}
    if a.part in ("a", "both"):
        res["part_a"] = part_a(a, out)
    if a.fill_lr is not None:  # a worker that fills the cache with the named cells only
        sp = sel.split(a.seeds, a.tuning_seeds)
        draws = sp.tuning_draws if a.fill_draws == "tuning" else sp.reported_draws
        seeds = [int(s) for s in a.fill_seeds.split(",")]
        d = out / "rl" / rl_tag(a)
        for arm in a.arm or list(ARMS):
            for seed in seeds:
                cached(d / f"{arm}_lr{a.fill_lr:g}_s{seed}_d{draws}.json",
                       lambda: rl_cell(arm, a, a.fill_lr, seed, draws))
                print(f"filled {arm} lr {a.fill_lr:g} seed {seed} draws {draws}", flush=True)
        return
    if a.part in ("b", "both"):
        res["part_b"] = part_b(a, out, a.arm or list(ARMS))
    # the keys the older quick test reads: flat sampling rows and RL rows with arm and steps
    res["sampling"] = (res["part_a"] or {}).get("rows", [])
    res["rl"] = [c for cs in ((res["part_b"] or {}).get("cells") or {}).values() for c in cs]
    write_json(res_path, res)
    lines = []
    if res["part_a"]:
        lines += ["## Part A: quality and CPU cost against network calls", ""] + table_a(
            res["part_a"])
    if res["part_b"]:
        lines += ["", "## Part B: LOOP, 2-step consistency policy vs 10-step teacher", ""] + \
            table_b(res["part_b"])
    (results / "table.md").write_text("\n".join(lines) + "\n")
    print((results / "table.md").read_text())


if __name__ == "__main__":
    main()
