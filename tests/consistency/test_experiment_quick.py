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


def test_study_table_header_states_selection_seeds_intervals_correction():
    """The recipe-study tables say what was chosen from them and on what, their training seeds,
    that intervals are t-intervals over training seeds (none for one seed), and no correction."""
    sys.path.insert(0, str(ROOT / "experiments" / "consistency"))
    try:
        import study
    finally:
        sys.path.pop(0)
    pick = study.RECIPE_PICK
    rows = [{"arm": arm, "cell": f"{arm}_s{s}_k200_b16", "nfe": nfe, "accuracy": acc + 0.01 * s,
             "fd": 100.0 + s} for arm, acc, seeds in ((pick["arm"], 0.8, (0, 1, 2)),
                                                     ("other", 0.5, (0,)))
            for s in seeds for nfe in (1, 2)]
    teacher = {"nfe": 25, "accuracy": 0.99, "fd": 44.0, "n": 500}
    meta = {r["cell"]: {"train_cpu_s": 30.0} for r in rows}
    text = study.table(rows, teacher, meta, pick["steps"], pick["batch"], 500)
    head = text.split("| arm |")[0]
    assert f"`{pick['arm']}` ({pick['config']}), was chosen from this table" in head
    assert f"the rule picks `{pick['arm']}` (0.810)" in head  # mean of 0.80, 0.81, 0.82
    assert f"{pick['arm']} [0, 1, 2], other [0]" in head and "sampling seed 1234" in head
    assert "t-interval over training seeds where n ≥ 2" in head and "Correction: none" in head
    assert "edge: n/a" in head
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")]
             for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| arm")]
    rows_by = {(c[0], c[3]): c for c in cells}  # (arm, NFE) -> cells
    one = rows_by[("other", "1")]
    assert one[1] == "1 (0)" and one[4] == "0.5" and one[7] == ""  # one seed: no interval
    three = rows_by[(pick["arm"], "1")]
    assert three[1] == "3 (0, 1, 2)" and three[4].startswith("0.81 ± ")
    assert three[7] == "shipped recipe"
    # another budget: nothing is chosen; the chosen recipe's rows are not held out from the pick
    text = study.table(rows, teacher, meta, 500, 16, 500)
    assert "nothing is chosen from this table" in text and "not held out" in text
    assert "shipped model `pretrained:digits8-cd`" in text and "shipped recipe |" not in text
