"""experiments/cdpm_robustness/digits_horizon.py --quick: the horizon is picked per family on the
tuning seed (lowest FD), every evaluation seed is trained at the pick, intervals are written,
a rerun reuses every cell; the horizon statistics match their closed forms."""

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
    assert fams == {"vp", "cou"} and len(res["tuning"]) == 4
    for f in fams:
        tuned = [r for r in res["tuning"] if r["family"] == f]
        assert {r["seed"] for r in tuned} == {mod.TUNE_SEED}
        assert res["picked"][f] == min(tuned, key=lambda r: r["fd"])["horizon"]
        rows = [r for r in res["rows"] if r["family"] == f]
        assert sorted(r["seed"] for r in rows) == [0, 1]
        assert all(r["horizon"] == res["picked"][f] and r["fd"] > 0 for r in rows)
        s = res["summary"][f]
        assert s["n"] == 2 and s["fd_ci95"] >= 0 and 0 <= s["accuracy"] <= 1
    assert "| vp |" in (tmp_path / "out" / "table.md").read_text()
    cells = sorted((tmp_path / "out" / "cells").glob("*.json"))
    assert len(cells) == 8
    mtimes = [c.stat().st_mtime_ns for c in cells]
    mod.main(args)  # everything cached: nothing retrained
    assert [c.stat().st_mtime_ns for c in cells] == mtimes
