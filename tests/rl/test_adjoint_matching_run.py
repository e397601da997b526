"""Adjoint Matching as a fine-tuning method (issue 23 items 2-3): the update kind chosen by the
loss's properties, refusals before any rollout (non-differentiable reward, non-memoryless
sampler), a tiny digits run, exact resume after kill -9, and the per-step loss equal to the pure
functions of rl/adjoint_matching.py and sde/soc.py."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from scorealign.cli.app import app
from scorealign.rl.losses import RL_LOSSES
from scorealign.rl.update_kinds import AdjointMatchingUpdate, update_kind_for

runner = CliRunner()
AM = ["algo.loss=adjoint_matching", "policy.sampler=ddpm", "policy.action_steps=all"]
# pretrained:digits8 at tiny settings (about 1 s an epoch on 2 cores)
TINY = ["policy.steps=8", "prompts.per_epoch=4", "prompts.k=2", "train.minibatch_size=8",
        "train.sample_batch_size=8", "reward.gold=null", "device=cpu"]


def _args(sets):
    return [a for s in sets for a in ("--set", s)]


def test_the_loss_properties_select_the_adjoint_matching_kind():
    entry = RL_LOSSES.get("adjoint_matching")
    assert {"needs_differentiable_reward", "lean_adjoint"} <= entry.properties
    assert update_kind_for(entry) == "adjoint_matching"
    assert update_kind_for(RL_LOSSES.get("reward_backprop")) == "reward_backprop"


@pytest.mark.parametrize("loss", ["adjoint_matching", "reward_backprop"])
def test_a_non_differentiable_reward_is_refused_before_any_rollout(tmp_path, monkeypatch, loss):
    from scorealign.policy.policy import Policy

    def no_rollout(*a, **k):
        raise AssertionError("rolled out before refusing the reward")
    monkeypatch.setattr(Policy, "rollout", no_rollout)
    sets = [*AM, *TINY, f"algo.loss={loss}", "reward.optimized=jpeg_compressibility"]
    res = runner.invoke(app, ["finetune", "--out", str(tmp_path / "run"), *_args(sets)])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'jpeg_compressibility' is not differentiable" in errors[0], \
        res.output
    assert "checkpoint is intact" not in res.output  # refused while building, not a run error


@pytest.mark.parametrize("sets,field", [
    (["policy.sampler=ddim", "policy.eta=0.5"], "policy.sampler"),
    (["policy.sampler=euler_maruyama"], "policy.sampler"),
    (["policy.action_steps=auto"], "policy.action_steps"),
], ids=["ddim-eta0.5", "euler_maruyama", "auto-steps"])
def test_a_non_memoryless_policy_is_refused(tmp_path, sets, field):
    res = runner.invoke(app, ["finetune", "--out", str(tmp_path / "run"),
                              *_args([*AM, *TINY, *sets])])
    assert res.exit_code == 2, res.output
    assert field in res.output and "adjoint matching" in res.output, res.output


def test_a_tiny_digits_run_raises_the_reward(tmp_path):
    out = tmp_path / "run"
    sets = [*AM, *TINY, "train.epochs=6", "train.ckpt_every=6", "algo.loss_kwargs={lam: 0.01}"]
    res = runner.invoke(app, ["finetune", "--out", str(out), *_args(sets)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "reward/mean" in r]
    assert rows[0]["am/control_norm"] == 0.0  # θ = base: zero control before the first step
    assert rows[-1]["reward/mean"] > rows[0]["reward/mean"] + 0.03, \
        [r["reward/mean"] for r in rows]
    s, k = 8, 5  # cost: rows × (K trained steps + S VJPs) per epoch
    assert rows[0]["cost/model_evals_grad"] == 8 * (k + s)


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path):
    """The uninterrupted run, the run killed (kill -9) after epoch 1's checkpoint and its resume
    each run in a fresh process with the same thread count, so both sides start from the same
    process state by construction (in one full-suite run an in-process reference differed in
    the last bits from the fresh processes; the other kill -9 tests keep the in-process form)."""
    import os
    import signal
    import subprocess
    import sys

    from scorealign.run.checkpoint import KILL_ENV, latest_checkpoint, load_checkpoint

    # 2 epochs, killed after the first: the resume restores a trained θ, Adam's state and the
    # RNG of the next epoch's time draws, as a later kill would (one epoch less per process)
    sets = [*AM, *TINY, "policy.steps=4", "train.epochs=2", "train.ckpt_every=1",
            "train.minibatch_size=4", "algo.loss_kwargs={times: 2}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}

    def scorealign(*args, **extra_env):
        return subprocess.run([sys.executable, "-m", "scorealign.cli", "finetune", *args],
                              env={**env, **extra_env}, capture_output=True, text=True,
                              timeout=300)

    full = scorealign("--out", str(tmp_path / "full"), *_args(sets))
    assert full.returncode == 0, full.stderr[-2000:]
    killed = scorealign("--out", str(tmp_path / "cut"), *_args(sets), **{KILL_ENV: "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "cut" / "final").exists()
    resumed = scorealign("--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "from epoch 1" in resumed.stdout + resumed.stderr
    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))[0]["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints"))[0]["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_the_step_loss_equals_the_pure_functions(make_setup, make_config):
    """The update's loss on a micro-batch, against rl.adjoint_matching / sde.soc on the same
    trajectory, the same sampled steps and a perturbed θ (non-zero control)."""
    from scorealign.rl.adjoint_matching import (adjoint_matching_loss, discrete_control,
                                                sample_time_indices)
    from scorealign.rl.trainer import Finetuner, epoch_rows
    from scorealign.rng import generator
    from scorealign.samplers.memoryless import base_step_mean
    from scorealign.sde.soc import lean_adjoint

    lam, times = 0.05, 2
    cfg = make_config(*AM, f"algo.loss_kwargs={{lam: {lam}, times: {times}}}")
    ft = Finetuner(cfg, None, setup=make_setup())
    assert isinstance(ft.kind, AdjointMatchingUpdate)
    prompts, ids, seeds = epoch_rows(cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    with torch.no_grad():  # θ ≠ base, so the control is not zero
        for p in ft.setup.model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    ctx = ft.context()
    out = ft.kind.loss(ctx, traj, None, 0)

    x = traj.x0.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(ft.rewards.optimized(x.clamp(-1, 1), traj.prompts, {}).sum(), x)
    pol = ft.policy
    step = base_step_mean(ft.ref_policy.pred_fn(traj.cond), pol.kind, pol.sde, "ddpm")
    adj = lean_adjoint(traj.xs, traj.ts, step, g, lam)
    ks = sample_time_indices(traj.num_steps, times,
                             generator(int(traj.seeds[0]), "adjoint-matching-times", 0, 1))
    with torch.no_grad():
        mft = torch.stack([step_ft for step_ft, _ in pol.kernels(traj, ks.tolist())], 1)
        mb = torch.stack([step(traj.xs[:, k], traj.ts[k].expand(traj.batch_size),
                               traj.ts[k + 1].expand(traj.batch_size)) for k in ks], 1)
    std = traj.stds[:, ks]
    ref = adjoint_matching_loss(discrete_control(mft, mb, std), adj[:, ks + 1], std)
    assert float(ref.metrics["control_norm"]) > 0
    torch.testing.assert_close(out.loss.detach(), ref.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(out.metrics["am/target_norm"], ref.metrics["target_norm"])
