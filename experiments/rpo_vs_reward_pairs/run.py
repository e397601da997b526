"""RPO pairs vs reward-labelled pairs from the same prompts, as alignment-vs-FD curves over
Diffusion-DPO training (digits) [Zhao+25 RPO, arXiv:2503.11720; Wallace+23, Eq. 14].

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/rpo_vs_reward_pairs/run.py
    .venv/bin/python experiments/rpo_vs_reward_pairs/run.py --summary-only   # re-tabulate
    .venv/bin/python experiments/rpo_vs_reward_pairs/run.py --quick --out DIR # the test

Full run: ~9 CPU-minutes single-threaded (the options ~5 of them, their lr tuning included); one JSON per cell under
``cells/`` (a stopped run continues where it stopped; ``--summary-only`` re-tabulates the cached
cells).

Per seed (prompts, samples, edits, DPO noise and data order all derive from it):

1. N prompts (balanced digits); two samples A, B per prompt from the base model at the sampling
   guidance G (``--guidance``, 1.0: plain conditional sampling, the deployment setting).
2. RPO arm: critique every A (project classifier seed 0 + image statistics), turn findings into
   edit instructions, edit with SDEdit at the same guidance G or image operations, keep the
   verified fixes: edited(A) ≻ A. The verifier re-critiques with the same critic, or (variant
   ``verifier``, RPO arm) with a classifier of another training seed (2).
3. Reward arm: for the same prompts the RPO arm kept, A vs B, the higher classifier (seed 0)
   log-prob of the prompted digit wins. Both arms are cut to the prompts both have, so they have
   the same prompts and the same number of pairs.
4. Diffusion-DPO (sigmoid, β = 5000, T ω = ½ of ``configs/dpo/digits_rpo.yaml``, the authors'
   values) on each arm with the same seed; every ``eval_every`` steps the policy is judged on
   one fixed evaluation set (prompts and sampling seed) by
   * the **independent judge** (:class:`IndependentJudge`): an RBF support-vector classifier on
     raw pixels trained on the digits *test* split, which neither arm's labeller (the CNN of
     seed 0, trained on the train split) nor the base model saw; a different model class and
     different data, so neither arm is scored by anything it was optimized against;
   * the CNN judge of seed 1 (``eval/accuracy``; same architecture and training data as the
     labellers, another seed) and the Fréchet distance of its features to the real test split.
   Variants ``sft`` / ``sft_matched`` (RPO arm) add w × the denoising loss on the chosen images
   (``loss.sft_weight``), w = 0.5 and w = 1250 (= β·s·σ(0)). The full run trains every variant
   (each option at its own lr, chosen by the rule below, against the default RPO arm of the
   same seeds at the RPO arm's lr); ``--quick`` only ``default`` unless ``--variants`` says
   otherwise.

Selection (``experiments/_selection.py``): the lr of each arm is chosen on tuning seeds
(``tuning_seeds``, never reported) judged on tuning evaluation draws (another sampling seed):
the largest mean final CNN-judge accuracy among lrs whose mean final FD ≤ FD_LIMIT × the base
model's FD on the tuning draws; the grid (``lrs``) is widened geometrically while the pick sits
at an edge (``tune_grid``, at most ``max_widen`` times, then ``edge: True``). Each option of the
RPO arm gets its own selection the same way (its tuning cells ``tune-<variant>-lr…``). Reported: the chosen
lr on seeds 0..seeds−1, both arms on the same seeds (paired); the claims (RPO − reward at the
final step: independent-judge accuracy, CNN-judge accuracy, FD, critic finding rate) get paired
t-intervals with Welch beside them and Holm's correction across them; a collapse column (a run
whose final independent-judge accuracy is below the base's − COLLAPSE_MARGIN).

Pair building is shared: A, B are drawn once per seed, the verifiers' datasets once per seed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from functools import lru_cache
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
import _selection as sel  # noqa: E402

FULL = dict(prompts=160, steps=40, batch=8, eval_every=20, eval_samples=100, gen_steps=8,
            seeds=10, lrs=(1e-6, 3e-6, 1e-5, 3e-5), tuning_seeds=(100,), max_widen=2)
QUICK = dict(prompts=20, steps=2, batch=4, eval_every=1, eval_samples=10, gen_steps=2,
             seeds=2, lrs=(1e-6, 1e-4), tuning_seeds=(100,), max_widen=1)
# The options change the RPO arm; they are compared with the default RPO arm of the same seed.
VARIANTS = {"default": dict(verifier="same", sft=0.0, arms=("rpo", "reward")),
            "verifier": dict(verifier="independent", sft=0.0, arms=("rpo",)),
            "sft": dict(verifier="same", sft=0.5, arms=("rpo",)),
            # at policy = reference d(loss)/d(chosen error) = β·s·σ(0) = 5000·½·½ = 1250: this
            # weight gives the SFT term the DPO term's pull on the chosen images
            "sft_matched": dict(verifier="same", sft=1250.0, arms=("rpo",))}
ARMS = ("rpo", "reward")
KEYS = ("eval/accuracy", "eval/label_prob", "eval/fd", "eval/diversity", "eval/flagged",
        "indep/accuracy")
FD_LIMIT = 1.5  # selection floor: final FD at most this × the base model's (tuning draws)
DRAWS = {"reported": 1234, "tuning": 4321}  # sampling seeds of the two evaluation sets
COLLAPSE_MARGIN = 0.1  # independent-judge accuracy below the base's − this: a collapsed run
CLAIMS = (("indep/accuracy", "independent-judge accuracy"), ("eval/accuracy", "CNN-judge accuracy"),
          ("eval/fd", "FD to real"), ("eval/flagged", "critic finding rate"))


class IndependentJudge:
    """RBF support-vector classifier on raw pixels, trained on the digits *test* split.

    The labellers of both arms (the CNN of seed 0) and the base model are trained on the train
    split, so this judge shares neither their data nor their model class. ``C = 10``,
    ``gamma = "scale"`` (scikit-learn's default); its accuracy on the train split is recorded.
    """

    def __init__(self, size: int = 8):
        from sklearn.svm import SVC

        from scorealign.data.digits import load_digits

        test, train = load_digits("test", size=size), load_digits("train", size=size)
        self.svc = SVC(C=10.0, gamma="scale").fit(test.images.flatten(1).numpy(),
                                                   test.labels.numpy())
        self.heldout_accuracy = float(self.accuracy(train.images, train.labels))

    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        pred = self.svc.predict(x.clamp(-1, 1).flatten(1).double().numpy())
        return float((torch.as_tensor(pred) == labels.cpu()).float().mean())


@lru_cache(maxsize=1)
def independent_judge(size: int = 8) -> IndependentJudge:
    return IndependentJudge(size)


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def draw(args, seed: int, base, budget: dict) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The seed's prompts and two base samples A, B per prompt (shared by every verifier)."""
    from scorealign.data.digits import prompt_for
    from scorealign.preference.rpo.base import generate, hash_seed

    prompts = [prompt_for(i % 10) for i in range(budget["prompts"])]
    gen = dict(steps=budget["gen_steps"], guidance=args.guidance)
    a = generate(base, base.model, prompts, seed=hash_seed(seed, "a"), **gen)
    b = generate(base, base.model, prompts, seed=hash_seed(seed, "b"), **gen)
    return prompts, a, b


def build_arms(args, seed: int, verifier: str, drawn: tuple, base, budget: dict,
               work: Path) -> dict:
    """RPO and reward pair datasets for the same prompts (module docstring), one verifier."""
    from scorealign.rewards import build_reward
    from scorealign.preference.rpo.build import write_dataset
    from scorealign.preference.rpo.digits_critic import DigitsCritic
    from scorealign.preference.rpo.editors import digits_editor
    from scorealign.preference.rpo.instructions import DigitsInstructionExtractor
    from scorealign.preference.rpo.pipeline import build_reward_pairs, build_rpo_pairs
    from scorealign.preference.rpo.verifier import CritiqueVerifier

    size = base.task.model_cfg.sample_size
    prompts, a, b = drawn
    critic = DigitsCritic.calibrated(size=size, classifier_seed=0)
    reward = build_reward({"name": "digit_alignment", "seed": 0, "size": size})
    check = critic if verifier == "same" else DigitsCritic.calibrated(
        size=size, classifier_seed=2)
    editor = digits_editor(base, steps=budget["gen_steps"], guidance=args.guidance,
                           seed=seed)
    rpo, rpo_stats = build_rpo_pairs(a, prompts, critic,
                                     DigitsInstructionExtractor(0.6, 0.35), editor,
                                     CritiqueVerifier(check), attempts=2)
    idx = [p.meta["index"] for p in rpo]
    rw, _ = build_reward_pairs(a[idx], b[idx], [prompts[i] for i in idx], reward)
    # Same prompts in both arms: drop RPO pairs whose reward pair was a tie.
    by_prompt: dict[str, list] = {}
    for p in rw:
        by_prompt.setdefault(p.prompt, []).append(p)
    rpo_kept, rw_kept = [], []
    for p, i in zip(rpo, idx):
        match = [q for q in by_prompt.get(p.prompt, [])
                 if torch.equal(q.chosen, a[i]) or torch.equal(q.rejected, a[i])]
        if match:
            rpo_kept.append(p)
            rw_kept.append(match[0])
    info = {"prompts": len(prompts), "verifier": verifier,
            "rpo_build": rpo_stats.to_dict(), "pairs": len(rpo_kept)}
    tag = f"s{seed}_{verifier}"
    return {
        "rpo": str(write_dataset(work / f"pairs_rpo_{tag}", rpo_kept, {"stats": info},
                                 overwrite=True)),
        "reward": str(write_dataset(work / f"pairs_reward_{tag}", rw_kept, {"stats": info},
                                    overwrite=True)),
        "info": info}


def eval_config(args, budget: dict, draws: str = "reported"):
    from scorealign.preference.rpo.config import DiffusionEvalConfig, GenerationConfig

    return DiffusionEvalConfig(num_samples=budget["eval_samples"], judge_seed=1,
                               seed=DRAWS[draws],
                               generation=GenerationConfig(steps=budget["gen_steps"],
                                                           guidance=args.guidance))


def judge_all(base, model, ev) -> dict:
    """The CNN judge's metrics (``evaluate_policy``) and the independent judge's accuracy."""
    from scorealign.preference.rpo.evaluate import evaluate_policy

    m, x = evaluate_policy(base, model, ev)
    labels = torch.arange(len(x)) % 10
    return {**{k: m[k] for k in KEYS if k in m},
            "indep/accuracy": independent_judge(base.task.model_cfg.sample_size).accuracy(
                x, labels)}


def curve(args, seed: int, name: str, data: str, lr: float, sft: float, base, budget: dict,
          work: Path, draws: str) -> list[dict]:
    """Diffusion-DPO on one arm's pairs; judged every eval_every steps (step 0 is the base)."""
    from scorealign.config import config_from_dict, load_config
    from scorealign.preference.rpo.config import DiffusionDPOConfig
    from scorealign.preference.diffusion_dpo import train
    from scorealign.run.rundir import RunDir

    shipped = load_config(ROOT / "configs/dpo/digits_rpo.yaml", DiffusionDPOConfig,
                          [f"data.path={data}"])
    cfg = config_from_dict({
        "task": "diffusion", "device": "cpu", "base": {"path": args.base},
        "data": {"path": data},
        "loss": {"link": "sigmoid", "beta": shipped.loss.beta, "scale": shipped.loss.scale,
                 "sft_weight": sft},
        "train": {"steps": budget["steps"], "batch_size": budget["batch"], "lr": lr,
                  "log_every": budget["eval_every"], "ckpt_every": budget["steps"],
                  "seed": seed, "progress": False},
        "eval": {"enabled": False}}, DiffusionDPOConfig)
    run_path = work / f"dpo_{name}"
    shutil.rmtree(run_path, ignore_errors=True)
    run = RunDir.create(run_path, cfg)
    ev = eval_config(args, budget, draws)
    judged: dict[int, dict] = {}

    def judge(step: int, policy) -> None:  # evaluation along training, same weights as a ckpt
        if step % budget["eval_every"] == 0:
            judged[step] = judge_all(base, policy, ev)

    train(cfg, run, base=base, callback=judge, export_final=False)
    logged = {r["step"]: r for r in run.read_metrics()}
    points = []
    for step, m in sorted(judged.items()):
        train_m = {k: logged[step][k] for k in ("loss", "rewards/accuracy", "rewards/margin")
                   if step in logged and k in logged[step]}
        points.append({"step": step, **m, **train_m})
    shutil.rmtree(run_path, ignore_errors=True)
    return points


def selection_score(cells: list[dict]) -> dict:
    """Tuning score of one lr: mean final CNN-judge accuracy ("reward") and mean final −FD
    ("gold", the floor is −FD_LIMIT × the base FD) over the tuning seeds."""
    fin = [c["points"][-1] for c in cells]
    return {"reward": sum(p["eval/accuracy"] for p in fin) / len(fin),
            "gold": -sum(p["eval/fd"] for p in fin) / len(fin),
            "fd": sum(p["eval/fd"] for p in fin) / len(fin),
            "indep": sum(p["indep/accuracy"] for p in fin) / len(fin)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test)")
    ap.add_argument("--seeds", type=int, default=None, help="reported seeds (default 10)")
    ap.add_argument("--base", type=str, default=None)
    ap.add_argument("--guidance", type=float, default=1.0, help="sampling = editing guidance")
    ap.add_argument("--variants", default=None, help="comma list of variants "
                    f"({', '.join(VARIANTS)}); default: all of them, --quick: default only")
    ap.add_argument("--summary-only", action="store_true", help="tabulate the cached cells")
    ap.add_argument("--worker", default="0/1", help="i/n: train the reported seeds s with "
                    "s mod n = i (every worker runs the same tuning, cached)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "rpo_vs_reward_pairs")
    args = ap.parse_args(argv)
    budget = dict(QUICK if args.quick else FULL)
    if args.seeds:
        budget["seeds"] = args.seeds
    if args.variants is None:
        args.variants = "default" if args.quick else ",".join(VARIANTS)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := [v for v in variants if v not in VARIANTS]:
        ap.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if "default" not in variants:
        variants.insert(0, "default")
    from scorealign.preference.rpo.base import load_base
    from scorealign.preference.rpo.config import DEFAULT_BASE

    args.base = args.base or DEFAULT_BASE
    q = "quick-" if args.quick else ""
    prefix = f"{q}g{args.guidance:g}"
    cells = args.out / "cells"
    work = args.work / prefix
    base = None if args.summary_only else load_base(args.base)
    chosen = run_cells(args, budget, variants, prefix, cells, work, base)
    if chosen is None:
        print("tuning incomplete: run without --summary-only")
        return
    summary = summarize(cells, prefix, budget, variants, chosen)
    suffix = "_quick" if args.quick else ""
    _write(args.out / f"results{suffix}.json", summary)
    (args.out / f"table{suffix}.md").write_text(table(summary))
    plot(summary, args.out / f"frontier{suffix}.png")
    print(table(summary))


def _budget_key(budget: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in budget.items() if k != "seeds"}))


