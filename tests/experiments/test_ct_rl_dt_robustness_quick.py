"""experiments/ct_rl_dt_robustness/run.py --quick: the step size of every row is chosen on the
tuning seed (never reported) with the grid widened at an edge, every variant × Δt × reported
seed is trained at the pick, the paired claims carry Holm-adjusted p-values, a rerun reuses
every cell; and the claim list on a hand-made table."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "experiments" / "ct_rl_dt_robustness" / "run.py"


@pytest.fixture(scope="module")
def mod():
    spec = importlib.util.spec_from_file_location("ct_dt_run", RUN)
    m = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = m
    spec.loader.exec_module(m)
    return m


def test_quick_run_tunes_reports_and_corrects(tmp_path, mod):
    mod.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    labels = list(mod.variants())
    assert len(labels) == 18  # 3 CT + 2 DT × 3 forms, each with both critics
    assert res["status"] == "complete"
    assert not set(res["seeds"]) & set(res["tune_seeds"])  # tuning seeds never reported
    assert {r["seed"] for r in res["rows"]} == set(res["seeds"])
    assert len(res["rows"]) == len(labels) * len(res["dts"]) * len(res["seeds"])
    chosen = res["selection"]["chosen"]
    for lab in labels:
        ch = chosen[lab]
        tuned = {r["step"]: r["gap"] for r in res["tuning"] if r["row"] == lab}
        assert set(tuned) == {float(k) for k in ch["scores"]}  # every grid value was trained
        assert ch["pick"] == min(tuned, key=tuned.get)  # smallest gap on the tuning seed
        grid = sorted(ch["grid"])
        # an edge pick was widened (quick: at most once); edge is flagged iff still at an end
        assert ch["edge"] == (ch["pick"] in (grid[0], grid[-1]))
        if ch["widened"] == 0:
            assert not ch["edge"]
        assert res["chosen_step"][lab] == ch["pick"]
        assert all(r["step"] == ch["pick"] for r in res["rows"] if r["variant"] == lab)
        for dt in res["dts"]:
            s = res["summary"][f"{lab}|{dt:g}"]
            assert s["n"] == 2 and s["ci95"] >= 0
    claims = res["claims"]
    assert claims and all(c["paired"]["n"] == 2 for c in claims.values())
    ps = sorted(claims.values(), key=lambda c: c["paired"]["p"])
    for c in claims.values():  # Holm: adjusted ≥ raw, never above 1
        assert c["paired"]["p"] <= c["holm"]["p_holm"] <= 1.0
    assert ps[0]["holm"]["p_holm"] == pytest.approx(min(1.0, len(ps) * ps[0]["paired"]["p"]))
    for dt in res["dts"]:  # fixed per-step constants solve a different problem
        assert res["floors"]["fixed"][str(dt)] > res["floors"]["chain"][str(dt)]
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {lab} |" in table for lab in labels) and "p (Holm)" in table
    n_cells = len(list((tmp_path / "cells").glob("*.json")))
    mod.main(["--quick", "--out", str(tmp_path)])  # everything cached: nothing new
    assert len(list((tmp_path / "cells").glob("*.json"))) == n_cells


def test_claims_pair_by_seed(mod):
    labels = list(mod.variants())
    names = [c[1] for c in mod.claim_list(labels, [0.05, 0.01])]
    assert len(names) == len(set(names))
    # no claim name is contained in another (a doc's row reference must match one row)
    assert not any(a != b and a in b for a in names for b in names)
    # fixed = rescaled at Δt_ref: no fixed twin there
    assert not any("fixed" in n and "Δt = 0.05" in n and n.startswith("CT") for n in names)
    rows = []
    for seed in range(4):  # CT-PG better than its λ=0 twin by exactly 0.01 on every seed
        for lab in labels:
            for dt in (0.05, 0.01):
                g = 0.1 + 0.03 * seed + (0.01 if lab.startswith("DT-PG rescaled λ=0") else 0)
                rows.append({"variant": lab, "dt": dt, "seed": seed, "gap": g})
    fl = {"fixed": {0.05: 0.0, 0.01: 0.0}, "chain": {0.05: 0.0, 0.01: 0.0}}
    cl = mod.analyse(rows, labels, [0.05, 0.01], fl)
    c = cl["CT-PG [TD] − DT-PG rescaled λ=0 [TD], Δt = 0.01"]
    assert c["paired"]["diff"] == pytest.approx(-0.01)
    assert c["paired"]["half"] == pytest.approx(0.0, abs=1e-12)  # pairing removes seed spread
    assert c["welch"]["half"] > 0.03  # unpaired, the seed spread stays
