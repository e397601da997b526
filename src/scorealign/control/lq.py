"""Closed forms for the 1-D LQ problem under linear Gaussian policies π(·|x) = N(k x + h, s²).

Everything reduces to the first two moments z = (E X², E X, 1) of the state, which move linearly:
in continuous time dz/dt = L z (the exploratory dynamics of Wang–Zariphopoulou–Zhou 2020: drift
∫ b π da, squared diffusion ∫ σ² π da), and under the Euler–Maruyama chain with one action per
step z_{n+1} = G z_n with G = I + L Δt + O(Δt²). The expected running reward including the
entropy bonus γ·½ log(2πe s²) is c·z. Hence, with V(x) = v·(x², x, 1):

    continuous:  v = c (βI − L)⁻¹                  (Feynman–Kac for V^π)
    Euler, Δt:   v = Δt c (I − e^{−βΔt} G)⁻¹       (Σ_n e^{−βnΔt} Δt E[r_n − γ log π_n])

and J(π) = v·z₀ for X₀ ~ N(x0_mean, x0_std²). The optimal entropy-regularized policy is Gaussian,
π*(·|x) ∝ exp(H(x, a, V*', V*'')/γ) [Wang+20; Jia & Zhou 2022]; it is found here by policy
iteration on these closed forms (each step is the Gibbs improvement), and checked against the HJB
equation in the tests. All derivations are ours (see docs/methods/ct_rl.md); computations are in
float64 NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scorealign.control.envs import LQEnv


@dataclass(frozen=True)
class LinearGaussian:
    """π(·|x) = N(k x + h, s²)."""

    k: float
    h: float
    s: float


def moment_generator(env: LQEnv, pi: LinearGaussian, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Generator L of z = (E X², E X, 1) and reward row c, so E[r − γ log π] = c·z.

    dS/dt = (2K_b + K_s²) S + 2(c_b + K_s c_s) m + c_s² + D² s²,  dm/dt = K_b m + c_b,
    K_b = A + Bk, c_b = Bh, K_s = C + Dk, c_s = σ₀ + Dh.
    """
    e, (k, h, s) = env, (pi.k, pi.h, pi.s)
    Kb, cb, Ks, cs = e.A + e.B * k, e.B * h, e.C + e.D * k, e.sigma0 + e.D * h
    L = np.array([[2 * Kb + Ks**2, 2 * (cb + Ks * cs), cs**2 + e.D**2 * s**2],
                  [0.0, Kb, cb],
                  [0.0, 0.0, 0.0]])
    entropy = 0.5 * math.log(2 * math.pi * math.e * s**2) if gamma != 0 else 0.0
    c = -np.array([0.5 * e.M + e.R * k + 0.5 * e.N * k**2,
                   e.R * h + e.N * k * h + e.P + e.Q * k,
                   0.5 * e.N * (h**2 + s**2) + e.Q * h]) + np.array([0.0, 0.0, gamma * entropy])
    return L, c


def euler_transition(env: LQEnv, pi: LinearGaussian, dt: float) -> np.ndarray:
    """One Euler–Maruyama step with a fresh action: z_{n+1} = G z_n, G = I + LΔt + Δt² T."""
    L, _ = moment_generator(env, pi, 0.0)
    Kb, cb = env.A + env.B * pi.k, env.B * pi.h
    T = np.array([[Kb**2, 2 * Kb * cb, cb**2 + env.B**2 * pi.s**2],
                  [0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0]])
    return np.eye(3) + L * dt + T * dt**2


def value_coefficients(env: LQEnv, pi: LinearGaussian, gamma: float,
                       dt: float | None = None) -> np.ndarray:
    """v with V^π(x) = v₀ x² + v₁ x + v₂; ``dt=None`` is continuous time, else the Euler chain.

    Returns all entries ``-inf`` when the discounted second moment diverges (β ≤ 2K_b + K_s² in
    continuous time, e^{−βΔt} ρ(G) ≥ 1 for the chain): the policy has value −∞.
    """
    L, c = moment_generator(env, pi, gamma)
    if dt is None:
        if env.beta <= max(L[0, 0], L[1, 1]):
            return np.full(3, -np.inf)
        return np.linalg.solve((env.beta * np.eye(3) - L).T, c)
    G, disc = euler_transition(env, pi, dt), math.exp(-env.beta * dt)
    if disc * max(abs(G[0, 0]), abs(G[1, 1])) >= 1.0:
        return np.full(3, -np.inf)
    return dt * np.linalg.solve((np.eye(3) - disc * G).T, c)