def tuned_key(variant: str, arm: str) -> str:
    """Key of an lr selection: the arm for the two main arms, ``rpo/<variant>`` for an option."""
    return arm if variant == "default" else f"{arm}/{variant}"


def run_cells(args, budget: dict, variants: list[str], prefix: str, cells: Path, work: Path,
              base) -> dict | None:
    """Every missing cell: base evaluations, lr tuning (per arm, widened at an edge), then
    variants × reported seeds × arms. ``base=None``: read cached cells only (None if the
    tuning is incomplete). Returns arm → :class:`_selection.Tuned`."""
    base_cell = cells / f"{prefix}-base.json"
    if not base_cell.is_file():
        if base is None:
            return None
        t0 = time.process_time()
        ms = {d: judge_all(base, base.model, eval_config(args, budget, d)) for d in DRAWS}
        _write(base_cell, {"step": 0, **ms["reported"], "tuning": ms["tuning"],
                           "budget": _budget_key(budget),
                           "judge_heldout_accuracy": independent_judge(
                               base.task.model_cfg.sample_size).heldout_accuracy,
                           "cpu_s": time.process_time() - t0})
    cached = json.loads(base_cell.read_text())
    if cached.get("budget") != _budget_key(budget):
        raise SystemExit(f"{cells}: cells of another budget ({cached.get('budget')}); "
                         f"move them away or pass --out elsewhere")
    drawn: dict[int, tuple] = {}
    built: dict[tuple[int, str], dict] = {}

    def arms(seed: int, verifier: str) -> dict:
        """The seed's pair datasets for ``verifier``; reused from ``work`` when sealed there
        (written last, after both datasets' manifests), so a restarted run does not rebuild."""
        index = work / f"pairs_s{seed}_{verifier}.json"
        if (seed, verifier) not in built and index.is_file():
            built[(seed, verifier)] = json.loads(index.read_text())
        if (seed, verifier) not in built:
            t0 = time.process_time()
            if seed not in drawn:
                drawn[seed] = draw(args, seed, base, budget)
            out = build_arms(args, seed, verifier, drawn[seed], base, budget, work)
            out["info"]["cpu_s"] = time.process_time() - t0
            _write(index, out)
            built[(seed, verifier)] = out
        return built[(seed, verifier)]

    def cell(path: Path, seed: int, arm: str, variant: str, lr: float, draws: str) -> dict:
        if path.is_file():
            old = json.loads(path.read_text())
            if math.isclose(old["lr"], lr, rel_tol=1e-9) or base is None:
                return old  # (--summary-only tabulates what exists; summarize checks the lr)
            print(f"{path.stem}: cached at lr {old['lr']:g}, chosen {lr:g}: rerun", flush=True)
        if base is None:
            raise LookupError(path.name)
        opts = VARIANTS[variant]
        pairs = arms(seed, opts["verifier"])
        if pairs["info"]["pairs"] < 2:
            raise SystemExit(f"seed {seed}: only {pairs['info']['pairs']} pairs; more prompts")
        t0 = time.process_time()
        pts = curve(args, seed, path.stem, pairs[arm], lr, opts["sft"], base, budget, work,
                    draws)
        out = {"seed": seed, "arm": arm, "variant": variant, "lr": lr, "draws": draws,
               "build": pairs["info"], "points": pts, "cpu_s": time.process_time() - t0,
               "build_cpu_s": pairs["info"].get("cpu_s", 0.0)}
        _write(path, out)
        print(f"{path.stem}: " + ", ".join(
            f"step {p['step']}: acc {p['eval/accuracy']:.3f} indep {p['indep/accuracy']:.3f} "
            f"FD {p['eval/fd']:.1f}" for p in pts) + f" ({out['cpu_s']:.0f} CPU-s)", flush=True)
        return out

    floor = -FD_LIMIT * cached["tuning"]["eval/fd"]
    chosen = {}
    # the two arms, then each option of the RPO arm: its own lr by the same rule, grid and
    # widening on the same tuning seeds and draws (an option is not run at another's lr)
    tuned = [("default", arm) for arm in ARMS] + [(v, "rpo") for v in variants
                                                  if v != "default"]
    for variant, arm in tuned:
        tag = "" if variant == "default" else f"{variant}-"

        def score(lr: float, arm: str = arm, variant: str = variant, tag: str = tag) -> dict:
            return selection_score([
                cell(cells / f"{prefix}-tune-{tag}lr{lr:g}-s{s}-{arm}.json", s, arm, variant,
                     lr, "tuning") for s in budget["tuning_seeds"]])
        try:
            chosen[tuned_key(variant, arm)] = sel.tune_grid(
                budget["lrs"], score, gold_floor=floor, max_widen=budget["max_widen"])
        except LookupError:
            return None
    wi, wn = map(int, getattr(args, "worker", "0/1").split("/"))
    for seed in range(budget["seeds"]):
        if seed % wn != wi and base is not None:
            continue
        for variant in variants:
            for arm in VARIANTS[variant]["arms"]:
                t = chosen[tuned_key(variant, arm)]
                if t.pick is None:
                    continue
                try:
                    cell(cells / f"{prefix}-{variant}-s{seed}-{arm}.json", seed, arm, variant,
                         t.pick, "reported")
                except LookupError:
                    pass  # --summary-only: tabulate what exists
    return chosen


