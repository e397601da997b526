"""Fixtures shared across test directories: kill -9 / resume runs, the CLI in this process and a
tiny LoRA finetune's overrides, the torchrun launcher, the on-policy exactness check and the LQ
policy factory."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto --maxprocesses=2``) each worker gets an
    equal share of torch's intra-op threads (``OMP_NUM_THREADS``, else torch's default), at least
    one: with CI's ``OMP_NUM_THREADS=2`` two workers run one thread each instead of oversubscribing
    two cores. The share is exported as ``OMP_NUM_THREADS`` too, for the subprocesses the tests
    start. The suite passes with 1 and 2 threads (tests/README.md, "Thread counts")."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    share = max(1, torch.get_num_threads() // int(workerinput["workercount"]))
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch.set_num_threads(share)


def pytest_make_parametrize_id(config, val, argname):
    """Sampler keyword sets (``kw`` dicts with a ``sampler``) are named ``sampler=ddim-eta=1.0``
    (tests/policy/test_policy_logprob.py, tests/flow/test_flow_policy.py)."""
    if argname == "kw" and isinstance(val, dict) and "sampler" in val:
        return "-".join(f"{k}={v}" for k, v in val.items())
    return None


# -- kill -9 and resume ------------------------------------------------------------------------
def _kill9_then_resume(command: str, out: Path, args: list[str], at: int,
                       after_kill: Callable[[Path], None] | None = None) -> str:
    """``scorealign COMMAND --out OUT ARGS`` in a fresh process that SIGKILLs itself once the
    checkpoint of step/epoch ``at`` is on disk (``SCOREALIGN_KILL_AFTER_CHECKPOINT``: a real
    ``kill -9`` at a deterministic point), then ``COMMAND --resume OUT`` in this process; returns
    the resumed run's output. The child gets this process's intra-op thread count: CPU kernels
    are bit-reproducible per thread count."""
    from typer.testing import CliRunner

    from scorealign.cli.app import app
    from scorealign.run.checkpoint import KILL_ENV

    env = {**os.environ, KILL_ENV: str(at), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-m", "scorealign.cli", command, "--out", str(out),
                           *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "final").exists()
    if after_kill is not None:
        after_kill(out)
    res = CliRunner().invoke(app, [command, "--resume", str(out)])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="session")
def kill9_then_resume():
    """``run(out, args, epoch) -> output``: a ``scorealign finetune`` run killed after the
    checkpoint of ``epoch`` and resumed, which must report continuing from ``epoch``."""
    def run(out: Path, args: list[str], epoch: int) -> str:
        output = _kill9_then_resume("finetune", out, args, epoch)
        assert f"from epoch {epoch}" in output, output
        return output

    return run


@pytest.fixture
def pretrain_killed_and_resumed(tmp_path):
    """``run(config, sets, kill_at) -> (killed_dir, reference_dir)``: a ``scorealign pretrain``
    run killed after the checkpoint of step ``kill_at`` and resumed, and the same config run
    uninterrupted, both with one thread."""
    from scorealign.config import load_config
    from scorealign.run.checkpoint import latest_checkpoint
    from scorealign.commands.pretrain import train_and_export as pretrain
    from scorealign.train.pretrain import PretrainConfig
    from scorealign.run.rundir import RunDir

    def run(config: str, sets: list[str], at: int):
        def killed_at_step(out: Path) -> None:
            assert latest_checkpoint(out / "checkpoints").name == f"step_{at:06d}"

        killed, ref = tmp_path / "killed", tmp_path / "ref"
        args = ["--config", config] + [a for s in sets for a in ("--set", s)]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            output = _kill9_then_resume("pretrain", killed, args, at, killed_at_step)
            assert "resuming" in output and (killed / "report.html").is_file()
            cfg = load_config(config, PretrainConfig, sets)
            pretrain(cfg, RunDir.create(ref, cfg))
        finally:
            torch.set_num_threads(threads)
        return killed, ref

    return run


# -- the CLI in this process ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, sets=(), code=0) -> output``: ``scorealign ARGS --set S …`` (one ``--set``
    per entry of ``sets``) through typer's CliRunner in this process; asserts the exit code."""
    def run(*args, sets=(), code: int = 0) -> str:
        from typer.testing import CliRunner

        from scorealign.cli.app import app
        res = CliRunner().invoke(app, [str(a) for a in args]
                                 + [a for s in sets for a in ("--set", s)])
        assert res.exit_code == code, res.output
        return res.output

    return run


