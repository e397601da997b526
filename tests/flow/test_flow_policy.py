"""Flow samplers as policies: recomputed log-probs equal the rollout's (ratio exactly 1), batch
invariance, and the per-step KL of Flow-GRPO ‖μ_θ − μ_ref‖²/(2σ_t²)."""

from __future__ import annotations

import copy

import pytest
import torch


PROMPTS = ["digit 3", "digit 7", "digit 0"]
KWS = [dict(sampler="flow_sde", eta=0.7), dict(sampler="flow_cps", eta=0.7),
       dict(sampler="dance_sde", eta=0.3), dict(sampler="flow_sde", eta=0.7, grid="sd3_shift"),
       dict(sampler="euler_ode", eta=0.0, exploration=0.3)]


@pytest.mark.parametrize("kw", KWS)
def test_on_policy_log_probs_are_exact_and_the_ratio_is_one(flow_unet, flow_policy, kw,
                                                            assert_on_policy_exact):
    pol = flow_policy(flow_unet, **kw)
    traj = pol.rollout(PROMPTS, k=2, seeds=torch.arange(6) + 11)
    assert bool(torch.isfinite(traj.log_probs).all())
    assert_on_policy_exact(pol, traj)


@pytest.mark.parametrize("kw", KWS[:3])
def test_flow_rollouts_do_not_depend_on_the_batch(flow_unet, flow_policy, kw):
    pol = flow_policy(flow_unet, **kw)
    seeds = torch.arange(6) * 5 + 1
    full = pol.rollout(PROMPTS, k=2, seeds=seeds)
    rows = torch.tensor([4, 1])
    part = pol.rollout([full.prompts[4], full.prompts[1]], k=1, seeds=seeds[rows])
    torch.testing.assert_close(part.x0, full.x0[rows], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part.log_probs, full.log_probs[rows], rtol=1e-5, atol=1e-4)


def test_flow_grpo_kl_is_the_mean_gap_over_twice_the_variance(flow_unet, flow_policy):
    ref = copy.deepcopy(flow_unet)
    with torch.no_grad():
        other = copy.deepcopy(flow_unet)
        for p in other.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    pol, pref = flow_policy(other), flow_policy(ref)
    traj = pol.rollout(PROMPTS, k=1, seeds=torch.arange(3))
    kl = pol.kl(pref, traj)
    (m1, s1), (m2, s2) = pol.kernels(traj, [2])[0], pref.kernels(traj, [2])[0]
    want = (m1.float() - m2.float()).flatten(1).pow(2).sum(1) / (2 * s1.float() ** 2)
    torch.testing.assert_close(kl[:, 2], want)
    # the last step is the deterministic denoising step of action_steps=auto: no KL there
    assert bool((kl[:, :-1] > 0).all()) and bool((kl[:, -1] == 0).all())
    assert torch.equal(pref.kl(pref, traj), torch.zeros_like(kl))
