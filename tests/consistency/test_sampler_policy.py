"""Multistep consistency sampling: Alg. 1 kernels, exact log-probs, on-policy ratio 1, CD loss."""

import math

import pytest
import torch

from scorealign.nets import ModelConfig, build_model
from scorealign.policy import Policy
from scorealign.samplers import SAMPLERS, sample
from scorealign.sde import build_sde
from scorealign.sde.consistency import consistency_fn
from scorealign.train.consistency import (ConsistencyConfig, consistency_loss, discretization,
                                          distance, ema_and_scales)

F64 = torch.float64


def _policy(eta=1.0, steps=3, sde="vp", action_steps="all"):
    net = build_model(ModelConfig(type="mlp", kind="v", hidden=32, depth=2), seed=3)
    return Policy(net, build_sde(sde), kind="v", shape=(2,), sampler="consistency",
                  steps=steps, eta=eta, grid="karras", guidance=1.0, action_steps=action_steps)


@pytest.mark.parametrize("steps", [2, 4])
def test_recomputed_log_probs_equal_the_rollout_and_ratio_is_one(steps):
    pol = _policy(steps=steps)
    traj = pol.rollout(["p", "q"], k=3, seeds=torch.arange(6))
    assert bool(torch.isfinite(traj.log_probs).all()) and traj.log_probs.shape == (6, steps)
    lp = pol.log_prob(traj)
    assert torch.equal(lp, traj.log_probs)
    assert torch.equal(torch.exp(lp - traj.log_probs), torch.ones_like(lp))
    # the last step adds the t_min marginal noise (η = 1), so it is an action too
    s_min = float(pol.sde.marginal(torch.tensor([pol.sde.t_min], dtype=F64)).std)
    assert torch.allclose(traj.stds[:, -1].double(), torch.full((6,), s_min, dtype=F64))


@pytest.mark.parametrize("steps", [2, 4])
def test_auto_action_steps_make_the_near_deterministic_last_step_a_denoising_step(steps):
    """Under the default ``auto`` action set the last re-noise (std s(t_min) ≈ 0.01, far below
    the earlier steps') is not an action: it is taken deterministically and carries no log-prob,
    so it cannot dominate the policy gradient; the earlier steps keep exact, ratio-1 log-probs."""
    pol = _policy(steps=steps, action_steps="auto")
    traj = pol.rollout(["p", "q"], k=3, seeds=torch.arange(6))
    assert not bool(traj.action_mask[:, -1].any()) and bool(traj.action_mask[:, :-1].all())
    assert bool((traj.stds[:, -1] == 0).all()) and bool((traj.log_probs[:, -1] == 0).all())
    assert torch.equal(pol.log_prob(traj), traj.log_probs)


def test_log_prob_is_differentiable_and_changes_with_weights():
    pol = _policy()
    traj = pol.rollout(["p"], k=4, seeds=torch.arange(4))
    with torch.no_grad():
        for p in pol.model.parameters():
            p.add_(0.01)
    lp = pol.log_prob(traj)
    assert not torch.equal(lp, traj.log_probs)
    lp.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pol.model.parameters())


def test_ve_step_is_song_algorithm_1():
    """VE: x' = f(x, τ_n) + sqrt(τ_{n+1}² − ε²) z at η = 0 [Song+23, Alg. 1]; last step = f."""
    sde = build_sde("ve")
    g = torch.Generator().manual_seed(0)
    x, pred, z = (torch.randn(5, 2, generator=g, dtype=F64) for _ in range(3))
    t, tn = torch.full((5,), 0.7, dtype=F64), torch.full((5,), 0.2, dtype=F64)
    step = SAMPLERS.get("consistency").fn
    st = step(x, pred, "eps", t, tn, sde, noise=z)
    f = consistency_fn(pred, "eps", x, t, sde)
    eps_, tau = (sde.marginal(torch.tensor([v], dtype=F64)).std for v in (sde.t_min, 0.2))
    assert torch.allclose(st.x_next, f + (tau**2 - eps_**2).sqrt() * z, atol=1e-12)
    last = step(x, pred, "eps", t, torch.full((5,), sde.t_min, dtype=F64), sde, noise=z)
    assert torch.equal(last.x_next, f) and last.deterministic