def initial_moments(env: LQEnv) -> np.ndarray:
    """z₀ = (E X₀², E X₀, 1)."""
    return np.array([env.x0_std**2 + env.x0_mean**2, env.x0_mean, 1.0])


def performance(env: LQEnv, pi: LinearGaussian, gamma: float, dt: float | None = None) -> float:
    """J(π) = E_{X₀} V^π(X₀) (−inf for a policy whose value diverges)."""
    v = value_coefficients(env, pi, gamma, dt)
    return float(v @ initial_moments(env)) if np.all(np.isfinite(v)) else -math.inf


def q_function(env: LQEnv, v: np.ndarray, x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """q^π(x, a) = b V' + ½ σ² V'' + r − β V for V = v₀x² + v₁x + v₂.

    [Jia & Zhou 2023, q-function]
    """
    V, dV, d2V = v[0] * x**2 + v[1] * x + v[2], 2 * v[0] * x + v[1], 2 * v[0]
    b = env.A * x + env.B * a
    sig = env.sigma0 + env.C * x + env.D * a
    r = -(0.5 * env.M * x**2 + env.R * x * a + 0.5 * env.N * a**2 + env.P * x + env.Q * a)
    return b * dV + 0.5 * sig**2 * d2V + r - env.beta * V


def gibbs_improvement(env: LQEnv, v: np.ndarray, gamma: float, s_fixed: float | None = None
                      ) -> LinearGaussian:
    """π'(·|x) ∝ exp(H(x, a, V', V'')/γ) for V = v·(x², x, 1): a Gaussian in a.

    H is quadratic in a with curvature −(N − 2D²v₀) and linear coefficient
    (2Bv₀ + 2CDv₀ − R) x + B v₁ + 2Dσ₀v₀ − Q; with γ = 0 the mean is the maximizer and the std
    is kept at ``s_fixed``.
    """
    prec = env.N - 2 * env.D**2 * v[0]
    if prec <= 0:
        raise ValueError("Hamiltonian is not concave in a (N − 2D²v₀ ≤ 0)")
    k = (2 * env.B * v[0] + 2 * env.C * env.D * v[0] - env.R) / prec
    h = (env.B * v[1] + 2 * env.D * env.sigma0 * v[0] - env.Q) / prec
    s = math.sqrt(gamma / prec) if gamma > 0 else float(s_fixed if s_fixed is not None else 0.0)
    return LinearGaussian(k, h, s)


def optimal_policy(env: LQEnv, gamma: float, s_fixed: float = 0.5, tol: float = 1e-13,
                   max_iter: int = 200) -> tuple[LinearGaussian, np.ndarray]:
    """Optimal policy and its value coefficients by policy iteration from a stabilizing start.

    With γ > 0 this is the entropy-regularized optimum (s*² = γ / (N − 2D²v₀*)); with γ = 0 the
    mean gain is optimal for any fixed exploration std ``s_fixed`` (k*, h* do not depend on s).
    """
    k0 = 0.0 if env.beta > 2 * env.A + env.C**2 else -(abs(env.A) + env.C**2 + 1.0) / env.B
    pi = LinearGaussian(k0, 0.0, math.sqrt(gamma / env.N) if gamma > 0 else s_fixed)
    for _ in range(max_iter):
        v = value_coefficients(env, pi, gamma)
        new = gibbs_improvement(env, v, gamma, s_fixed)
        if max(abs(new.k - pi.k), abs(new.h - pi.h), abs(new.s - pi.s)) < tol:
            return new, value_coefficients(env, new, gamma)
        pi = new
    raise RuntimeError("policy iteration did not converge")


def occupation_moments(env: LQEnv, pi: LinearGaussian, dt: float | None = None) -> np.ndarray:
    """(E X², E X) under the normalized discounted occupation measure β d^π_{μ₀}.

    Continuous: β (βI − L)⁻¹ z₀; Euler chain sampled at n = ⌊τ/Δt⌋, τ ~ Exp(β):
    (1 − e^{−βΔt}) (I − e^{−βΔt} G)⁻¹ z₀.
    """
    z0 = initial_moments(env)
    if dt is None:
        L, _ = moment_generator(env, pi, 0.0)
        return (env.beta * np.linalg.solve(env.beta * np.eye(3) - L, z0))[:2]
    disc = math.exp(-env.beta * dt)
    G = euler_transition(env, pi, dt)
    return ((1 - disc) * np.linalg.solve(np.eye(3) - disc * G, z0))[:2]


def hjb_residual(env: LQEnv, v: np.ndarray, gamma: float, x: np.ndarray) -> np.ndarray:
    """βV − sup_π{∫ H π da + γ Entropy(π)} at x, for γ > 0 (zero iff V solves the HJB).

    The sup over densities is γ log ∫ exp(H/γ) da = ℓ²/(2p) + (γ/2) log(2πγ/p) plus the
    a-free part of H, with p = N − 2D²v₀ and ℓ the linear coefficient of H in a.
    """
    V, dV, d2V = v[0] * x**2 + v[1] * x + v[2], 2 * v[0] * x + v[1], 2 * v[0]
    free = (env.A * x * dV + 0.5 * d2V * (env.sigma0 + env.C * x) ** 2
            - 0.5 * env.M * x**2 - env.P * x)
    p = env.N - env.D**2 * d2V
    ell = env.B * dV + d2V * (env.sigma0 + env.C * x) * env.D - env.R * x - env.Q
    return env.beta * V - (free + ell**2 / (2 * p) + 0.5 * gamma * np.log(2 * math.pi * gamma / p))


def discrete_objective(env: LQEnv, pi: LinearGaussian, dt: float, discount: float,
                       entropy_per_step: float) -> float:
    """J_DT(π) = E Σ_n κⁿ (r_n Δt − α log π_n) on the Euler chain at Δt (−inf if it diverges).

    The objective a discrete-time learner with per-step discount κ = ``discount`` and per-step
    entropy weight α = ``entropy_per_step`` maximizes: with per-step constants fixed at a
    reference step (κ = e^{−βΔt_ref}, α = γΔt_ref) while the simulation uses Δt, it is *not* a
    discretization of the continuous objective; with κ = e^{−βΔt}, α = γΔt it equals
    ``performance(env, pi, gamma, dt)``. Closed form v = Δt c_{α/Δt} (I − κG)⁻¹ (module doc).
    """
    G = euler_transition(env, pi, dt)
    if discount * max(abs(G[0, 0]), abs(G[1, 1])) >= 1.0:
        return -math.inf
    _, c = moment_generator(env, pi, entropy_per_step / dt)
    v = dt * np.linalg.solve((np.eye(3) - discount * G).T, c)
    return float(v @ initial_moments(env))


def discrete_optimum(env: LQEnv, dt: float, discount: float, entropy_per_step: float,
                     start: LinearGaussian) -> LinearGaussian:
    """argmax over linear Gaussian policies of :func:`discrete_objective` (Nelder–Mead on
    (k, h, log s) from ``start``; the objective is smooth and unimodal in this family)."""
    from scipy.optimize import minimize

    def neg(theta):
        J = discrete_objective(env, LinearGaussian(theta[0], theta[1], math.exp(theta[2])), dt,
                               discount, entropy_per_step)
        return -J if math.isfinite(J) else 1e300

    res = minimize(neg, [start.k, start.h, math.log(start.s)], method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 6000})
    return LinearGaussian(res.x[0], res.x[1], math.exp(res.x[2]))


def discrete_optimum_gap(env: LQEnv, gamma: float, dt: float, discount: float,
                         entropy_per_step: float) -> float:
    """Continuous-time gap J* − J(π_DT) of the exact optimum π_DT of the discrete objective:
    the floor of a DT learner that solves the problem it is given exactly."""
    pi_star, _ = optimal_policy(env, gamma)
    pi_dt = discrete_optimum(env, dt, discount, entropy_per_step, pi_star)
    return performance(env, pi_star, gamma) - performance(env, pi_dt, gamma)
