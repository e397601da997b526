"""Fixtures shared across test directories (one delimited block per issue)."""

# --- issue12 fixtures ---
import os as _i12_os
import subprocess as _i12_subprocess
import sys as _i12_sys

import pytest as _i12_pytest


def pytest_make_parametrize_id(config, val, argname):
    """Sampler keyword sets (``kw`` dicts with a ``sampler``) are named ``sampler=ddim-eta=1.0``
    (tests/policy/test_policy_logprob.py, tests/flow/test_flow_policy.py)."""
    if argname == "kw" and isinstance(val, dict) and "sampler" in val:
        return "-".join(f"{k}={v}" for k, v in val.items())
    return None


@_i12_pytest.fixture(scope="session")
def assert_on_policy_exact():
    """``check(pol, traj) -> metrics``: the recomputed log-probs equal the rollout's bit for bit
    and PPO's importance ratio is exactly 1 with nothing clipped (one inner step, fp32)."""
    import torch

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


@_i12_pytest.fixture(scope="session")
def kill9_then_resume():
    """``run(out, args, epoch) -> output``: ``scorealign finetune --out OUT ARGS`` in a fresh
    process that SIGKILLs itself once the checkpoint of ``epoch`` is on disk
    (``SCOREALIGN_KILL_AFTER_CHECKPOINT``), then ``finetune --resume OUT`` in this process, which
    must report continuing from ``epoch``. The child gets this process's intra-op thread count:
    CPU kernels are bit-reproducible per thread count."""
    import torch
    from typer.testing import CliRunner

    from scorealign.cli import app

    def run(out, args, epoch: int) -> str:
        env = {**_i12_os.environ, "SCOREALIGN_KILL_AFTER_CHECKPOINT": str(epoch),
               "OMP_NUM_THREADS": str(torch.get_num_threads())}
        killed = _i12_subprocess.run([_i12_sys.executable, "-m", "scorealign.cli", "finetune",
                                      "--out", str(out), *args], env=env, capture_output=True)
        assert killed.returncode == -9, killed.stderr.decode()[-2000:]
        res = CliRunner().invoke(app, ["finetune", "--resume", str(out)])
        assert res.exit_code == 0 and f"from epoch {epoch}" in res.output, res.output
        return res.output

    return run
# --- end issue12 ---
