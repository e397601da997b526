"""experiments/rpo_vs_reward_pairs at --quick size: both arms from the same prompts, the same
number of pairs, a curve of evaluations over training steps per arm and seed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_rpo_experiment_quick_curves(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "experiments/rpo_vs_reward_pairs/run.py"),
                    "--quick", "--out", str(tmp_path), "--work", str(tmp_path / "w")],
                   check=True, capture_output=True, timeout=1200)
    cells = sorted((tmp_path / "cells").glob("*.json"))
    assert len(cells) == 4  # 2 seeds × 2 arms
    by = {(c["seed"], c["arm"]): c for c in map(lambda p: json.loads(p.read_text()), cells)}
    for seed in (0, 1):
        rpo, rw = by[(seed, "rpo")], by[(seed, "reward")]
        assert rpo["build"]["pairs"] == rw["build"]["pairs"] >= 2  # same prompts, same count
        assert [p["step"] for p in rpo["points"]] == [0, 2, 4]
        assert rpo["points"][0]["eval/fd"] == rw["points"][0]["eval/fd"]  # both start at base
    pairs_rpo = [json.loads(l)["prompt"] for l in
                 (tmp_path / "w/g1-same-sft0-quick/pairs_rpo_s0/pairs.jsonl").read_text()
                 .splitlines()]
    pairs_rw = [json.loads(l)["prompt"] for l in
                (tmp_path / "w/g1-same-sft0-quick/pairs_reward_s0/pairs.jsonl").read_text()
                .splitlines()]
    assert pairs_rpo == pairs_rw
    assert (tmp_path / "results_quick.md").is_file()
