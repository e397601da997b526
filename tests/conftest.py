"""Fixtures shared across test directories (one block per area; keep blocks self-contained)."""

from __future__ import annotations

# --- lead fixtures ---
import os
import signal
import subprocess
import sys

import pytest
import torch


@pytest.fixture
def pretrain_killed_and_resumed(tmp_path):
    """Run ``scorealign pretrain`` in a subprocess that SIGKILLs itself right after the checkpoint
    of step ``kill_at`` (``SCOREALIGN_KILL_AFTER_CHECKPOINT``: a real ``kill -9`` at a
    deterministic point), resume it with ``pretrain --resume``, and run the same config
    uninterrupted; returns ``(killed_dir, reference_dir)``. Both continue with one thread, the
    kernels of the subprocess."""
    from typer.testing import CliRunner

    from scorealign.cli import app
    from scorealign.config import load_config
    from scorealign.train.checkpoint import KILL_ENV, latest_checkpoint
    from scorealign.train.pretrain import PretrainConfig, pretrain
    from scorealign.train.rundir import RunDir

    def run(config: str, sets: list[str], kill_at: int):
        killed = tmp_path / "killed"
        cmd = [sys.executable, "-m", "scorealign.cli", "pretrain", "--config", config,
               "--out", str(killed)]
        for s in sets:
            cmd += ["--set", s]
        env = {**os.environ, KILL_ENV: str(kill_at), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert latest_checkpoint(killed / "checkpoints").name == f"step_{kill_at:06d}"
        assert not (killed / "final").exists()
        cfg = load_config(config, PretrainConfig, sets)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            res = CliRunner().invoke(app, ["pretrain", "--resume", str(killed)])
            assert res.exit_code == 0, res.output
            assert "resuming" in res.output and (killed / "report.html").is_file()
            ref = tmp_path / "ref"
            pretrain(cfg, RunDir.create(ref, cfg))
        finally:
            torch.set_num_threads(threads)
        return killed, ref

    return run
# --- end lead ---


# --- issue16 fixtures ---
import math as _math

import pytest as _pytest


@_pytest.fixture(scope="session")
def lq_policy():
    """Factory: ``lq_policy(pi)`` is a degree-1 ``GaussianPolicy`` on the 1-D LQ problem with the
    weights (h, k) and std s of the closed-form policy ``pi`` (a ``lq.LinearGaussian``)."""
    import torch

    from scorealign.control.policy import GaussianPolicy

    def make(pi):
        p = GaussianPolicy(1, 1, 1, _math.log(pi.s))
        with torch.no_grad():
            p.W.copy_(torch.tensor([[pi.h, pi.k]], dtype=torch.float64))
        return p

    return make
# --- end issue16 ---


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
