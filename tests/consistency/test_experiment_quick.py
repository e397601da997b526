"""experiments/consistency --quick runs end to end on the shipped models and caches its cells."""

import json
import sys
from pathlib import Path

import pytest

from scorealign.train.bases import resolve_base_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not (resolve_base_path("pretrained:digits8-cd") / "config.yaml").is_file(),
                    reason="digits8-cd is not shipped in this checkout")
def test_quick_experiment(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments" / "consistency"))
    try:
        import run
    finally:
        sys.path.pop(0)
    run.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "quick" / "results" / "results.json").read_text())
    methods = {(r["method"], r["nfe"]) for r in res["sampling"]}
    assert {("teacher/ddim", 1), ("cd/consistency", 1), ("cd/consistency", 2),
            ("teacher/heun", 2)} <= methods
    for r in res["sampling"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["fd"] > 0 and r["ms_per_sample"] > 0
    arms = {r["arm"]: r for r in res["rl"]}
    assert arms["cm_2step"]["steps"] == 2 and arms["teacher_10step"]["steps"] == 10
    # a second run reuses every cached cell
    cells = sorted((tmp_path / "quick" / "cells").glob("*.json"))
    stamps = [c.stat().st_mtime_ns for c in cells]
    run.main(["--quick", "--out", str(tmp_path)])
    assert [c.stat().st_mtime_ns for c in cells] == stamps


@pytest.mark.slow
def test_recipe_study_quick(tmp_path):
    """study.py --quick trains two recipe arms, scores 1 and 2 steps, and reuses its cache."""
    sys.path.insert(0, str(ROOT / "experiments" / "consistency"))
    try:
        import study
    finally:
        sys.path.pop(0)
    args = ["--quick", "--out", str(tmp_path), "--arms", "cd_ect,ct_ect"]
    study.main(args)
    res = json.loads((tmp_path / "quick" / "results" / "results.json").read_text())
    cells = {(r["arm"], r["nfe"]) for r in res["rows"]}
    assert {("cd_ect", 1), ("cd_ect", 2), ("ct_ect", 1), ("ct_ect", 2)} <= cells
    for r in res["rows"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["fd"] > 0
    for meta in res["train"].values():
        assert meta["train_cpu_s"] > 0 and (tmp_path / "quick" / "runs" / meta["run"]
                                            / "final" / "model.safetensors").is_file()
    assert res["teacher"]["nfe"] == 2 and "FD / teacher" in (
        tmp_path / "quick" / "results" / "table.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "quick" / "cells").glob("*.json")}
    study.main(args)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
