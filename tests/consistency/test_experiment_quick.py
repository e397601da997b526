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
