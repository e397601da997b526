"""On-policy invariants: recomputed log-probs equal the rollout's, ratio 1, batch invariance."""

from __future__ import annotations

import pytest
import torch


PROMPTS = ["digit 3", "digit 7", "digit 0"]
SAMPLERS = [
    dict(sampler="ddim", eta=1.0), dict(sampler="ddim", eta=0.4), dict(sampler="ddpm", eta=1.0),
    dict(sampler="euler_maruyama", eta=1.0), dict(sampler="heun_sde", eta=0.7),
    # score actions: any solver, deterministic ones included
    dict(sampler="ddim", eta=0.0, exploration=0.3), dict(sampler="heun_ode", eta=None,
                                                         exploration=0.3),
    dict(sampler="euler_maruyama", eta=1.0, exploration=0.2),
]


@pytest.mark.parametrize("kw", SAMPLERS)
def test_recomputed_log_probs_equal_rollout_log_probs_exactly(unet, unet_policy, kw,
                                                              assert_on_policy_exact):
    pol = unet_policy(unet, **kw)
    traj = pol.rollout(PROMPTS, k=2, seeds=torch.arange(6) + 100)
    assert traj.log_probs.shape == (6, 6) and bool(torch.isfinite(traj.log_probs).all())
    # the on-policy importance ratio of PPO/LOOP is exactly 1 (fp32, one inner step)
    assert_on_policy_exact(pol, traj)


def test_a_subset_of_steps_gives_those_columns(unet, unet_policy):
    pol = unet_policy(unet)
    traj = pol.rollout(PROMPTS, k=1, seeds=torch.arange(3))
    with torch.no_grad():
        assert torch.equal(pol.log_prob(traj, steps=[4, 1]), traj.log_probs[:, [4, 1]])


@pytest.mark.parametrize("kw", [dict(sampler="ddim", eta=1.0),
                                dict(sampler="ddim", eta=0.0, exploration=0.3)])
def test_rollouts_and_log_probs_do_not_depend_on_the_batch(unet, unet_policy, kw):
    pol = unet_policy(unet, **kw)
    seeds = torch.arange(6) * 7 + 3
    full = pol.rollout(PROMPTS, k=2, seeds=seeds)
    rows = torch.tensor([5, 2])  # another batch size and order
    part = pol.rollout([full.prompts[5], full.prompts[2]], k=1, seeds=seeds[rows])
    # every row's noise comes from its own seed: same samples up to fp32 kernel reordering
    torch.testing.assert_close(part.x0, full.x0[rows], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part.log_probs, full.log_probs[rows], rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        sub = pol.log_prob(full.index(rows))
    torch.testing.assert_close(sub, full.log_probs[rows], rtol=1e-5, atol=1e-4)


def test_deterministic_solver_without_exploration_is_refused(unet, unet_policy):
    with pytest.raises(ValueError, match="deterministic"):
        unet_policy(unet, sampler="ddim", eta=0.0)


def test_log_prob_carries_the_gradient_of_the_weights(unet, unet_policy):
    pol = unet_policy(unet)
    traj = pol.rollout(PROMPTS, k=1, seeds=torch.arange(3))
    logp = pol.log_prob(traj, steps=[0, 5])
    logp.sum().backward()
    grads = [p.grad for p in unet.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    unet.zero_grad(set_to_none=True)
