"""``Policy`` takes its ``PolicyConfig`` whole, and the score action is the explicit ``act`` hook."""

from __future__ import annotations

import torch

from scorealign.nets.cond import Cond
from scorealign.policy.config import PolicyConfig
from scorealign.policy.policy import Policy
from scorealign.samplers.steps import model_times
from scorealign.sde import build_sde
from scorealign.sde.param import convert

PROMPTS = ["digit 3", "digit 7"]


def label_encode(prompts: list[str]) -> Cond:
    return Cond(labels=torch.tensor([int(p.split()[-1]) for p in prompts]))


def test_a_config_taken_whole_equals_its_fields_by_name(unet):
    cfg = PolicyConfig(sampler="ddim", steps=5, eta=1.0, guidance=2.0, exploration=0.3,
                       action_steps="all")
    whole = Policy(unet, build_sde("vp"), cfg, kind="eps", shape=(1, 8, 8), encode=label_encode)
    named = Policy(unet, build_sde("vp"), kind="eps", shape=(1, 8, 8), encode=label_encode,
                   sampler="ddim", steps=5, eta=1.0, guidance=2.0, exploration=0.3,
                   action_steps="all")
    assert whole.config == named.config == cfg
    seeds = torch.arange(4) + 11
    with torch.no_grad():
        a, b = (p.rollout(PROMPTS, 2, seeds=seeds) for p in (whole, named))
    assert torch.equal(a.xs, b.xs) and torch.equal(a.log_probs, b.log_probs)
    # a bare policy (no config) has no guidance; named fields override a given config
    assert Policy(unet, build_sde("vp"), kind="eps", shape=(1, 8, 8)).guidance == 1.0
    assert Policy(unet, build_sde("vp"), cfg, kind="eps", shape=(1, 8, 8), steps=3).steps == 3


def test_act_is_the_rollouts_action_and_the_log_probs_mean(unet, unet_policy):
    pol = unet_policy(unet, exploration=0.4, steps=4)
    seeds = torch.arange(4) + 5
    with torch.no_grad():
        traj = pol.rollout(PROMPTS, 2, seeds=seeds)
        _, _, act_noise = pol._noise(seeds, "cpu")
        mts = model_times(traj.ts, traj.xs[:, 0])
        for k in range(traj.num_steps):
            act = pol.act(traj.xs[:, k], mts[k], act_noise[:, k], cond=traj.cond)
            assert torch.equal(act.action, traj.actions[:, k])
            assert torch.equal(act.action, act.eps + 0.4 * act_noise[:, k])
            assert torch.equal(act.pred, convert(act.action, "eps", pol.kind, traj.xs[:, k],
                                                 mts[k], pol.sde))
            plain = pol.act(traj.xs[:, k], mts[k], None, cond=traj.cond)
            assert torch.equal(plain.action, plain.eps) and torch.equal(plain.eps, act.eps)
        assert torch.equal(pol.log_prob(traj), traj.log_probs)
