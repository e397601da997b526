"""Error propagation through the reverse SDE: contraction rates, the bound's factor, and the exact
law of the Euler–Maruyama sampler for Gaussian data.

For a linear forward SDE dX = a(t) X dt + g(t) dW, the reverse SDE [Song+21, Eq. 6] run with a
score s_t + e_t (e_t a bias that depends on t only) differs from the exact one, under a
synchronous coupling, by a process Δ with

    dΔ/du = −(a(t) + g(t)² λ_t) Δ + g(t)² e_t,    t = T − u,

where −λ_t ≤ 0 bounds the curvature of log p_t (λ_t = 1/Var p_t for Gaussian data, where the
score is linear and this is an identity). Hence the error reaching t_min is at most

    F = ∫_{t_min}^{T} g(t)² |e_t| exp(−∫_{t_min}^{t} r) dt,   r = a + g² λ,

the factor of the contraction bounds of [Tang & Zhao 24, CDPM, arXiv:2401.13115] (the paper's
equation numbers could not be read here). With λ = 0 (``data_var=None``) only the drift
contracts: that is the worst case over data distributions the CDPM argument relies on; with
Gaussian data N(μ₀, σ₀²) (``data_var=σ₀²``) the factor is exact for the continuous process.

:func:`gaussian_reverse_em` gives the exact output law (mean, variance per coordinate) of the
project's Euler–Maruyama sampler (``samplers.steps.euler_maruyama_step``, η = 1, score evaluated
at the start of each step) for Gaussian data, so errors and discretization can be measured
without Monte Carlo noise. Everything here is float64 and 1-D per coordinate.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from scorealign.sde.base import SDE

ErrorFn = Callable[[np.ndarray], np.ndarray]


def _coefs(sde: SDE, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tt = torch.as_tensor(np.asarray(t, dtype=np.float64))
    mg = sde.marginal(tt)
    return (sde.drift_coef(tt).numpy(), sde.diffusion(tt).numpy(), mg.mean_coef.numpy(),
            mg.std.numpy())


def contraction_rate(sde: SDE, t: np.ndarray, data_var: float | None = None) -> np.ndarray:
    """r(t) = a(t) + g(t)²/(m(t)² σ₀² + s(t)²) (Gaussian data), or a(t) (``data_var=None``)."""
    a, g, m, s = _coefs(sde, t)
    if data_var is None:
        return a
    return a + g**2 / (m**2 * data_var + s**2)


def log_grid(t_min: float, t_max: float, n: int = 20001) -> np.ndarray:
    """Quadrature nodes, geometric in t − t_min + h₀ so endpoint singularities (1/s, 1/s²) are
    resolved; h₀ = 1e-3·t_min (or 1e-9)."""
    h0 = max(1e-3 * t_min, 1e-9)
    return t_min - h0 + np.geomspace(h0, t_max - t_min + h0, n)


def _cumtrapz(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(y)
    out[1:] = np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))
    return out


def error_factor(sde: SDE, error: ErrorFn, t_min: float | None = None,
                 t_max: float | None = None, data_var: float | None = None,
                 n: int = 20001) -> float:
    """F = ∫_{t_min}^{t_max} g² |e(t)| exp(−∫_{t_min}^t r) dt (module doc), by trapezoid on
    :func:`log_grid`. ``error(t)`` is the score bias per unit δ (1: absolute; 1/s: ε-norm)."""
    t_min = sde.t_min if t_min is None else t_min
    t_max = sde.T if t_max is None else t_max
    t = log_grid(t_min, t_max, n)
    _, g, _, _ = _coefs(sde, t)
    damp = np.exp(-_cumtrapz(contraction_rate(sde, t, data_var), t))
    return float(np.trapezoid(g**2 * np.abs(error(t)) * damp, t))


def error_amplification(sde: SDE, t_min: float | None = None, t_max: float | None = None,
                        data_var: float | None = None, n: int = 20001) -> float:
    """exp(−∫_{t_min}^{t_max} r): how much an error in the *start* x_T survives to t_min."""
    t_min = sde.t_min if t_min is None else t_min
    t_max = sde.T if t_max is None else t_max
    t = log_grid(t_min, t_max, n)
    return float(np.exp(-np.trapezoid(contraction_rate(sde, t, data_var), t)))


def gaussian_reverse_em(sde: SDE, grid: np.ndarray, data_mean: float, data_var: float,
                        start_mean: float, start_var: float,
                        error: ErrorFn | None = None) -> tuple[float, float]:
    """Exact (mean, variance) of the Euler–Maruyama reverse-SDE sampler for data N(μ₀, σ₀²).

    The exact score is −(x − m μ₀)/v, v = m²σ₀² + s²; with a bias e(t) a step from t to t' < t,
    h = t − t', is Y' = (1 − h a − h g²/v) Y + h g² (m μ₀/v + e) + g √h ξ [Song+21, Eq. 6;
    the step of ``samplers.steps.euler_maruyama_step``], so mean and variance follow
    M' = c M + h g²(m μ₀/v + e), S' = c² S + g² h. ``grid`` is decreasing, from t_max to t_min.
    """
    grid = np.asarray(grid, dtype=np.float64)
    a, g, m, s = _coefs(sde, grid[:-1])
    e = np.zeros_like(a) if error is None else error(grid[:-1])
    M, S = float(start_mean), float(start_var)
    for i, h in enumerate(grid[:-1] - grid[1:]):
        v = m[i] ** 2 * data_var + s[i] ** 2
        c = 1.0 - h * a[i] - h * g[i] ** 2 / v
        M = c * M + h * g[i] ** 2 * (m[i] * data_mean / v + e[i])
        S = c * c * S + g[i] ** 2 * h
    return M, S


def marginal_moments(sde: SDE, t: float, data_mean: float, data_var: float) -> tuple[float, float]:
    """(mean, variance) of X_t for X_0 ~ N(μ₀, σ₀²): (m μ₀, m² σ₀² + s²)."""
    _, _, m, s = _coefs(sde, np.array([t]))
    return float(m[0] * data_mean), float(m[0] ** 2 * data_var + s[0] ** 2)


def gaussian_w2(mean_a: float, var_a: float, mean_b: float, var_b: float) -> float:
    """W2 between 1-D Gaussians: sqrt((μ_a − μ_b)² + (σ_a − σ_b)²)."""
    return float(np.hypot(mean_a - mean_b, np.sqrt(max(var_a, 0.0)) - np.sqrt(max(var_b, 0.0))))


__all__ = ["contraction_rate", "error_factor", "error_amplification", "gaussian_reverse_em",
           "marginal_moments", "gaussian_w2", "log_grid"]