def summarize(cells: Path, prefix: str, budget: dict, variants: list[str],
              chosen: dict) -> dict:
    """Per variant, arm and step: mean and 95 % half-width over seeds, per-seed rows; the paired
    (same seed, same prompts) claims RPO − reward at the final step, Welch beside, Holm."""
    from _cells import ci95

    def ci(vals: list[float]) -> dict:
        m, h = ci95(vals)
        return {"mean": m, "ci95": None if math.isnan(h) else h}

    load = lambda p: json.loads(p.read_text())  # noqa: E731
    base = load(cells / f"{prefix}-base.json")
    base_pt = {k: v for k, v in base.items() if k in KEYS or k == "step"}
    out: dict = {"prefix": prefix, "budget": budget, "base": base_pt,
                 "base_tuning": base["tuning"], "fd_limit": FD_LIMIT,
                 "judge_heldout_accuracy": base["judge_heldout_accuracy"],
                 "selection": sel.record(
                     chosen, selection=sel.selection_rule(None, key="CNN-judge accuracy")
                     + f", among lrs with mean final FD ≤ {FD_LIMIT} × the base's on the "
                     f"tuning draws ({FD_LIMIT * base['tuning']['eval/fd']:.2f}; gold = −FD ≥ "
                     f"{-FD_LIMIT * base['tuning']['eval/fd']:.2f})",
                     collapse=f"a run collapses if its final independent-judge accuracy is "
                              f"below the base's − {COLLAPSE_MARGIN:g}",
                     split_=sel.Split(tuple(budget["tuning_seeds"]),
                                      tuple(range(budget["seeds"])), DRAWS["tuning"],
                                      DRAWS["reported"])),
                 "variants": {}}
    cpu = [base["cpu_s"]]
    tune_cells = [load(p) for p in sorted(cells.glob(f"{prefix}-tune-*.json"))]
    cpu += [c["cpu_s"] for c in tune_cells]
    out["tuning"] = [{"arm": c["arm"], "variant": c["variant"], "lr": c["lr"], "seed": c["seed"],
                      "final": {k: c["points"][-1][k] for k in KEYS}} for c in tune_cells]
    runs = {(variant, arm): {c["seed"]: c for c in map(load, cells.glob(
        f"{prefix}-{variant}-s*-{arm}.json")) if c["seed"] < budget["seeds"]}
        for variant in variants for arm in VARIANTS[variant]["arms"]}
    cpu += [c["cpu_s"] for r in runs.values() for c in r.values()]
    builds = {}
    for c in tune_cells + [c for r in runs.values() for c in r.values()]:
        builds[(c["seed"], c["build"]["verifier"])] = c.get("build_cpu_s", 0.0)
    cpu += list(builds.values())
    pvals = {}
    for variant in variants:
        arms = VARIANTS[variant]["arms"]
        other = ("default", "reward") if variant == "default" else ("default", "rpo")
        have = [runs[(variant, arm)] for arm in arms] + [runs.get(other, {})]
        seeds = sorted(set.intersection(*(set(r) for r in have)))
        if not seeds:
            continue
        for arm in arms:  # every reported cell at its selection's pick
            pick = chosen[tuned_key(variant, arm)].pick
            if stale := [s for s in seeds if not math.isclose(
                    runs[(variant, arm)][s]["lr"], pick, rel_tol=1e-9)]:
                raise SystemExit(f"{variant}/{arm}: seeds {stale} not at the chosen lr "
                                 f"{pick:g}; run without --summary-only")
        v: dict = {"seeds": seeds, "compared_with": "/".join(other),
                   "pairs": [runs[(variant, "rpo")][s]["build"]["pairs"] for s in seeds],
                   "lr": {arm: runs[(variant, arm)][seeds[0]]["lr"] for arm in arms},
                   "arms": {}, "per_seed": [], "claims": {}, "collapse": {}}
        for arm in arms:
            curves = [[base_pt] + runs[(variant, arm)][s]["points"] for s in seeds]
            v["arms"][arm] = [{"step": pts[0]["step"], "n": len(seeds),
                               **{k: ci([c[i][k] for c in curves]) for k in KEYS}}
                              for i, pts in enumerate(zip(*curves))]
            v["collapse"][arm] = sel.collapse_rate(
                [c[-1]["indep/accuracy"] for c in curves], base_pt["indep/accuracy"],
                COLLAPSE_MARGIN)
            for s, c in zip(seeds, curves):
                v["per_seed"] += [{"arm": arm, "seed": s, "step": p["step"],
                                   **{k: p[k] for k in KEYS}} for p in c[1:]]
        mine, ref = runs[(variant, "rpo")], runs[other]
        tag = "RPO − reward" if variant == "default" else f"RPO {variant} − RPO default"
        for key, label in CLAIMS:
            xa = [mine[s]["points"][-1][key] for s in seeds]
            xb = [ref[s]["points"][-1][key] for s in seeds]
            name = f"{tag}: {label}, step {budget['steps']}"
            v["claims"][name] = {"key": key, "paired": sel.paired_interval(xa, xb),
                                 "welch": sel.welch_interval(xa, xb)}
            pvals[name] = v["claims"][name]["paired"]["p"]
        out["variants"][variant] = v
    holm = sel.holm(pvals)
    for v in out["variants"].values():
        for name, c in v["claims"].items():
            c["holm"] = holm[name]
    out["cpu_minutes"] = sum(cpu) / 60
    n_rep = {k: len(r) for k, r in runs.items()}
    out["status"] = ("complete" if all(n == budget["seeds"] for n in n_rep.values()) else
                     "PARTIAL — reported seeds per arm: " + ", ".join(
                         f"{'/'.join(k)} {n}/{budget['seeds']}" for k, n in n_rep.items()))
    return out


