"""CT policy gradient estimator vs finite differences of the closed form, the policy updates,
and learning on LQ towards the known optimum [Zhao+23 CTPO, policy gradient; CT-TRPO/PPO]."""

import math

import numpy as np
import pytest
import torch

from scorealign.control import lq
from scorealign.control.algorithms import ALGOS, conjugate_gradient, ct_local_approximation
from scorealign.control.envs import LQEnv
from scorealign.control.estimators import build_ct_batch
from scorealign.control.policy import LinearCritic
from scorealign.control.simulate import simulate
from scorealign.control.train import AlgoConfig, ControlConfig, train_control, ControlTrainConfig
from scorealign.rng import generator

ENV, GAMMA = LQEnv(), 0.1
PI = lq.LinearGaussian(k=-0.6, h=0.4, s=0.45)


def _batch(make_policy, seed, dt=0.02, n=256, q_estimator="td"):
    p = make_policy(PI)
    ro = simulate(ENV, p, n, dt, 0.0, generator(seed, "pg-test"), occupation="exponential")
    batch, _ = build_ct_batch(ro, p, LinearCritic(1, 2), ENV.beta, GAMMA, "exponential",
                              q_estimator)
    return p, batch


def _surrogate(p, b):
    return ct_local_approximation(p.log_prob(b.x, b.a), b.logp_old, b.adv,
                                  p.kl_from(b.x, b.mean_old, b.log_std_old), b.weight, GAMMA)


def test_policy_gradient_estimate_matches_finite_differences(lq_policy):
    """∇_θ L^π(π_θ)|_θ from occupation-time samples (τ ~ Exp(β)), LSTD critic and TD q-rates,
    against central differences of the exact J of the simulated Euler chain (for which the
    estimator is unbiased up to the critic fit): every coordinate within 4 standard errors."""
    dt = 0.02
    grads = []
    for seed in range(16):
        p, b = _batch(lq_policy, seed, dt)
        g = torch.autograd.grad(_surrogate(p, b), [p.W, p.log_std])
        grads.append(torch.cat([g[0].flatten(), g[1]]).numpy())
    grads = np.array(grads)
    mean, se = grads.mean(0), grads.std(0, ddof=1) / math.sqrt(len(grads))

    def J(theta):  # θ = (h, k, log s)
        return lq.performance(ENV, lq.LinearGaussian(theta[1], theta[0], math.exp(theta[2])),
                              GAMMA, dt)

    theta, eps = np.array([PI.h, PI.k, math.log(PI.s)]), 1e-5
    fd = np.array([(J(theta + eps * e) - J(theta - eps * e)) / (2 * eps) for e in np.eye(3)])
    assert np.all(np.abs(mean - fd) < 4 * se), (mean, fd, se)
    assert abs(mean[0]) > 10 * se[0]  # the test can tell a wrong sign or a missing term


def test_regression_q_gives_zero_mean_advantage_per_state(lq_policy):
    """The fitted-q advantage has E_{a∼π}[A(x, ·)] = 0 at every state (analytic baseline)."""
    p, b = _batch(lq_policy, 0, q_estimator="regression")
    # re-evaluate the advantage on fresh actions at a few states through the same fit: the mean
    # over many actions at a fixed state vanishes up to Monte Carlo error
    from scorealign.control.estimators import regression_advantage
    x = torch.full((20000, 1), 0.7, dtype=torch.float64)
    with torch.no_grad():
        a = p.sample(x, generator(1, "actions"))
    adv = regression_advantage(torch.cat([b.x, x]), torch.cat([b.a, a]),
                               torch.cat([b.adv, torch.zeros(20000, dtype=torch.float64)]),
                               torch.cat([b.logp_old, p.log_prob(x, a).detach()]),
                               torch.cat([b.weight, torch.zeros(20000, dtype=torch.float64)]),
                               p, GAMMA)[-20000:]
    assert float(adv.mean()) == pytest.approx(0.0, abs=4 * float(adv.std()) / math.sqrt(20000))


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=20)
    torch.testing.assert_close(A @ x, b, atol=1e-9, rtol=0)


def test_trpo_step_stays_in_trust_region_and_improves_the_local_approximation(lq_policy):
    p, b = _batch(lq_policy, 3)
    before = float(_surrogate(p, b).detach())
    out = ALGOS["ct_trpo"].fn(p, None, b, generator(0, "u"), max_kl=0.005)
    assert out["trpo/backtracks"] < 10
    assert 0 < out["policy/kl"] <= 0.005
    assert float(_surrogate(p, b).detach()) > before


@pytest.mark.parametrize("algo,lr,hparams", [("ct_ppo", 0.02, {}),
                                             ("ct_trpo", 0.02, {"max_kl": 0.02})])
def test_learned_policy_approaches_the_optimum(algo, lr, hparams):
    """From π = N(0, 0.5²): the closed-form gap J* − J(π) shrinks by > 20× and k → k*."""
    cfg = ControlConfig(algo=AlgoConfig(name=algo, lr=lr, hparams=hparams), train=ControlTrainConfig(steps=40),
                        n_paths=128, dt=0.05, eval_every=40)
    env = ENV
    pi_star, _ = lq.optimal_policy(env, cfg.temperature)
    gap0 = lq.performance(env, pi_star, cfg.temperature) - lq.performance(
        env, lq.LinearGaussian(0.0, 0.0, cfg.policy.init_std), cfg.temperature)
    final = train_control(cfg)
    assert final["perf/gap"] < gap0 / 20
    assert final["policy/k"] == pytest.approx(pi_star.k, abs=0.25)
    assert final["policy/h"] == pytest.approx(pi_star.h, abs=0.25)
