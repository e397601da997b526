"""experiments/ct_rl_dt_robustness/run.py --quick: every variant × Δt × seed is trained, the
step size is picked on the tuning seed, intervals and floors are written, a rerun reuses cells."""

import importlib.util
import json
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "experiments" / "ct_rl_dt_robustness" / "run.py"


def _module():
    spec = importlib.util.spec_from_file_location("ct_dt_run", RUN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_writes_every_cell_with_intervals(tmp_path):
    mod = _module()
    mod.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    labels = list(mod.variants())
    assert len(labels) == 18  # 3 CT + 2 DT × 3 forms, each with both critics
    assert len(res["rows"]) == len(labels) * len(res["dts"]) * len(res["seeds"])
    for lab in labels:
        tuned = [r for r in res["tuning"] if r["variant"] == mod.canonical(lab, res["tune_dt"])]
        best = min(tuned, key=lambda r: r["gap"])["step"]
        assert res["chosen_step"][lab] == best
        for dt in res["dts"]:
            s = res["summary"][f"{lab}|{dt:g}"]
            assert s["n"] == 2 and s["ci95"] >= 0
    for dt in res["dts"]:  # fixed per-step constants solve a different problem
        assert res["floors"]["fixed"][str(dt)] > res["floors"]["chain"][str(dt)]
    table = (tmp_path / "table.md").read_text()
    assert all(lab in table for lab in labels)
    n_cells = len(list((tmp_path / "cells").glob("*.json")))
    mod.main(["--quick", "--out", str(tmp_path)])  # everything cached: nothing new
    assert len(list((tmp_path / "cells").glob("*.json"))) == n_cells
