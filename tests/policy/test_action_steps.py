"""Action steps (policy/actions.py): which sampler steps are the policy's random choices."""

from __future__ import annotations

import pytest
import torch

from scorealign.config import FieldError
from scorealign.policy.actions import parse_action_steps
from scorealign.rl.config import PolicyConfig
from scorealign.samplers import ddim_step
from scorealign.samplers.steps import model_time

PROMPTS = ["digit 3", "digit 7"]


def test_parse_rejects_bad_specs_and_config_names_the_field():
    assert parse_action_steps("auto").value == 0.1
    assert parse_action_steps("window:3").value == 3
    assert parse_action_steps("steps:2,0").steps == (0, 2)
    for bad in ("nope", "fraction:0", "fraction:1.5", "branch:3", "window:0", "all:1"):
        with pytest.raises(ValueError):
            parse_action_steps(bad)
    with pytest.raises(FieldError, match="branch takes 1 or 2") as e:
        PolicyConfig(action_steps="branch:5")
    assert e.value.field == "action_steps"


def test_auto_drops_the_final_and_near_deterministic_steps(unet, unet_policy):
    pol = unet_policy(unet, action_steps="auto", steps=10)
    stds = pol.kernel_stds
    rand = pol.stochastic_steps(0, 0)
    assert not bool(rand[-1])
    expect = (stds >= 0.1 * stds.max()) & (torch.arange(10) < 9)
    assert torch.equal(rand, expect)
    assert float(stds[-1]) < 0.1 * float(stds.max())  # DDIM's last step is near-deterministic


def test_non_action_final_step_is_the_eta0_step_and_logprobs_recompute_exactly(unet, unet_policy):
    pol = unet_policy(unet, action_steps="auto")
    traj = pol.rollout(PROMPTS, k=2, seeds=torch.arange(4))
    S = traj.num_steps
    assert torch.equal(traj.stochastic[:, -1], torch.zeros(4, dtype=torch.bool))
    assert bool((traj.stds[:, -1] == 0).all()) and bool((traj.log_probs[:, -1] == 0).all())
    x = traj.xs[:, S - 1]
    fn = pol.pred_fn(traj.cond)
    t, tn = traj.ts[S - 1].expand(4), traj.ts[S].expand(4)
    st = ddim_step(x, fn(x, model_time(t, x)), "eps", t, tn, pol.sde, eta=0.0)
    assert torch.equal(st.x_next, traj.x0)
    with torch.no_grad():
        assert torch.equal(pol.log_prob(traj), traj.log_probs)
        kl = pol.kl(unet_policy(unet, action_steps="auto", guidance=1.0), traj)
    assert bool((kl[:, -1] == 0).all()) and bool((kl[:, :-1] > 0).all())


@pytest.mark.parametrize("spec,size", [("window:2", 2), ("branch:1", 1), ("branch:2", 2)])
def test_random_sets_are_seeded_by_run_seed_and_epoch(unet, unet_policy, spec, size):
    pol = unet_policy(unet, action_steps=spec)
    sets = [pol.stochastic_steps(seed, ep) for seed in (0, 1) for ep in range(6)]
    assert all(int(s.sum()) == size for s in sets)
    assert len({tuple(s.tolist()) for s in sets}) > 1
    assert torch.equal(pol.stochastic_steps(1, 4), sets[6 + 4])
    if spec.startswith("window"):
        for s in sets:
            idx = s.nonzero().flatten()
            assert int(idx[-1] - idx[0]) == size - 1
    traj = pol.rollout(PROMPTS, k=1, seeds=torch.arange(2), run_seed=1, epoch=4)
    assert torch.equal(traj.stochastic[0], sets[10])
    assert bool((traj.stds[:, ~sets[10]] == 0).all()) and bool((traj.stds[:, sets[10]] > 0).all())
    with torch.no_grad():
        assert torch.equal(pol.log_prob(traj), traj.log_probs)


def test_ddpo_fraction_is_a_per_row_subset_independent_of_the_batch(unet, unet_policy):
    pol = unet_policy(unet, action_steps="fraction:0.5")
    traj = pol.rollout(PROMPTS, k=2, seeds=torch.tensor([5, 6, 7, 8]))
    n = int(traj.stochastic[0].sum())
    assert n == 5  # 6 steps, the final one is not an action
    assert bool((traj.action_mask.sum(1) == 3).all())
    assert bool((traj.action_mask <= traj.stochastic).all())
    alone = pol.rollout(PROMPTS[1:], k=1, seeds=torch.tensor([7]))
    assert torch.equal(alone.action_mask[0], traj.action_mask[2])
    with torch.no_grad():
        lp = pol.log_prob(traj)
    assert torch.equal(lp[traj.action_mask], traj.log_probs[traj.action_mask])


def test_score_action_window_adds_action_noise_only_in_the_window(unet, unet_policy):
    pol = unet_policy(unet, action_steps="window:2", sampler="ddim", eta=0.0, exploration=0.3)
    traj = pol.rollout(PROMPTS, k=1, seeds=torch.arange(2), run_seed=0, epoch=1)
    w = traj.stochastic[0]
    assert int(w.sum()) == 2
    eps = torch.stack(pol.step_preds(traj), 1)
    assert torch.equal(traj.actions[:, ~w], eps[:, ~w])
    assert not torch.equal(traj.actions[:, w], eps[:, w])
    assert bool((traj.log_probs[:, ~w] == 0).all())
    with torch.no_grad():
        assert torch.equal(pol.log_prob(traj), traj.log_probs)
