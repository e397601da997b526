"""experiments/rl_sample_efficiency: the --quick run (cached cells, tuning vs reported seeds and
draws, on-policy clip, the selection record, paired claims with Holm, the table the docs cite)
and the helpers."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _study():
    return _load("rl_sample_efficiency", ROOT / "experiments" / "rl_sample_efficiency" / "run.py")


def test_quick_study_tunes_on_unreported_cells_and_reports_paired_claims(tmp_path):
    study = _study()
    assert study.main(["--quick", "--results", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results_quick.json").read_text())
    rec = res["record"]
    # tuning seeds and draws are disjoint from the reported ones
    sp = rec["split"]
    assert set(sp["tuning_seeds"]).isdisjoint(sp["reported_seeds"])
    assert sp["tuning_draws"] != sp["reported_draws"]
    cells = sorted((tmp_path / "cells").rglob("*.json"))
    names = [c.name for c in cells]
    assert len(cells) == 6  # 2 methods × (1 tuning seed + 2 reported seeds)
    assert sum(f"seed1000__draws{sp['tuning_draws']}" in n for n in names) == 2
    assert sum(f"draws{sp['reported_draws']}" in n for n in names) == 4
    # a one-value grid with no widening allowed is an edge pick and says so
    for m in ("DDPO", "LOOP"):
        ch = rec["chosen"][m]
        assert ch["pick"] == 1e-4 and ch["edge"] is True and "cap of 0" in ch["reason"]
    assert rec["any_edge"] is True
    for m, rows in res["per_seed"].items():
        assert [r["seed"] for r in rows] == [0, 1]
        for r in rows:
            assert 0 <= r["final_eval_gold"] <= 1
            assert r["clip_frac_mb0"] == 0.0  # on-policy: ratio 1, the clip never binds
            assert math.isnan(r["clip_frac_later"])  # one minibatch: no later ones
    # paired claims against DDPO, Holm across all three
    cmp_ = res["comparisons"]
    names = set(cmp_["pairs"])
    assert names == {"LOOP − DDPO: final eval reward", "LOOP − DDPO: final eval gold",
                     "LOOP − DDPO: mean eval reward over epochs"}
    for name, c in cmp_["pairs"].items():
        assert c["paired"]["n"] == 2
        assert cmp_["holm"][name]["p_holm"] >= cmp_["holm"][name]["p"] or \
            math.isnan(cmp_["holm"][name]["p"])
    # the table carries the rule, the edge flag and a claims table the verdict checker reads
    table = (tmp_path / "table_quick.md").read_text()
    assert "Selection rule: max mean eval reward" in table and "at a grid edge" in table
    cv = _load("check_verdicts", ROOT / "scripts" / "check_verdicts.py")
    rows = [(r, h) for _, r, h in cv.table_rows(tmp_path / "table_quick.md")
            if r.startswith("| LOOP − DDPO")]
    assert len(rows) == 3
    assert all(cv.support_value(r, h) in (True, False) for r, h in rows)
    # cached: a tabulate-only rerun recomputes nothing
    mtime = [c.stat().st_mtime_ns for c in cells]
    assert study.main(["--quick", "--results", str(tmp_path), "--no-new-cells"]) == 0
    assert [c.stat().st_mtime_ns for c in cells] == mtime


def test_interval_interpolation_and_auc_helpers():
    study = _study()
    m, h = study.ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    assert m == 3.0 and abs(h - 2.7764451 * (2.5 ** 0.5) / 5 ** 0.5) < 1e-6
    assert study.interp_at([0.0, 1.0, 3.0], [0.0, 10.0, 20.0], 2.0) == 15.0
    assert study.first_reach([0, 16, 32], [0.1, 0.2, 0.4], 0.3) == 24.0
    assert study.first_reach([0, 16], [0.1, 0.2], 0.3) == float("inf")
    cell = {"rows": [{"eval/reward": 9.0}, {"eval/reward": 1.0}, {"eval/reward": 3.0}]}
    assert study.auc(cell) == 2.0  # epoch 0 (the base) is not counted
    assert study.tail(cell) == 2.0


def test_compare_is_paired_and_holm_corrected():
    study = _study()
    # B = A + 0.1 on every seed with seed-to-seed spread 1: the paired interval excludes 0,
    # Welch's does not
    base = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5, 0.0]
    shift = [0.1, 0.11, 0.09, 0.1, 0.1, 0.12, 0.08, 0.1, 0.1, 0.1]
    rows = {"DDPO": [], "LOOP": []}
    for s, (b, d) in enumerate(zip(base, shift)):
        rows["DDPO"].append({"seed": s, "final_eval_reward": b, "final_eval_gold": 1.0,
                             "auc_eval_reward": b})
        rows["LOOP"].append({"seed": s, "final_eval_reward": b + d, "final_eval_gold": 1.0 - d,
                             "auc_eval_reward": b})
    out = study.compare(rows)
    r = out["pairs"]["LOOP − DDPO: final eval reward"]
    assert abs(r["paired"]["diff"] - 0.1) < 1e-12 and r["paired"]["lo"] > 0
    assert r["welch"]["lo"] < 0 < r["welch"]["hi"]
    assert out["holm"]["LOOP − DDPO: final eval reward"]["reject"]
    assert out["holm"]["LOOP − DDPO: final eval gold"]["reject"]
    assert not out["holm"]["LOOP − DDPO: mean eval reward over epochs"]["reject"]  # diff 0
    assert len(out["holm"]) == 3