def _gaussian_flow_map(mu, var, sde):
    """Exact PF-ODE consistency function of N(μ, var I) data: y = x/m, σ = s/m (VE in y)."""
    smin = float(sde.nsr(torch.tensor([sde.t_min], dtype=F64)))
    mmin = float(sde.marginal(torch.tensor([sde.t_min], dtype=F64)).mean_coef)

    def f(x, t):
        mg = sde.marginal(t)
        y, sig = x.double() / mg.mean_coef[:, None], (mg.std / mg.mean_coef)[:, None]
        return mmin * (mu + (y - mu) * math.sqrt(var + smin**2) / (var + sig**2).sqrt())

    return f


@pytest.mark.parametrize("name", ["vp", "flow"])
def test_exact_consistency_function_has_near_zero_cd_loss_and_exact_one_step_samples(name):
    sde, mu, var = build_sde(name), 0.7, 0.25
    f = _gaussian_flow_map(mu, var, sde)
    from scorealign.sde import GaussianMixture
    data = GaussianMixture.isotropic([1.0], [[mu, mu]], math.sqrt(var))
    g = torch.Generator().manual_seed(1)
    x0 = data.sample(4096, g, dtype=F64)
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    kw = dict(teacher=data.pred_fn(sde, "x0"), teacher_kind="x0", solver="heun_ode")
    losses = {}
    for scales in (18, 72):
        cfg = ConsistencyConfig(teacher="exact", start_scales=scales)
        ts = discretization(sde, ema_and_scales(0, 1, cfg)[1], cfg)
        n = torch.randint(scales - 1, (4096,), generator=torch.Generator().manual_seed(2))
        losses[scales] = float(consistency_loss(f, f, sde, x0, ts[n], ts[n + 1], z, **kw).mean())
    exact = losses[18]
    wrong = consistency_loss(lambda x, t: 1.1 * f(x, t), f, sde, x0, ts[n], ts[n + 1], z,
                             **kw).mean()
    # what is left is the teacher's Heun error: small, and shrinking fast with N (order 2)
    assert exact < 1e-2 * float(wrong)
    assert losses[72] < losses[18] / 50
    # CT's pair (same z at both times) has the same exact minimiser in expectation only
    ct = consistency_loss(f, f, sde, x0, ts[n], ts[n + 1], z).mean()
    assert float(ct) > float(exact)
    assert distance(x0, x0, "pseudo_huber").abs().max() < 1e-7


def test_one_step_sampler_with_exact_function_gives_the_t_min_marginal():
    sde, mu, var = build_sde("vp"), 0.7, 0.25
    f = _gaussian_flow_map(mu, var, sde)
    mg0 = sde.marginal(torch.tensor([sde.t_min], dtype=F64))

    def pred_fn(x, t):  # the x̂_0 that makes consistency_fn reproduce f exactly
        from scorealign.sde.consistency import consistency_coefs
        c_x, c_d = consistency_coefs(t.double(), sde)
        return (f(x, t.double()) - c_x[:, None] * x.double()) / c_d[:, None]

    # start from the exact marginal at t_max, so the one-step output is exactly p_{t_min}
    tmax = torch.tensor([sde.t_max], dtype=F64)
    mg = sde.marginal(tmax)
    g = torch.Generator().manual_seed(5)
    x_T = mg.mean_coef * mu + (mg.mean_coef**2 * var + mg.std**2).sqrt() * \
        torch.randn(20000, 2, generator=g, dtype=F64)
    out = sample(pred_fn, "x0", sde, x_T, sampler="consistency", steps=1, generator=g).x0
    want_var = float(mg0.mean_coef**2 * var + mg0.std**2)
    assert abs(out.mean().item() - float(mg0.mean_coef) * mu) < 0.01
    assert abs(out.var().item() - want_var) < 0.02 * want_var
