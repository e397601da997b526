"""KL to a reference: zero for identical policies, the Gaussian closed form per step, and the
path-space (Girsanov) KL ½∫g²‖s_θ − s_ref‖²dt, which every solver's estimate approaches as the
step count grows."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from scorealign.nets import ModelConfig, build_model
from scorealign.policy.policy import Policy
from scorealign.sde import build_sde
from scorealign.sde.mixture import GaussianMixture

PROMPTS = ["digit 1", "digit 4"]


def test_kl_of_identical_policies_is_zero(unet, unet_policy):
    pol = unet_policy(unet)
    traj = pol.rollout(PROMPTS, k=2, seeds=torch.arange(4))
    with torch.no_grad():
        assert torch.equal(pol.kl(unet_policy(unet), traj), torch.zeros(4, 6))
        assert torch.equal(pol.path_kl_rate(unet_policy(unet), traj), torch.zeros(4, 6))


@pytest.mark.parametrize("exploration", [0.0, 0.25])
def test_per_step_kl_matches_the_gaussian_closed_form(unet, unet_policy, exploration):
    other = build_model(ModelConfig(type="unet", cond="label", sample_size=8,
                                    block_out_channels=(16, 32)), seed=1).eval()
    kw = dict(sampler="ddim", eta=1.0 if exploration == 0 else 0.0, exploration=exploration)
    pol, ref = unet_policy(unet, **kw), unet_policy(other, **kw)
    traj = pol.rollout(PROMPTS, k=1, seeds=torch.arange(2))
    with torch.no_grad():
        kl = pol.kl(ref, traj)
        if exploration == 0:  # KL(N(μ_θ, σ²) ‖ N(μ_ref, σ²)) over pixels, by torch.distributions
            mine, theirs = pol.kernels(traj, range(6)), ref.kernels(traj, range(6))
            oracle = torch.stack([kl_divergence(Normal(m1.double(), s1.double().view(-1, 1, 1, 1)),
                                                Normal(m2.double(), s2.double().view(-1, 1, 1, 1))
                                                ).flatten(1).sum(1)
                                  for (m1, s1), (m2, s2) in zip(mine, theirs)], 1)
        else:
            e1 = torch.stack([p.double() for p in pol.step_preds(traj)], 1)
            e2 = torch.stack([p.double() for p in ref.step_preds(traj)], 1)
            oracle = kl_divergence(Normal(e1, exploration), Normal(e2, exploration))
            oracle = oracle.flatten(2).sum(2)
    assert bool((kl > 0).all())
    torch.testing.assert_close(kl.double(), oracle, rtol=1e-4, atol=0)
    if exploration == 0:  # the rollout's recorded kernels are θ's kernels, bit for bit
        with torch.no_grad():
            assert torch.equal(pol.kl(ref, traj, recorded=True), kl)


# Two Gaussian "data" laws N(0, v I) in 2-D with exact scores: under the VP SDE
# s_v(x, t) = −x / (m² v + s²), so along the θ-policy's exact marginals N(0, (m² v_θ + s²) I)
# E‖s_θ − s_ref‖² = D (m² v_θ + s²) (1/(m² v_ref + s²) − 1/(m² v_θ + s²))².
V_THETA, V_REF, DIM = 0.5, 1.5, 2


def _closed_form_path_kl(sde, t_min: float) -> float:
    t = torch.linspace(t_min, 1.0, 200_001, dtype=torch.float64)
    mg = sde.marginal(t)
    m2, s2 = mg.mean_coef**2, mg.std**2
    a, b = m2 * V_THETA + s2, m2 * V_REF + s2
    rate = 0.5 * sde.diffusion(t) ** 2 * DIM * a * (1 / b - 1 / a) ** 2
    return float(torch.trapezoid(rate, t))


def _gauss_policy(v: float, sde, **kw) -> Policy:
    g = GaussianMixture.isotropic([1.0], [[0.0] * DIM], math.sqrt(v))
    score = g.pred_fn(sde, "score")
    kw.setdefault("action_steps", "all")  # the Riemann sum runs over every step
    return Policy(lambda x, t, c: score(x, t), sde, kind="score", shape=(DIM,), **kw)


@pytest.mark.slow
def test_path_space_kl_converges_across_solvers():
    sde = build_sde("vp")
    exact = _closed_form_path_kl(sde, sde.t_min)
    seeds = torch.arange(3000)
    errors = {}
    for sampler in ("euler_maruyama", "ddim", "heun_sde"):
        for steps in (8, 32, 128):
            kw = dict(sampler=sampler, steps=steps, eta=1.0)
            pol, ref = _gauss_policy(V_THETA, sde, **kw), _gauss_policy(V_REF, sde, **kw)
            traj = pol.rollout([""], k=len(seeds), seeds=seeds)
            errors[sampler, steps] = abs(float(pol.path_kl(ref, traj).mean()) / exact - 1)
            if sampler == "euler_maruyama":  # per-step Gaussian KL of EM at η = 1 is exactly
                # ½ g(t_k)² Δt_k ‖Δs‖²: its sum is the Riemann sum of the path KL
                torch.testing.assert_close(pol.kl(ref, traj).double().sum(1),
                                           pol.path_kl(ref, traj).double(), rtol=1e-5, atol=0)
    for sampler in ("euler_maruyama", "ddim", "heun_sde"):
        e = [errors[sampler, s] for s in (8, 32, 128)]
        assert e[2] < e[1] < e[0], (sampler, e)  # refinement helps (measured: ≈3× per 4× steps)
        assert e[2] < 0.04, (sampler, e)  # and every solver approaches the same integral