@pytest.fixture(scope="session")
def tiny_lora_sets():
    """``--set`` overrides for a one-epoch CPU LoRA finetune of a tiny built-in pipeline base
    (configs/finetune/*_tiny_*_lora.yaml): 3 steps, 2 prompts × 2 samples, one inner epoch, a
    checkpoint at the epoch, no KL logging, lr 3e-2."""
    return ("train.epochs=1", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
            "train.minibatch_size=4", "train.sample_batch_size=4", "train.inner_epochs=1",
            "train.ckpt_every=1", "train.log_kl=false", "train.lr=3e-2", "device=cpu")


# -- on-policy exactness -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def assert_on_policy_exact():
    """``check(pol, traj) -> metrics``: the recomputed log-probs equal the rollout's bit for bit
    and PPO's importance ratio is exactly 1 with nothing clipped (one inner step, fp32).

    ``traj`` must come from one ``pol.rollout`` call: ``log_prob`` then evaluates the network
    step by step on the rollout's own batch, the same computation on the same shapes. A
    trajectory assembled from several rollout chunks is compared to fp32 rounding instead
    (tests/rl/test_speed_levers.py, tests/README.md)."""
    from scorealign.rl.losses import ppo_clip

    def check(pol, traj):
        with torch.no_grad():
            logp = pol.log_prob(traj)
        assert torch.equal(logp, traj.log_probs)
        m = ppo_clip(logp, traj.log_probs, torch.randn(traj.batch_size)).metrics
        assert m["policy/ratio_mean"].item() == 1.0 and m["policy/ratio_max"].item() == 1.0
        assert m["policy/clipfrac"].item() == 0.0
        return m

    return check


# -- multi-process launcher ---------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """This test runs with one intra-op thread, as the ``torchrun_finetune`` workers do, so that a
    one-process reference differs from them only by what the test compares (batch composition),
    not by the thread count's reduction order (with OMP_NUM_THREADS=2 an in-process reference
    moved 2 of 4096 weights by 5e-5 after 2 epochs of Adam). Restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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


@pytest.fixture
def torchrun_finetune(tmp_path):
    """``launch(sets, n_proc, env=None) -> dict``: fine-tune tests/rl's tiny problem
    (``tiny_config(*sets)``) in ``n_proc`` fresh CPU processes under ``torchrun`` (gloo) and
    return the main process's ``{"state", "type", "wrapper"}`` (trainable weights, accelerate's
    distributed type, the model wrapper's class name). Fresh interpreters: forking the test
    process deadlocks once its OpenMP pool has run."""
    helpers = tmp_path / "tests_rl_helpers.py"
    helpers.write_text((Path(__file__).parent / "rl" / "conftest.py").read_text())
    worker = tmp_path / "torchrun_worker.py"

    def launch(sets: list[str], n_proc: int, env: dict[str, str] | None = None) -> dict:
        worker.write_text(_TORCHRUN_WORKER.format(helpers=str(tmp_path), sets=list(sets)))
        out = tmp_path / f"state_{n_proc}.pt"
        full = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
        torchrun = Path(sys.executable).with_name("torchrun")
        res = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(n_proc),
                              str(worker), str(out)], env=full, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return torch.load(out)

    return launch


# -- control ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lq_policy():
    """Factory: ``lq_policy(pi)`` is a degree-1 ``GaussianPolicy`` on the 1-D LQ problem with the
    weights (h, k) and std s of the closed-form policy ``pi`` (a ``lq.LinearGaussian``)."""
    from scorealign.control.policy import GaussianPolicy

    def make(pi):
        p = GaussianPolicy(1, 1, 1, math.log(pi.s))
        with torch.no_grad():
            p.W.copy_(torch.tensor([[pi.h, pi.k]], dtype=torch.float64))
        return p

    return make
