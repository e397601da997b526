"""diffusers' clip_sample for DDIM/DDPM: x̂₀ clamped and ε̂ recomputed; off = bit-identical."""

from __future__ import annotations

import pytest
import torch

from scorealign.samplers import ddim_step, sample
from scorealign.sde import build_sde
from scorealign.sde.base import bcast
from scorealign.sde.param import to_x0_eps


def test_clip_sample_clamps_x0_and_recomputes_eps():
    sde = build_sde("vp")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 4, 4, generator=g)
    pred = 3 * torch.randn(4, 1, 4, 4, generator=g)
    t, tn = torch.full((4,), 0.5), torch.full((4,), 0.4)
    st = ddim_step(x, pred, "eps", t, tn, sde, eta=1.0, clip_x0=1.0)
    x0, _ = to_x0_eps(pred, "eps", x, t, sde)
    assert bool((x0.abs() > 1).any())
    x0c = x0.clamp(-1, 1)
    m = sde.marginal(t.double())
    eps_c = (x.double() - bcast(m.mean_coef, x) * x0c) / bcast(m.std, x)
    # the clipped step equals the unclipped DDIM step fed the x0-prediction of (x̂₀ clipped)
    ref = ddim_step(x.double(), x0c, "x0", t, tn, sde, eta=1.0)
    torch.testing.assert_close(st.mean.double(), ref.mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(st.std, ref.std.float())
    _, eps_ref = to_x0_eps(x0c, "x0", x.double(), t, sde)
    torch.testing.assert_close(eps_c, eps_ref)


def test_clip_sample_off_is_bit_identical_and_other_samplers_refuse_it():
    sde = build_sde("vp")
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(3, 2, generator=g)
    fn = lambda x, t: torch.tanh(x)  # noqa: E731
    noise = torch.randn(5, 3, 2, generator=g)
    a = sample(fn, "eps", sde, x_t, sampler="ddim", steps=5, eta=1.0, noise=noise)
    b = sample(fn, "eps", sde, x_t, sampler="ddim", steps=5, eta=1.0, noise=noise, clip_x0=None)
    assert torch.equal(a.x0, b.x0)
    c = sample(fn, "eps", sde, x_t, sampler="ddim", steps=5, eta=1.0, noise=noise, clip_x0=1.0)
    assert c.x0.abs().max() <= 1.0 + 0.05 and not torch.equal(a.x0, c.x0)
    with pytest.raises(ValueError, match="clip_x0"):
        sample(fn, "eps", sde, x_t, sampler="euler_maruyama", steps=5, eta=1.0, noise=noise,
               clip_x0=1.0)


def test_policy_with_clip_sample_recomputes_log_probs_exactly():
    from scorealign.nets import ModelConfig, build_model
    from scorealign.nets.cond import Cond
    from scorealign.policy.policy import Policy

    model = build_model(ModelConfig(type="unet", cond="label", sample_size=8,
                                    block_out_channels=(16, 32)), seed=0).eval()
    pol = Policy(model, build_sde("vp"), kind="eps", shape=(1, 8, 8), sampler="ddim", steps=4,
                 eta=1.0, clip_sample=1.0,
                 encode=lambda p: Cond(labels=torch.tensor([int(s[-1]) for s in p])))
    traj = pol.rollout(["digit 1", "digit 2"], 1, seeds=torch.arange(2))
    with torch.no_grad():
        assert torch.equal(pol.log_prob(traj), traj.log_probs)
