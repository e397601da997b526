"""Error propagation through the reverse SDE (sde/bounds.py): the bound's factor in closed form,
the exact Euler–Maruyama law for Gaussian data against the project's sampler, and the measured
response to a score bias against the factor [Tang & Zhao 24, CDPM; Song+21, Eq. 6]."""

import math

import numpy as np
import pytest
import torch

from scorealign.samplers import sample
from scorealign.sde import build_sde
from scorealign.sde.bounds import (error_amplification, error_factor, gaussian_reverse_em,
                                   marginal_moments)



def _ou(T=5.0):
    """VP with constant β = 2: the OU process dX = −X dt + √2 dW (θ = 1, σ² = 2)."""
    return build_sde("vp", beta_min=2.0, beta_max=2.0, T=T, t_min=1e-3)


def test_factor_closed_forms_for_ou_with_stationary_data():
    """Data N(0, 1) is stationary for θ = 1, σ² = 2, so Var p_t = 1 and r = −θ + σ² = θ:
    F_exact = σ²(1 − e^{−θ(T−t₀)})/θ; the drift-only rate r = a = −θ gives σ²(e^{θ(T−t₀)} − 1)/θ,
    and a start error survives as e^{∓θ(T−t₀)}."""
    sde, span = _ou(), 5.0 - 1e-3
    one = lambda t: np.ones_like(t)  # noqa: E731
    assert error_factor(sde, one, data_var=1.0) == pytest.approx(2 * (1 - math.exp(-span)),
                                                                 rel=1e-6)
    assert error_factor(sde, one) == pytest.approx(2 * math.expm1(span), rel=1e-6)
    assert error_amplification(sde, data_var=1.0) == pytest.approx(math.exp(-span), rel=1e-6)
    assert error_amplification(sde) == pytest.approx(math.exp(span), rel=1e-6)


@pytest.mark.parametrize("family,kw", [("cou", {"theta": 1.0, "sigma": 1.0}),
                                       ("csubvp", {"beta_min": 1.0, "beta_max": 1.0})])
def test_em_shift_under_a_bias_converges_to_the_exact_factor(family, kw):
    """The sampler's output mean moves by δ·F (r = a + g²/Var p_t) as h → 0, first order in h."""
    sde = build_sde(family, T=3.0, t_min=1e-3, **kw)
    one = lambda t: np.ones_like(t)  # noqa: E731
    F = error_factor(sde, one, data_var=0.25)
    m, v = marginal_moments(sde, 3.0, 2.0, 0.25)
    errs = []
    for n in (300, 600, 1200):
        grid = np.linspace(3.0, 1e-3, n + 1)
        shift = (gaussian_reverse_em(sde, grid, 2.0, 0.25, m, v, one)[0]
                 - gaussian_reverse_em(sde, grid, 2.0, 0.25, m, v)[0])
        errs.append(abs(shift - F))
    assert errs[-1] < 2e-2 * F
    assert errs[0] / errs[1] == pytest.approx(2.0, rel=0.25)
    assert errs[1] / errs[2] == pytest.approx(2.0, rel=0.25)


def test_clean_em_from_the_exact_marginal_returns_the_marginal_at_t_min():
    """No error, exact start: the output law tends to N(m μ₀, m²σ₀² + s²) at t_min (first order)."""
    sde = build_sde("cou", theta=1.0, sigma=1.0, T=2.0, t_min=1e-3)
    target = marginal_moments(sde, 1e-3, 2.0, 0.25)
    start = marginal_moments(sde, 2.0, 2.0, 0.25)
    gaps = []
    for n in (200, 400, 800):
        M, S = gaussian_reverse_em(sde, np.linspace(2.0, 1e-3, n + 1), 2.0, 0.25, *start)
        gaps.append(abs(M - target[0]) + abs(S - target[1]))
    assert gaps[2] < 0.02
    assert gaps[0] / gaps[1] == pytest.approx(2.0, rel=0.25)


def test_closed_form_em_law_matches_the_project_sampler():
    """The recursion is the law of ``samplers.sample(..., "euler_maruyama")`` with the exact
    Gaussian score plus a bias δ/s(t) (ε-norm error): 20 000 paths, mean and variance within
    4 standard errors."""
    sde = build_sde("csubvp", T=1.0)
    mu0, var0, delta, steps = 2.0, 0.25, 0.3, 25

    def score(x, t):
        mg = sde.marginal(t.double())
        m, s = mg.mean_coef[:, None], mg.std[:, None]
        return -(x.double() - m * mu0) / (m**2 * var0 + s**2) + delta / s

    g = torch.Generator().manual_seed(0)
    m_T, v_T = marginal_moments(sde, 1.0, mu0, var0)
    n = 20000
    x_T = (m_T + math.sqrt(v_T) * torch.randn(n, 1, generator=g, dtype=torch.float64))
    grid = torch.linspace(1.0, sde.t_min, steps + 1, dtype=torch.float64)
    x = sample(score, "score", sde, x_T, sampler="euler_maruyama", steps=steps, grid=grid,
               generator=g).x0.double().squeeze(1)
    err = lambda t: delta / sde.marginal(torch.as_tensor(t)).std.numpy()  # noqa: E731
    M, S = gaussian_reverse_em(sde, grid.numpy(), mu0, var0, m_T, v_T, err)
    assert abs(float(x.mean()) - M) < 4 * math.sqrt(S / n)
    assert abs(float(x.var()) - S) < 4 * S * math.sqrt(2 / n)
