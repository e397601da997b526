"""Fixtures shared across test directories (one block per issue; keep blocks self-contained)."""

from __future__ import annotations

# --- issue14 fixtures ---
import os as _os
import subprocess as _subprocess
import sys as _sys
from pathlib import Path as _Path

import pytest as _pytest

_TORCHRUN_WORKER = '''
import sys
import torch
sys.path.insert(0, {helpers!r})
from tests_rl_helpers import tiny_config, tiny_setup
from scorealign.rl.trainer import Finetuner

ft = Finetuner(tiny_config(*{sets!r}), None, setup=tiny_setup())
ft.fit()
if ft.acc.is_main_process:
    torch.save({{"state": ft.setup.trainable_state(ft.acc.unwrap_model(ft.model)),
                "type": str(ft.acc.distributed_type), "wrapper": type(ft.model).__name__}},
               sys.argv[1])
'''


@_pytest.fixture
def torchrun_finetune(tmp_path):
    """``launch(sets, n_proc, env=None) -> dict``: fine-tune tests/rl's tiny problem
    (``tiny_config(*sets)``) in ``n_proc`` fresh CPU processes under ``torchrun`` (gloo) and
    return the main process's ``{"state", "type", "wrapper"}`` (trainable weights, accelerate's
    distributed type, the model wrapper's class name). Fresh interpreters: forking the test
    process deadlocks once its OpenMP pool has run."""
    import torch

    helpers = tmp_path / "tests_rl_helpers.py"
    helpers.write_text((_Path(__file__).parent / "rl" / "conftest.py").read_text())
    worker = tmp_path / "torchrun_worker.py"

    def launch(sets: list[str], n_proc: int, env: dict[str, str] | None = None) -> dict:
        worker.write_text(_TORCHRUN_WORKER.format(helpers=str(tmp_path), sets=list(sets)))
        out = tmp_path / f"state_{n_proc}.pt"
        full = {**_os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
        torchrun = _Path(_sys.executable).with_name("torchrun")
        res = _subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(n_proc),
                               str(worker), str(out)], env=full, capture_output=True, text=True,
                              timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return torch.load(out)

    return launch

# --- end issue14 ---
