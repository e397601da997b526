"""Action steps in the trainer: per-step KL, clip fraction per minibatch, per-dimension ratio
units, rewards on clamped samples, DPOK's eps-MSE KL, the x̂₀ value design."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from scorealign.rewards.compose import RewardSet
from scorealign.rl import updates
from scorealign.rl.trainer import Finetuner


def test_first_minibatch_clip_fraction_is_exactly_zero_and_later_ones_are_logged(
        make_setup, make_config):
    cfg = make_config("train.epochs=1", "algo.loss=loop", "train.minibatch_size=4",
                      "train.inner_epochs=2", "train.lr=3e-2")
    m = Finetuner(cfg, None, setup=make_setup()).train_epoch()
    assert m["clip/frac_mb0"] == 0.0
    assert m["clip/frac_later"] > 0.0  # stale samples move outside the band at this lr
    steps = [k for k in m if k.startswith("kl/step/")]
    assert steps == ["kl/step/00", "kl/step/01", "kl/step/02"]  # step 3 is not an action
    assert m["kl/base"] == pytest.approx(sum(m[k] for k in steps), rel=1e-12)
    # 2 inner epochs × 2 minibatches × 4 rows × 3 action steps
    assert m["cost/model_evals_grad"] == 2 * 2 * 4 * 3


def test_kl_metrics_share_and_vector():
    from scorealign.rl.trainer import kl_metrics
    kl = torch.tensor([[1.0, 3.0, 0.0], [3.0, 1.0, 0.0]])
    m = kl_metrics(kl, torch.tensor([True, True, False]))
    assert m == {"kl/base": 4.0, "kl/step/00": 2.0, "kl/step/01": 2.0,
                 "kl/max_step_share": 0.5}


def test_ratio_losses_get_per_dimension_log_probs(make_setup, make_config, monkeypatch):
    seen = {}
    for units in ("per_dim", "sum"):
        cfg = make_config("train.epochs=1", "algo.loss=loop", f"algo.ratio_units={units}")
        ft = Finetuner(cfg, None, setup=make_setup())
        fn = ft.entry.fn

        def spy(logp, logp_old, adv, mask=None, **kw):
            seen[units] = (logp.detach().clone(), logp_old.clone(), mask.clone())
            return fn(logp, logp_old, adv, mask, **kw)

        monkeypatch.setattr(ft, "entry", dataclasses.replace(ft.entry, fn=spy))
        ft.train_epoch()
    d = math.prod((1, 8, 8))
    assert torch.equal(seen["per_dim"][1], seen["sum"][1] / d)
    # on-policy, ratio exactly 1: one rollout chunk and one minibatch of all B = 8 rows
    # (rl/conftest.py), so the recompute runs the network on the rollout's batch shape
    assert torch.equal(seen["per_dim"][0], seen["per_dim"][1])
    assert not bool(seen["sum"][2][:, -1].any())  # the final step is masked out


def test_sample_outside_the_data_range_gets_exactly_its_clamped_reward():
    from scorealign.rewards.base import build_reward
    r = RewardSet(build_reward("aesthetic_proxy"), build_reward("aesthetic_proxy"))
    g = torch.Generator().manual_seed(0)
    x = 1.7 * torch.randn(6, 1, 8, 8, generator=g)
    assert bool((x.abs() > 1).any())
    a, b = r(x, ["digit 1"] * 6), r(x.clamp(-1, 1), ["digit 1"] * 6)
    assert torch.equal(a.optimized, b.optimized) and torch.equal(a.gold, b.gold)
    raw = RewardSet(build_reward("aesthetic_proxy"), clamp=None)(x, ["digit 1"] * 6)
    assert not torch.equal(raw.optimized, a.optimized)


def test_dpok_eps_mse_is_the_exact_kl_without_its_step_weights(make_setup, make_config):
    cfg = make_config("train.epochs=1", "algo.loss=dpok", "algo.advantage=batch",
                      "algo.kl=eps_mse")
    ft = Finetuner(cfg, None, setup=make_setup())
    with torch.no_grad():  # move the model away from the reference
        for p in ft.setup.model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    traj = ft.policy.rollout(["digit 1", "digit 2"], 1, seeds=torch.arange(2))
    with torch.no_grad():
        mse = updates.step_kl(ft, traj)
        exact = ft.policy.kl(ft.ref_policy, traj)
    # DDIM: μ_k depends on ε̂ through c_k = dir_k − m(t_{k+1}) s(t_k)/m(t_k): KL = D c²/(2σ²)·mse
    sde, ts = ft.policy.sde, traj.ts
    for k in range(3):
        m0, m1 = sde.marginal(ts[k:k + 1]), sde.marginal(ts[k + 1:k + 2])
        var = traj.stds[0, k].double() ** 2
        c = (m1.std**2 - var).sqrt() - m1.mean_coef * m0.std / m0.mean_coef
        w = 64 * c**2 / (2 * var)
        torch.testing.assert_close(exact[:, k].double(), (w * mse[:, k]).double(), rtol=1e-4,
                                   atol=0)
    assert bool((mse[:, -1] == 0).all())


def test_x0_value_design_counts_its_reward_queries(make_setup, make_config):
    cfg = make_config("train.epochs=1", "algo.loss=score_as_action", "policy.exploration=0.3",
                      "policy.eta=0.0", "algo.advantage=value",
                      "algo.value={hidden: 16, lr: 0.001, steps_per_epoch: 2, design: x0}")
    m = Finetuner(cfg, None, setup=make_setup()).train_epoch()
    assert m["queries/reward"] == 8 * (1 + 4)
    assert math.isfinite(m["loss/policy"]) and m["clip/frac_mb0"] == 0.0
