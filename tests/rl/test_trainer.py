"""The trainer: on-policy ratio 1, gradient accumulation, exact resume, bad rewards stop the run."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from scorealign.rewards.base import RewardError
from scorealign.rl.trainer import Finetuner
from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
from scorealign.run.rundir import RunDir


def _fit(cfg, setup, run=None):
    ft = Finetuner(cfg, run, setup=setup)
    ft.fit()
    return ft


def _weights(ft):
    return ft.setup.trainable_state()


def test_on_policy_importance_ratio_is_exactly_one(make_setup, make_config):
    # one inner step over the whole batch, fp32: log p_θ recomputed = log p at rollout
    cfg = make_config("train.epochs=1", "train.shuffle=false", "algo.loss=loop")
    ft = Finetuner(cfg, None, setup=make_setup())
    metrics = ft.train_epoch()
    assert metrics["policy/ratio_mean"] == 1.0 and metrics["policy/ratio_max"] == 1.0
    assert metrics["policy/approx_kl_k3"] == 0.0 and metrics["kl/base"] == 0.0


def _grads(ft):
    return {k: p.grad.clone() for k, p in ft.setup.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss", ["reinforce", "loop"])
def test_gradient_accumulation_gives_the_same_gradient(make_setup, make_config, loss):
    # one epoch = one optimizer step over 8 rows: its gradient stays in .grad after the step.
    # (clip 0.05: the recomputed log-probs of a 2-row micro-batch differ from the rollout's by
    # ~1e-4 (fp32 kernels, see below), enough to cross DDPO's clip of 1e-4 on summed log-probs.)
    sets = ["train.epochs=1", f"algo.loss={loss}"] + (["algo.loss_kwargs={clip: 0.05}"]
                                                        if loss == "loop" else [])
    a = _fit(make_config(*sets), make_setup())
    b = _fit(make_config(*sets, "train.grad_accum=4"), make_setup())
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys() and len(ga) > 0
    assert any(float(g.abs().max()) > 0 for g in ga.values())
    # Micro-batches change the conv kernels' batch size, which moves outputs by ~1e-6 relative
    # (measured: batch 1 vs 64 of the UNet); in summed log-probs that is ~1e-4 absolute, and the
    # ratio losses' gradient ρ·A·∇log p carries it multiplicatively through ρ. 1e-3 of the
    # gradient's scale is far below any real accumulation error (a wrong 1/accum factor is 4×).
    scale = max(float(g.abs().max()) for g in ga.values())
    for k, g in ga.items():
        torch.testing.assert_close(gb[k], g, rtol=0, atol=1e-3 * scale)


@pytest.mark.parametrize("sets", [
    pytest.param(("algo.loss=ppo_clip", "algo.advantage_kwargs={min_count: 2, buffer_size: 4}",
     "train.ema_decay=0.9", "train.inner_epochs=2", "train.minibatch_size=4"),
        marks=pytest.mark.slow),
    ("algo.loss=score_as_action", "policy.sampler=ddim", "policy.eta=0.0",
     "policy.exploration=0.3", "algo.loss_kwargs={beta: 0.1}", "reward.background=true"),
    ("algo.loss=reward_backprop", "algo.backprop_steps=2", "policy.eta=1.0"),
    ("algo.loss=dpok", "algo.advantage=value",
     "algo.value={hidden: 16, lr: 1.0e-2, steps_per_epoch: 3}"),
], ids=["ddpo-per_prompt-ema", "score_as_action-kl-async", "draft_k", "dpok-learned_value"])
def test_resume_continues_bit_for_bit(tmp_path, make_setup, make_config, sets):
    full = _fit(make_config("train.epochs=4", "train.ckpt_every=2", *sets), make_setup(),
                RunDir.create(tmp_path / "full", make_config(*sets)))
    run = RunDir.create(tmp_path / "cut", make_config(*sets))
    _fit(make_config("train.epochs=2", "train.ckpt_every=2", *sets), make_setup(), run)
    ft = Finetuner(make_config("train.epochs=4", "train.ckpt_every=2", *sets), run,
                   setup=make_setup())
    assert ft.resume() == 2
    ft.fit()
    for k, v in _weights(full).items():
        assert torch.equal(_weights(ft)[k], v), k
    assert full.ema.keys() == ft.ema.keys()
    for k in full.ema:
        assert torch.equal(full.ema[k], ft.ema[k])
    assert (full.value is None) == (ft.value is None)
    if full.value is not None:  # the value network and its Adam moments, bit for bit
        for name, st in full.value.state_dicts().items():
            flat = lambda d: dict(_leaves(d))
            got = flat(ft.value.state_dicts()[name])
            assert got.keys() == flat(st).keys() and len(got) > 0
            for k, v in flat(st).items():
                same = torch.equal(got[k], v) if isinstance(v, torch.Tensor) else got[k] == v
                assert same, (name, k)
    rows_full = [r for r in RunDir(tmp_path / "full").read_metrics()]
    rows_cut = [r for r in run.read_metrics()]
    strip = lambda rows: [{k: v for k, v in r.items()  # noqa: E731
                           if not k.startswith(("time/", "mem/"))} for r in rows]
    assert strip(rows_cut) == strip(rows_full)


def _leaves(d, prefix=""):
    """(dotted key, value) of every leaf of a nested state dict."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        elif isinstance(v, (list, tuple)):
            yield from _leaves(dict(enumerate(v)), f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


BAD = textwrap.dedent('''
    import torch
    def nan_late(samples, prompts, meta):
        r = samples.flatten(1).mean(1).float()
        return r * float("nan") if meta["epoch"] >= 2 else r
    def wrong_shape(samples, prompts, meta):
        return samples.flatten(1).mean(1).float()[:1] if meta["epoch"] >= 2 else \\
            samples.flatten(1).mean(1).float()
''')


@pytest.mark.parametrize("fn, message", [("nan_late", "non-finite"),
                                         ("wrong_shape", r"shape \(1,\)")])
def test_a_bad_reward_stops_the_run_and_keeps_the_checkpoints(tmp_path, monkeypatch, make_setup,
                                                              make_config, fn, message):
    (tmp_path / "bad_rewards_mod.py").write_text(BAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bad_rewards_mod", None)
    cfg = make_config("train.epochs=4", "train.ckpt_every=1",
                      f"reward.optimized=bad_rewards_mod:{fn}")
    run = RunDir.create(tmp_path / "run", cfg)
    with pytest.raises(RewardError, match=message) as e:
        _fit(cfg, make_setup(), run)
    assert f"bad_rewards_mod:{fn}" in str(e.value)
    ckpt = latest_checkpoint(run.checkpoints)  # epochs 1 and 2 were saved before the bad one
    states, extra = load_checkpoint(ckpt)
    assert extra["epoch"] == 2 and set(states) >= {"model", "optimizer"}
    assert [r["step"] for r in run.read_metrics()] == [1, 2]


@pytest.mark.parametrize("solver", ["policy.sampler=ddim policy.eta=0.0",
                                    "policy.sampler=euler_maruyama policy.eta=1.0",
                                    "policy.sampler=heun_ode policy.eta=null"])
def test_score_as_action_config_runs_unchanged_with_any_solver(make_setup, make_config, solver):
    # the action density does not involve the solver: on-policy ratio 1 for ODE and SDE solvers
    cfg = make_config("train.epochs=1", "train.shuffle=false", "algo.loss=score_as_action",
                      "policy.exploration=0.3", "algo.loss_kwargs={beta: 0.1}", *solver.split())
    m = Finetuner(cfg, None, setup=make_setup()).train_epoch()
    assert m["policy/ratio_mean"] == 1.0 and m["policy/ratio_max"] == 1.0
    assert m["loss/kl"] == 0.0 and m["kl/base"] == 0.0  # identical to the reference on-policy
