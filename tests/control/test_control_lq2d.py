"""Closed forms of the 2-D linear system ``lq2d``: Lyapunov/Riccati against an ODE solve of the
moment equations, stationarity of the optimum, and learning towards it."""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from scorealign.control import lq2d
from scorealign.control.envs import LQ2DEnv
from scorealign.control.train import AlgoConfig, ControlConfig, EnvConfig, train_control, ControlTrainConfig

ENV, GAMMA = LQ2DEnv(), 0.1
K = np.array([[-0.5, 0.2], [0.1, -0.8]])
H, S = np.array([0.3, -0.2]), np.array([0.4, 0.6])


def _ode_performance(K, h, s, T=40.0):
    """∫₀^T e^{−βt} E[r − γ log π] dt from the moment ODEs dm = (Am + h)dt,
    dS = (AS + SAᵀ + hmᵀ + mhᵀ + σ²I)dt integrated by an adaptive solver."""
    A, c = lq2d.drift_matrix(ENV) + K, ENV.control_cost
    entropy = np.sum(0.5 * np.log(2 * math.pi * math.e * s**2))

    def rhs(t, y):
        m, Sm = y[:2], y[2:6].reshape(2, 2)
        dm = A @ m + h
        dS = A @ Sm + Sm @ A.T + np.outer(h, m) + np.outer(m, h) + ENV.sigma**2 * np.eye(2)
        r = (-(np.trace(Sm) - 2 * lq2d.TARGET @ m + 1)
             - 0.5 * c * (np.trace(K @ Sm @ K.T) + 2 * h @ K @ m + h @ h + np.sum(s**2))
             + GAMMA * entropy)
        return np.concatenate([dm, dS.ravel(), [math.exp(-ENV.beta * t) * r]])

    y0 = np.concatenate([np.zeros(2), (0.25 * np.eye(2)).ravel(), [0.0]])
    sol = solve_ivp(rhs, (0, T), y0, rtol=1e-10, atol=1e-12)
    return sol.y[-1, -1]


def test_closed_form_value_matches_moment_ode():
    assert lq2d.performance(ENV, K, H, S, GAMMA) == pytest.approx(_ode_performance(K, H, S),
                                                                 abs=1e-7)


def test_riccati_optimum_is_stationary_and_best():
    K_s, h_s, s_s = lq2d.optimal_policy(ENV, GAMMA)
    theta = np.concatenate([K_s.ravel(), h_s, np.log(s_s)])

    def J(th):
        return lq2d.performance(ENV, th[:4].reshape(2, 2), th[4:6], np.exp(th[6:]), GAMMA)

    eps = 1e-5
    grad = np.array([(J(theta + eps * e) - J(theta - eps * e)) / (2 * eps) for e in np.eye(8)])
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    rng = np.random.default_rng(0)
    assert all(J(theta + 0.05 * rng.standard_normal(8)) < J(theta) for _ in range(20))


def test_unstable_gain_has_value_minus_infinity():
    assert lq2d.performance(ENV, np.eye(2), H, S, GAMMA) == -math.inf


def test_ct_ppo_approaches_the_riccati_optimum():
    cfg = ControlConfig(env=EnvConfig(name="lq2d"), algo=AlgoConfig(name="ct_ppo"),
                        occupation="exponential", train=ControlTrainConfig(steps=30), n_paths=64, dt=0.05,
                        eval_every=30)
    K_s, h_s, s_s = lq2d.optimal_policy(ENV, cfg.temperature)
    gap0 = lq2d.performance(ENV, K_s, h_s, s_s, cfg.temperature) - lq2d.performance(
        ENV, np.zeros((2, 2)), np.zeros(2), np.full(2, cfg.policy.init_std), cfg.temperature)
    final = train_control(cfg)
    assert final["perf/gap"] < gap0 / 20
