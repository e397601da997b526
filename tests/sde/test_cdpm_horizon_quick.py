"""experiments/cdpm_robustness/horizon.py --quick: the closed-form horizon sweep runs and its
measured output shifts agree with the exact-rate factor and never exceed the drift-only bound."""

import importlib.util
import json
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "experiments" / "cdpm_robustness" / "horizon.py"


def test_quick_horizon_sweep(tmp_path):
    spec = importlib.util.spec_from_file_location("cdpm_horizon", RUN)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    mod.main(["--quick", "--results", str(tmp_path)])
    res = json.loads((tmp_path / "horizon.json").read_text())
    errs = [r for r in res["horizon"] if r["kind"] == "error"]
    assert len(errs) == 4 * 2 * 3  # families × T × error models
    for r in errs:
        measured = r[f"measured_shift_per_delta_h{res['h_fine']:g}"]
        assert measured <= 1.02 * r["F_exact"]
        if r["model"] != "eps/s2":  # 1/s² near t_min needs finer steps than --quick's
            assert measured >= 0.9 * r["F_exact"]
        assert r["F_exact"] <= r["F_bound_drift"] * (1 + 1e-6)
    # contractive OU keeps a bounded noise-to-signal ratio: the prior start never becomes exact
    cou = [r for r in errs if r["family"] == "cou" and r["model"] == "abs"]
    assert min(r["w2_clean_prior"] for r in cou) > 0.5
    assert (tmp_path / "horizon.md").is_file() and (tmp_path / "horizon.png").is_file()
