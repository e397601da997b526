"""The discrete-time baselines as twins of the CT methods (issue 16): the mis-specified DT
objective in closed form, the DT fitted-q advantage, and the √KL penalty options of CT-PPO."""

import math

import pytest
import torch

from scorealign.control import lq
from scorealign.control.algorithms import (ALGOS, sqrt_kl_penalty, state_kl)
from scorealign.control.envs import LQEnv
from scorealign.control.estimators import (build_ct_batch, build_dt_batch, regression_advantage,
                                           td_q_rate)
from scorealign.control.policy import LinearCritic, gaussian_kl
from scorealign.control.simulate import simulate
from scorealign.rng import generator

ENV, GAMMA = LQEnv(), 0.1
PI = lq.LinearGaussian(k=-0.6, h=0.4, s=0.45)


@pytest.mark.parametrize("dt", [0.1, 0.02])
def test_rescaled_discrete_objective_is_the_euler_chain_value(dt):
    """κ = e^{−βΔt}, α = γΔt: the DT objective is the chain's discretized CT objective."""
    J = lq.discrete_objective(ENV, PI, dt, math.exp(-ENV.beta * dt), GAMMA * dt)
    assert J == pytest.approx(lq.performance(ENV, PI, GAMMA, dt), rel=1e-12, abs=1e-12)


def test_fixed_constant_optimum_gap_grows_as_dt_shrinks():
    """Per-step constants fixed at Δt_ref = 0.05: the exact optimum of the DT objective is off the
    CT optimum by 0.0875 (Δt = 0.02) and 0.336 (0.01) (the values quoted in issue 16), equal to
    the chain optimum at Δt_ref, and a stationary point of the DT objective."""
    kappa, alpha = math.exp(-ENV.beta * 0.05), GAMMA * 0.05
    gaps = {dt: lq.discrete_optimum_gap(ENV, GAMMA, dt, kappa, alpha) for dt in (0.05, 0.02, 0.01)}
    chain = lq.discrete_optimum_gap(ENV, GAMMA, 0.05, kappa, alpha)
    assert gaps[0.05] == pytest.approx(chain)
    assert gaps[0.02] == pytest.approx(0.0875, abs=5e-4)
    assert gaps[0.01] == pytest.approx(0.336, abs=1e-3)
    pi = lq.discrete_optimum(ENV, 0.01, kappa, alpha, PI)
    J0 = lq.discrete_objective(ENV, pi, 0.01, kappa, alpha)
    for d in ((1e-3, 0, 0), (0, 1e-3, 0), (0, 0, 1e-3)):
        for sgn in (1, -1):
            q = lq.LinearGaussian(pi.k + sgn * d[0], pi.h + sgn * d[1], pi.s + sgn * d[2])
            assert lq.discrete_objective(ENV, q, 0.01, kappa, alpha) <= J0 + 1e-12


def test_dt_regression_advantage_is_dt_times_the_ct_fit_at_lambda_zero(lq_policy):
    """With κ = e^{−βΔt}, α = γΔt, λ = 0 the DT targets Â + α log π are Δt·q̂, so the DT fitted
    advantage is exactly Δt × the CT fitted advantage (same critic, same uniform weights)."""
    dt = 0.05
    policy = lq_policy(PI)
    ro = simulate(ENV, policy, 64, dt, 3.0, generator(0, "twin"))
    critic = LinearCritic(1, 2)
    batch, _ = build_dt_batch(ro, policy, critic, math.exp(-ENV.beta * dt), 0.0, GAMMA * dt,
                              normalize=False, advantage="regression")
    phi, phi_next = critic.features(ro.xs[:-1]), critic.features(ro.xs[1:])
    q = td_q_rate(ro.rewards, phi @ critic.w, phi_next @ critic.w, dt, ENV.beta).reshape(-1)
    ct = regression_advantage(ro.xs[:-1].reshape(-1, 1), ro.actions.reshape(-1, 1), q,
                              ro.log_probs.reshape(-1), torch.ones_like(q), policy, GAMMA)
    torch.testing.assert_close(batch.adv, dt * ct, rtol=1e-8, atol=1e-10)
    gae_batch, _ = build_dt_batch(ro, policy, LinearCritic(1, 2), math.exp(-ENV.beta * dt), 0.0,
                                  GAMMA * dt, normalize=False, advantage="gae")
    assert not torch.allclose(gae_batch.adv, batch.adv)  # the fit pools: a different estimator
    with pytest.raises(ValueError, match="advantage must be"):
        build_dt_batch(ro, policy, LinearCritic(1, 2), 0.9, 0.0, 0.01, advantage="fitted")


