"""Peers' units by default, the exact forms as options: flow_grpo's CPS "log-prob" and KL, and
DiffusionNFT's trained times, each against the authors' code written out, with the conversions
between the forms (docs/conventions.md, Units)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from scorealign.config import load_config
from scorealign.policy.policy import authors_log_prob
from scorealign.rl.config import FinetuneConfig
from scorealign.rl.flow_methods import diffusion_nft, nft_loss, nft_times
from scorealign.rl.trainer import Finetuner, epoch_rows
from scorealign.samplers import gaussian_log_prob

PROMPTS = ["digit 3", "digit 7"]


def test_cps_log_prob_is_the_authors_and_converts_to_the_gaussian():
    g = torch.Generator().manual_seed(0)
    x, mu = torch.randn(5, 2, 3, 4, generator=g), torch.randn(5, 2, 3, 4, generator=g)
    std = torch.rand(5, generator=g) + 0.1
    d = 24
    # flow_grpo sd3_sde_with_logprob.py 'cps': log_prob = -((prev - mean) ** 2), .mean(dims)
    theirs = (-((x - mu) ** 2)).mean(dim=(1, 2, 3))
    torch.testing.assert_close(authors_log_prob(x, mu) / d, theirs, rtol=1e-6, atol=1e-7)
    # conversion: authors = 2σ² (log N + D log σ + (D/2) log 2π)
    exact = gaussian_log_prob(x, mu, std)
    conv = 2 * std**2 * (exact + d * std.log() + 0.5 * d * math.log(2 * math.pi))
    torch.testing.assert_close(authors_log_prob(x, mu), conv, rtol=1e-4, atol=1e-4)


def test_log_prob_units_authors_and_exact_on_a_cps_policy(flow_unet, flow_policy):
    seeds = torch.arange(4) + 2
    mine = flow_policy(flow_unet, sampler="flow_cps", action_steps="all")
    exact = flow_policy(flow_unet, sampler="flow_cps", action_steps="all",
                        log_prob_units="exact")
    assert mine.config.log_prob_units == "authors"
    with torch.no_grad():
        a, b = mine.rollout(PROMPTS, 2, seeds=seeds), exact.rollout(PROMPTS, 2, seeds=seeds)
        assert torch.equal(a.xs, b.xs)  # units change the density, not the sampler
        assert torch.equal(mine.log_prob(a), a.log_probs)  # recomputed bit for bit
        assert torch.equal(exact.log_prob(b), b.log_probs)
    d, m = 64, a.stochastic
    s = b.stds.double()
    conv = 2 * s**2 * (b.log_probs.double() + d * s.log() + 0.5 * d * math.log(2 * math.pi))
    torch.testing.assert_close(a.log_probs.double()[m], conv[m], rtol=1e-4, atol=1e-4)
    # flow_sde's authors' log-prob is the exact Gaussian (their 'sde' branch): no change
    sde = flow_policy(flow_unet, sampler="flow_sde")
    ex = flow_policy(flow_unet, sampler="flow_sde", log_prob_units="exact")
    with torch.no_grad():
        assert torch.equal(sde.rollout(PROMPTS, 2, seeds=seeds).log_probs,
                           ex.rollout(PROMPTS, 2, seeds=seeds).log_probs)


def test_authors_kl_factors_and_cps_kl_transcription(flow_unet, flow_policy):
    pol = flow_policy(flow_unet)  # flow_sde: c_k = |Δt_k|
    assert torch.equal(pol.authors_kl_factors(), (pol.ts[:-1] - pol.ts[1:]).abs())
    cps = flow_policy(flow_unet, sampler="flow_cps", action_steps="all")
    assert torch.equal(cps.authors_kl_factors(), torch.ones(cps.steps, dtype=torch.float64))
    ref_model = copy.deepcopy(flow_unet)
    with torch.no_grad():
        for p in ref_model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    ref = flow_policy(ref_model, sampler="flow_cps", action_steps="all")
    with torch.no_grad():
        traj = cps.rollout(PROMPTS, 2, seeds=torch.arange(4))
        kl = cps.kl(ref, traj)
        ks = traj.random_steps[0].nonzero().flatten().tolist()
        a, b = cps.kernels(traj, ks), ref.kernels(traj, ks)
    for i, k in enumerate(ks):
        # flow_grpo: kl_loss = mean_d (μ − μ_ref)² / (2 std_dev_t²), 'cps' std_dev_t = t'·sin(aπ/2)
        std_dev_t = float(traj.ts[k + 1]) * math.sin(0.7 * math.pi / 2)
        theirs = ((a[i][0] - b[i][0]) ** 2).flatten(1).mean(1) / (2 * std_dev_t**2)
        torch.testing.assert_close(kl[:, k] / 64 * float(cps.authors_kl_factors()[k]), theirs,
                                   rtol=1e-4, atol=1e-9)


def test_nft_times_are_a_random_nine_of_ten_per_row():
    seeds = torch.arange(3000)
    m = nft_times(seeds, 10)  # the authors' int(10 · 0.99) = 9, a per-row random subset
    assert bool((m.sum(1) == 9).all())
    left_out = (~m).float().mean(0)  # each time is left out with probability 1/10
    assert bool(((left_out - 0.1).abs() < 0.03).all()), left_out
    assert torch.equal(nft_times(seeds, 10), m)  # a function of the row seed
    assert bool(nft_times(seeds[:5], 10, 1.0).all())  # timestep_fraction 1: every time
    with pytest.raises(ValueError, match="timestep_fraction"):
        nft_times(seeds[:2], 10, 0.0)


@pytest.mark.parametrize("fraction", [0.99, 1.0])
def test_nft_loss_is_the_mean_over_each_rows_trained_times(flow_setup, fraction):
    """The authors' loop: per (row, time) pair the NFT loss of that row at that time, averaged
    over the int(S · fraction) times of every row (train_nft_sd3.py ``for j_idx in
    range(num_train_timesteps)`` over ``perms_time``)."""
    base = ["policy.sampler=flow_sde", "policy.eta=0.7", "policy.steps=5", "prompts.per_epoch=2",
            "prompts.k=2", "train.minibatch_size=4", "train.sample_batch_size=4",
            "reward.optimized=aesthetic_proxy", "device=cpu", "algo.loss=diffusion_nft",
            f"algo.loss_kwargs={{timestep_fraction: {fraction}}}"]
    ft = Finetuner(load_config(None, FinetuneConfig, base), None, setup=flow_setup())
    prompts, ids, seeds = epoch_rows(ft.cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    adv = torch.tensor([1.0, -0.5, 0.3, -1.2])
    with torch.no_grad():
        for p in ft.model.parameters():  # θ ≠ θ_old so that v and v_old differ
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        ctx = ft.context()
        got = nft_loss(ctx, traj, adv, ft.old.model).loss
        from scorealign.rl.flow_methods import _nft_at
        from scorealign.rng import randn_per_sample
        eps = randn_per_sample(traj.seeds.tolist(), (5, 1, 8, 8), "nft-noise")
        times = nft_times(traj.seeds, 5, fraction)
        kw = dict(ft.cfg.algo.loss_kwargs)
        pairs = [_nft_at(ctx, traj.index([b]), adv[b:b + 1], ft.old.model, eps[b:b + 1, k], k,
                         kw).loss for b in range(4) for k in range(5) if times[b, k]]
    assert len(pairs) == 4 * int(5 * fraction)
    torch.testing.assert_close(got, torch.stack(pairs).mean(), rtol=1e-5, atol=1e-7)
    assert diffusion_nft.__kwdefaults__["timestep_fraction"] == 0.99
