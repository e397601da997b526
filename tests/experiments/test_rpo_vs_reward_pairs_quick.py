"""experiments/rpo_vs_reward_pairs at --quick size (in-process: the suite has the imports):
both arms from the same prompts, the same number of pairs, a curve of evaluations over training
steps per arm, seed and variant, the lr picked by the sweep rule, a resumed run recomputes
nothing."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _experiment():
    spec = importlib.util.spec_from_file_location(
        "rpo_vs_reward_pairs_run", ROOT / "experiments/rpo_vs_reward_pairs/run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_rpo_experiment_quick_curves(tmp_path):
    exp = _experiment()
    argv = ["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "w")]
    exp.main(argv)
    cells = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json")}
    lrs = exp.QUICK["lrs"]
    # base evaluation + lr sweep (2 lrs × 2 arms) + 2 seeds × (default: 2 arms; options: RPO)
    per_seed = sum(len(v["arms"]) for v in exp.VARIANTS.values())
    assert len(cells) == 1 + 2 * len(lrs) + 2 * per_seed
    assert exp.VARIANTS["default"]["arms"] == ("rpo", "reward")
    base = cells["quick-g1-base"]
    steps = list(range(1, exp.QUICK["steps"] + 1, exp.QUICK["eval_every"]))
    for seed in (0, 1):
        rpo = cells[f"quick-g1-default-s{seed}-rpo"]
        rw = cells[f"quick-g1-default-s{seed}-reward"]
        assert rpo["build"]["pairs"] == rw["build"]["pairs"] >= 2  # same prompts, same count
        for variant in exp.VARIANTS:
            cell = cells[f"quick-g1-{variant}-s{seed}-rpo"]
            assert [p["step"] for p in cell["points"]] == steps
            assert cell["points"][-1]["eval/fd"] != base["eval/fd"]  # training moved the model
    # the SFT term changes training; the verifier variant re-verifies with classifier seed 2
    for sft in ("sft", "sft_matched"):
        assert cells[f"quick-g1-{sft}-s0-rpo"]["points"] != cells["quick-g1-default-s0-rpo"][
            "points"]
    assert cells["quick-g1-verifier-s0-rpo"]["build"]["verifier"] == "independent"
    for verifier in ("same", "independent"):
        prompts = [[json.loads(line)["prompt"] for line in
                    (tmp_path / f"w/quick-g1/pairs_{arm}_s0_{verifier}/pairs.jsonl")
                    .read_text().splitlines()] for arm in ("rpo", "reward")]
        assert prompts[0] == prompts[1]
    summary = json.loads((tmp_path / "results_quick.json").read_text())
    sweep = {arm: [c for n, c in cells.items() if "-sweep-" in n and n.endswith(arm)]
             for arm in exp.ARMS}
    for arm in exp.ARMS:
        assert summary["picked_lr"][arm] == exp.pick_lr(sweep[arm], base["eval/fd"])
        assert summary["variants"]["default"]["lr"][arm] == summary["picked_lr"][arm]
    rows = summary["variants"]["default"]["per_seed"]
    assert len(rows) == 2 * 2 * len(steps)  # arms × seeds × evaluation steps
    assert summary["variants"]["sft"]["compared_with"] == "default/rpo"
    assert summary["variants"]["default"]["compared_with"] == "default/reward"
    assert len(summary["variants"]["verifier"]["paired"]) == len(steps)
    assert (tmp_path / "results_quick.md").is_file() and (tmp_path / "frontier_quick.png").is_file()
    # a second run finds every cell cached and only re-tabulates
    stamp = {n: (tmp_path / "cells" / f"{n}.json").stat().st_mtime_ns for n in cells}
    exp.main(argv)
    assert stamp == {n: (tmp_path / "cells" / f"{n}.json").stat().st_mtime_ns for n in cells}


def test_pick_lr_rule():
    exp = _experiment()

    def c(lr, acc, fd):
        return {"lr": lr, "points": [{"eval/accuracy": acc, "eval/fd": fd}]}

    cells = [c(1e-6, 0.90, 10.0), c(1e-5, 0.95, 14.0), c(1e-4, 0.99, 16.0)]
    assert exp.pick_lr(cells, base_fd=10.0) == 1e-5  # 1e-4 breaks the FD limit (15)
    assert exp.pick_lr(cells, base_fd=2.0) == 1e-6  # none within the limit: the lowest lr
    assert exp.pick_lr([c(1e-6, 0.9, 1.0), c(1e-5, 0.9, 1.0)], 1.0) == 1e-6  # tie: lower lr
