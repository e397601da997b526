"""Shared test fixtures (each block is owned by the area that uses it)."""

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
