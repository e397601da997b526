"""experiments/flow_rl --quick: one cell end to end, cached, and the table written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "experiments" / "flow_rl" / "run.py"


@pytest.mark.slow
def test_flow_rl_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("flow_rl_run", RUN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--results", str(tmp_path)]) == 0
    cells = list((tmp_path / "cells").glob("*.json"))
    assert len(cells) == 1
    cell = json.loads(cells[0].read_text())
    assert cell["epochs"][0]["cost/model_evals_grad"] > 0
    assert {"eval/reward", "eval/gold"} <= set(cell["eval_end"])
    assert [e["epoch"] for e in cell["evals"]] == [0, 1]
    assert 0 < cell["evals"][0]["cpu_s"] <= cell["evals"][1]["cpu_s"] == cell["cpu_s"]
    assert cell["evals"][1]["queries"] == 4  # P·K rollouts of one epoch
    assert "Flow-GRPO-Fast" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "per_seed.csv").read_text().splitlines()[1].startswith("Flow-GRPO-Fast,")
    assert (tmp_path / "figures" / "reward_vs_queries.png").is_file()
    assert (tmp_path / "figures" / "reward_vs_cpu.png").is_file()
    mtime = cells[0].stat().st_mtime
    assert mod.main(["--quick", "--results", str(tmp_path)]) == 0  # cached: not re-run
    assert cells[0].stat().st_mtime == mtime
