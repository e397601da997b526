"""experiments/rl_sample_efficiency --quick: cached cells, per-seed rows, chosen lr, intervals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _study():
    spec = importlib.util.spec_from_file_location(
        "rl_sample_efficiency", ROOT / "experiments" / "rl_sample_efficiency" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_study_writes_per_seed_rows_chosen_lr_and_intervals(tmp_path):
    study = _study()
    assert study.main(["--quick", "--results", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results_quick.json").read_text())
    assert set(res["chosen_lr"]) == {"LOOP", "SaA-DDIM"}
    for m, rows in res["per_seed"].items():
        assert [r["seed"] for r in rows] == [0]
        assert all(0 <= r["final_eval_gold"] <= 1 for r in rows)
    assert len(res["beta0"]["LOOP"]["final_eval_reward"]) == 2  # (mean, 95 % half-width)
    cells = sorted((tmp_path / "cells").rglob("*.json"))
    assert len(cells) == 4  # selection seed + seed 0, two methods
    row0 = json.loads(cells[0].read_text())["rows"][0]
    assert row0["epoch"] == 0 and row0["queries/reward"] == 0.0
    mtime = [c.stat().st_mtime_ns for c in cells]
    assert study.main(["--quick", "--results", str(tmp_path), "--no-new-cells"]) == 0
    assert [c.stat().st_mtime_ns for c in cells] == mtime  # cached: nothing recomputed


def test_interval_and_interpolation_helpers():
    study = _study()
    m, h = study.ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    assert m == 3.0 and abs(h - 2.776 * (2.5 ** 0.5) / 5 ** 0.5) < 1e-9
    assert study.interp_at([0.0, 1.0, 3.0], [0.0, 10.0, 20.0], 2.0) == 15.0
    assert study.first_reach([0, 16, 32], [0.1, 0.2, 0.4], 0.3) == 24.0
    assert study.first_reach([0, 16], [0.1, 0.2], 0.3) == float("inf")