def table(summary: dict) -> str:
    """Markdown: the selection, the claims (paired, Holm), curves per arm and step, per seed."""
    def f(c: dict, d: int = 3) -> str:
        h = "?" if c["ci95"] is None else f"{c['ci95']:.{d}f}"
        return f"{c['mean']:.{d}f} ± {h}"

    b, bt, bud = summary["base"], summary["base_tuning"], summary["budget"]
    selr = summary["selection"]
    lines = [f"# RPO pairs vs reward pairs ({summary['prefix']})", "",
             f"Status: {summary['status']}. Budget: {bud}; CPU: "
             f"{summary.get('cpu_minutes', 0):.1f} min in the cells and pair building.", "",
             f"Base model (step 0, reported draws): CNN-judge accuracy "
             f"{b['eval/accuracy']:.3f}, independent-judge accuracy {b['indep/accuracy']:.3f}, "
             f"FD {b['eval/fd']:.2f}. Independent judge (RBF SVM on pixels, trained on the test "
             f"split): accuracy {summary['judge_heldout_accuracy']:.3f} on the train split.", "",
             "## Learning-rate selection (tuning seeds "
             f"{list(bud['tuning_seeds'])}, tuning draws; never reported)", "",
             f"Rule: {selr['selection_rule']}. Base on the tuning draws: CNN-judge accuracy "
             f"{bt['eval/accuracy']:.3f}, FD {bt['eval/fd']:.2f}. Grid widened geometrically "
             f"while the pick sits at an edge (at most {bud['max_widen']} times). Rows `rpo/<option>`: "
             "each option of the RPO arm selected by the same rule, grid and widening on its "
             "own tuning cells. Ties go to the value scored first (the grid ascending, then "
             "the values added by widening).", "",
             "| arm | lr: mean CNN acc / FD / indep. acc (tuning) | pick | edge | widened | "
             "note |", "|---|---|---|---|---|---|"]
    for arm, ch in selr["chosen"].items():
        sc = "; ".join(f"{k}: {v['reward']:.3f} / {v['fd']:.1f} / {v['indep']:.3f}"
                       for k, v in sorted(ch["scores"].items(), key=lambda kv: float(kv[0])))
        pick = "none" if ch["pick"] is None else f"{ch['pick']:g}"
        lines.append(f"| {arm} | {sc} | {pick} | {ch['edge']} | {ch['widened']} | "
                     f"{ch['reason']} |")
    for variant, v in summary["variants"].items():
        lines += ["", f"## {variant} (seeds {v['seeds'][0]}–{v['seeds'][-1]}, n = "
                  f"{len(v['seeds'])}; pairs per seed {v['pairs']}; lr {v['lr']})", "",
                  f"Claims at the final step, paired by seed ({variant} RPO − "
                  f"{v['compared_with']}); paired t-interval 95 %, Welch beside it; Holm "
                  "across every claim of this file (FWER 0.05).", "",
                  *sel.claims_table(v["claims"],
                                    digits=lambda c: ".2f" if c["key"] == "eval/fd" else ".3f")]
        lines += ["", "| arm | step | independent-judge accuracy ↑ | CNN-judge accuracy ↑ | "
                  "p(prompted digit) ↑ | FD to real ↓ | critic: any finding ↓ | collapse |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm, rows in v["arms"].items():
            for r in rows:
                col = f"{v['collapse'][arm]:.2f}" if r is rows[-1] else ""
                lines.append(f"| {arm} ({variant}) | {r['step']} | {f(r['indep/accuracy'])} | "
                             f"{f(r['eval/accuracy'])} | {f(r['eval/label_prob'])} | "
                             f"{f(r['eval/fd'], 2)} | {f(r['eval/flagged'])} | {col} |")
        lines += ["", "Per seed (final step):", "",
                  "| arm | seed | independent-judge acc. | CNN-judge acc. | FD |",
                  "|---|---|---|---|---|"]
        last = max(r["step"] for r in v["per_seed"])
        lines += [f"| {r['arm']} | {r['seed']} | {r['indep/accuracy']:.3f} | "
                  f"{r['eval/accuracy']:.3f} | {r['eval/fd']:.2f} |"
                  for r in v["per_seed"] if r["step"] == last]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Alignment (independent judge) against FD over training steps: every (variant, arm) curve
    with 95 % intervals on both axes, and the tuning runs beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, sw) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    for variant, v in summary["variants"].items():
        for arm, rows in v["arms"].items():
            xs = [r["eval/fd"]["mean"] for r in rows]
            ys = [r["indep/accuracy"]["mean"] for r in rows]
            ax.errorbar(xs, ys, xerr=[r["eval/fd"]["ci95"] or 0 for r in rows],
                        yerr=[r["indep/accuracy"]["ci95"] or 0 for r in rows], marker="o",
                        ms=3, capsize=2, ls="-" if arm == "rpo" else "--",
                        label=f"{arm} pairs, {variant} (lr {v['lr'][arm]:g}, "
                              f"{len(v['seeds'])} seeds)")
            for r, x, y in zip(rows, xs, ys):
                ax.annotate(str(r["step"]), (x, y), fontsize=6)
    ax.set_title("alignment vs FD over Diffusion-DPO steps (labels: step)", fontsize=9)
    ax.set_xlabel("FD to real digits (CNN-judge features) ↓")
    ax.set_ylabel("prompt accuracy (independent judge) ↑")
    ax.legend(fontsize=6)
    for t in summary.get("tuning", []):
        if t.get("variant", "default") != "default":
            continue  # the options' tuning runs are in table.md
        sw.scatter(t["final"]["eval/fd"], t["final"]["eval/accuracy"], s=12,
                   marker="o" if t["arm"] == "rpo" else "x", color="C0" if t["arm"] == "rpo"
                   else "C1")
        sw.annotate(f"{t['lr']:g}", (t["final"]["eval/fd"], t["final"]["eval/accuracy"]),
                    fontsize=5)
    sw.axvline(FD_LIMIT * summary["base_tuning"]["eval/fd"], color="k", ls=":", lw=1,
               label="FD floor of the rule")
    sw.set_title("tuning runs (o: rpo, x: reward; labels: lr)", fontsize=9)
    sw.set_xlabel("final FD (tuning draws) ↓")
    sw.set_ylabel("final CNN-judge accuracy ↑")
    sw.set_xscale("log")
    sw.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