def _ct_batch(make_policy, seed=0):
    policy = make_policy(PI)
    ro = simulate(ENV, policy, 32, 0.05, 0.0, generator(seed, "pen"), occupation="exponential")
    batch, _ = build_ct_batch(ro, policy, LinearCritic(1, 2), ENV.beta, GAMMA, "exponential",
                              "regression")
    return policy, batch


def test_sqrt_kl_orders_and_directions(lq_policy):
    """Equal per-state KL: both orders give (Σw)√KL; otherwise mean √ ≤ √ mean (Jensen). The
    directions are KL(π'‖π) (``new_old``, the default) and KL(π‖π')."""
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    const = torch.full((3,), 0.04, dtype=torch.float64)
    for order in ("mean_of_sqrt", "sqrt_of_mean"):
        assert float(sqrt_kl_penalty(const, w, order, 0.0)) == pytest.approx(0.2)
    kl = torch.tensor([0.0, 0.01, 0.25], dtype=torch.float64)
    a = float(sqrt_kl_penalty(kl, w, "mean_of_sqrt", 0.0))
    b = float(sqrt_kl_penalty(kl, w, "sqrt_of_mean", 0.0))
    assert a == pytest.approx(0.3 * 0.1 + 0.5 * 0.5)
    assert b == pytest.approx(math.sqrt(0.003 + 0.125))
    assert a < b
    policy, batch = _ct_batch(lq_policy)
    with torch.no_grad():
        policy.W.add_(torch.tensor([[0.1, -0.2]], dtype=torch.float64))
        policy.log_std.add_(0.3)
    new_old, old_new = state_kl(policy, batch, "new_old"), state_kl(policy, batch, "old_new")
    m, ls = policy.mean(batch.x), policy.log_std.expand_as(batch.mean_old)
    lo = batch.log_std_old.expand_as(batch.mean_old)
    torch.testing.assert_close(new_old, gaussian_kl(m, ls, batch.mean_old, lo))
    torch.testing.assert_close(old_new, gaussian_kl(batch.mean_old, lo, m, ls))
    assert not torch.allclose(new_old, old_new)  # the std changed: KL is not symmetric


@pytest.mark.parametrize("kw", [{}, {"sqrt_order": "sqrt_of_mean"}, {"kl_direction": "old_new"}])
def test_penalty_options_are_used_by_the_update(kw, lq_policy):
    """Each option changes the update and reports its own statistic; bad values are refused."""
    fn = ALGOS["ct_ppo_penalty"].fn
    outs = {}
    for name, opts in (("default", {}), ("opt", kw)):
        policy, batch = _ct_batch(lq_policy, 1)
        opt = torch.optim.Adam(policy.parameters(), lr=0.05)
        state = {"kl_coef": 0.5}
        m = fn(policy, opt, batch, generator(0, "u"), state=state, epochs=3, **opts)
        expect = sqrt_kl_penalty(state_kl(policy, batch, opts.get("kl_direction", "new_old")),
                                 batch.weight / batch.weight.sum(),
                                 opts.get("sqrt_order", "mean_of_sqrt"), 0.0)
        assert m["policy/sqrt_kl"] == pytest.approx(float(expect.detach()))
        outs[name] = policy.W.detach().clone()
    assert torch.equal(outs["default"], outs["opt"]) == (kw == {})
    policy, batch = _ct_batch(lq_policy)
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    with pytest.raises(ValueError, match="sqrt_order"):
        fn(policy, opt, batch, generator(0, "u"), state={}, sqrt_order="median")
