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
    assert set(cell["eval_end"]) == {"eval/reward", "eval/gold"}
    assert "Flow-GRPO-Fast" in (tmp_path / "table.md").read_text()
    mtime = cells[0].stat().st_mtime
    assert mod.main(["--quick", "--results", str(tmp_path)]) == 0  # cached: not re-run
    assert cells[0].stat().st_mtime == mtime
