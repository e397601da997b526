"""experiments/cdpm_robustness/digits_horizon.py --quick: the horizon is picked per family on the
tuning seed (lowest FD; the grid widened at an edge), every reported seed is trained at the
pick, paired claims with Holm are written, a rerun reuses every cell; the horizon statistics
match their closed forms; the claims pair by seed."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "experiments" / "cdpm_robustness" / "digits_horizon.py"


@pytest.fixture(scope="module")
def mod():
    """The experiment module, loaded once for both tests."""
    spec = importlib.util.spec_from_file_location("cdpm_digits_horizon", RUN)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_horizon_stats_closed_forms(mod):
    # VP, β linear from 0.1 to 20 over [0, T]: ∫β = T (β_min + β_max)/2, s/m = sqrt(e^B − 1)
    vp = mod.horizon_stats("vp", 0.5)
    assert vp["int_g2"] == pytest.approx(0.5 * 10.05, rel=1e-6)
    assert vp["nsr_T"] == pytest.approx(math.sqrt(math.expm1(0.5 * 10.05)), rel=1e-6)
    # COU (σ = 10, T = 1): ∫g² = σ² T whatever θ; s/m = σ sqrt((1 − e^{−2θ}) / 2θ)
    for theta in (0.5, 2.0):
        cou = mod.horizon_stats("cou", theta)
        assert cou["int_g2"] == pytest.approx(100.0, rel=1e-9)
        assert cou["nsr_T"] == pytest.approx(
            10 * math.sqrt(-math.expm1(-2 * theta) / (2 * theta)), rel=1e-6)
    ve = mod.horizon_stats("ve", 12.5)  # m = 1, s(T) ≈ σ_max
    assert ve["nsr_T"] == pytest.approx(12.5, rel=1e-3)


def test_quick_run_picks_per_family_and_caches(tmp_path, mod):
    args = ["--quick", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]
    mod.main(args)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    fams = {r["family"] for r in res["tuning"]}
    assert fams == {"vp", "cou"} and res["status"] == "complete"
    chosen = res["selection"]["chosen"]
    for f in fams:
        tuned = [r for r in res["tuning"] if r["family"] == f]
        assert {r["seed"] for r in tuned} == {mod.TUNE_SEED}
        ch = chosen[f]
        assert sorted(r["horizon"] for r in tuned) == sorted(ch["grid"])
        assert len(ch["grid"]) == 2 + ch["widened"]  # quick: 2 values, ≤ 1 widening
        assert res["picked"][f] == ch["pick"] == min(tuned, key=lambda r: r["fd"])["horizon"]
        grid = sorted(ch["grid"])
        assert ch["edge"] == (ch["pick"] in (grid[0], grid[-1]))
        rows = [r for r in res["rows"] if r["family"] == f]
        assert sorted(r["seed"] for r in rows) == [0, 1]
        assert all(r["horizon"] == res["picked"][f] and r["fd"] > 0 for r in rows)
        s = res["summary"][f]
        assert s["n"] == 2 and s["fd_ci95"] >= 0 and 0 <= s["accuracy"] <= 1
    assert set(res["claims"]) == {"FD: vp − cou", "accuracy: vp − cou"}
    by = {(r["family"], r["seed"]): r["fd"] for r in res["rows"]}
    c = res["claims"]["FD: vp − cou"]
    assert c["paired"]["diff"] == pytest.approx(
        sum(by[("vp", s)] - by[("cou", s)] for s in (0, 1)) / 2)
    assert c["paired"]["p"] <= c["holm"]["p_holm"] <= 1
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| vp |" in table and "p (Holm)" in table
    cells = sorted((tmp_path / "out" / "cells").glob("*.json"))
    assert len(cells) == sum(len(chosen[f]["grid"]) for f in fams) + 4
    mtimes = [c.stat().st_mtime_ns for c in cells]
    mod.main(args)  # everything cached: nothing retrained
    assert [c.stat().st_mtime_ns for c in cells] == mtimes


def test_claims_pair_by_seed(mod):
    rows = [{"family": f, "seed": s, "fd": 100.0 + 20 * s + d, "accuracy": 0.5}
            for s in range(5) for f, d in (("vp", 0.0), ("cou", 7.0), ("ve", 3.0))]
    cl = mod.claims(rows, ("ve", "vp", "cou"))
    assert len(cl) == 6  # 3 pairs × (FD, accuracy)
    c = cl["FD: vp − cou"]
    assert c["paired"]["diff"] == pytest.approx(-7.0)
    assert c["paired"]["half"] == pytest.approx(0.0, abs=1e-9)  # the seed spread cancels
    assert c["welch"]["half"] > 20  # unpaired it does not
    assert c["holm"]["reject"]
    assert not cl["accuracy: vp − cou"]["holm"]["reject"]
    names = list(cl)  # no claim name inside another (docs cite rows by substring)
    assert not any(a != b and a in b for a in names for b in names)


def test_widening_stays_inside_the_limits(mod):
    def cell(f, h, s):  # FD falls toward shorter horizons without end
        return {"fd": 100.0 * h, "accuracy": 0.5}

    t = mod.tune_family("csubvp", (0.5, 1.0, 1.5), cell, max_widen=10)
    assert t.edge and min(t.grid) >= mod.LIMITS["csubvp"][0] and t.pick == min(t.grid)
    t = mod.tune_family("vp", (0.5, 1.0, 2.0), lambda f, h, s: {"fd": (h - 0.25) ** 2,
                                                                "accuracy": 0.5}, max_widen=3)
    assert t.pick == 0.25 and not t.edge and t.widened == 2
