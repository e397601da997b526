"""The preference experiments run end to end at --quick sizes (in-process: the suite has the
imports) and cache one JSON per cell; the Mallows bandit's φ arm uses the dispersion that
generated the data."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _module(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).parent.name, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bandit_phi_arm_uses_the_generating_dispersion():
    mb = _module("experiments/mallows_bandit/run.py")
    world = mb.make_world("graded", 6, 4, 5, seed=0)
    c = mb.dispersions(world)
    torch.testing.assert_close(c["mallows_phi[true]"], -world["phi"].log())  # not rescaled
    assert math.isclose(float(c["mallows_theta[true]"].mean()), 1.0, rel_tol=1e-12)
    assert math.isclose(float(c["mallows_theta[entropy]"].mean()), 1.0, rel_tol=1e-9)
    homo = mb.dispersions(mb.make_world("homogeneous", 6, 4, 5, seed=0))
    torch.testing.assert_close(homo["mallows_theta[true]"], torch.ones(6, dtype=torch.float64))


def test_bandit_beta_stack_equals_separate_runs():
    mb = _module("experiments/mallows_bandit/run.py")
    world = mb.make_world("two_group", 4, 4, 6, seed=1)
    c = mb.dispersions(world)["mallows_phi[true]"]
    both = mb.train_policies(world, "mallows_phi[true]", [0.5, 2.0], c, 20, 0.5)
    one = mb.train_policies(world, "mallows_phi[true]", [2.0], c, 20, 0.5)
    torch.testing.assert_close(both[1], one[0])


@pytest.mark.slow
def test_bandit_quick_run_writes_cells_and_table(tmp_path):
    _module("experiments/mallows_bandit/run.py").main(["--quick", "--out", str(tmp_path)])
    cells = list((tmp_path / "cells").glob("*.json"))
    assert len(cells) == 5 * (2 + 2)  # methods × (lr sweep + seeds), one world
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["worlds"]["graded"]) == {"dpo", "mallows_theta[true]",
                                                "mallows_theta[entropy]", "mallows_phi[true]",
                                                "mallows_phi[entropy]"}
    assert (tmp_path / "table.md").is_file() and (tmp_path / "frontier.png").is_file()


@pytest.mark.slow
def test_rainbowpo_ablation_quick_run(tmp_path):
    _module("experiments/rainbowpo_ablation/run.py").main(
        ["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "w")])
    res = json.loads((tmp_path / "results.json").read_text())
    assert len(res["rows"]) == 2 * 4 and set(res["lr"]) == {
        "DPO", "Mallows-θ (λ=0.29)", "Mallows-θ (λ auto)", "RainbowPO (λ auto)"}
    auto = [r for r in res["rows"] if r["variant"] == "Mallows-θ (λ auto)"]
    assert all(r["dispersion_scale"] > 0 for r in auto)
