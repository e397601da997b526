"""Flow SDE steps: mean and std against the authors' formulas, a = 0 is Euler bit for bit,
marginal preservation on a Gaussian, the SD3 shift, and registry plumbing."""

from __future__ import annotations

import math

import pytest
import torch

from scorealign.samplers import SAMPLERS, make_grid, sample
from scorealign.samplers.flow import time_shift
from scorealign.sde import build_sde

from flow_targets import gaussian_velocity

FLOW = build_sde("flow")
B, D = 3, (2, 5)


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, *D, generator=g, dtype=torch.float64)
    v = torch.randn(B, *D, generator=g, dtype=torch.float64)
    z = torch.randn(B, *D, generator=g, dtype=torch.float64)
    return x, v, z


def _t(val):
    return torch.full((B,), val, dtype=torch.float64)


@pytest.mark.parametrize("sigma,dt,a", [(0.6, -0.1, 0.7), (0.95, -0.05, 1.0), (0.2, -0.15, 0.3)])
def test_flow_grpo_step_matches_the_authors_formula(sigma, dt, a):
    x, v, z = _state()
    st = SAMPLERS.get("flow_sde").fn(x, v, "v", _t(sigma), _t(sigma + dt), FLOW, eta=a, noise=z)
    # flow_grpo sd3_sde_with_logprob.py, sde_type='sde', written out:
    std_dev_t = math.sqrt(sigma / (1 - sigma)) * a
    mean = x * (1 + std_dev_t**2 / (2 * sigma) * dt) + \
        v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    std = std_dev_t * math.sqrt(-dt)
    torch.testing.assert_close(st.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.std, _t(std), rtol=1e-12, atol=0)
    torch.testing.assert_close(st.x_next, mean + std * z, rtol=1e-12, atol=1e-12)
    # exact Gaussian log-density, summed over the 10 dimensions
    lp = (-(st.x_next - mean) ** 2 / (2 * std**2) - math.log(std)
          - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(st.log_prob(), lp, rtol=1e-10, atol=1e-10)


def test_flow_grpo_sigma_at_t_one_uses_the_next_time():
    x, v, z = _state(1)
    st = SAMPLERS.get("flow_sde").fn(x, v, "v", _t(1.0), _t(0.9), FLOW, eta=0.7, noise=z)
    # σ = 1: flow_grpo divides by 1 − sigma_max with sigma_max = sigmas[1] = 0.9
    sig = 0.7 * math.sqrt(1.0 / (1 - 0.9))
    torch.testing.assert_close(st.std, _t(sig * math.sqrt(0.1)), rtol=1e-12, atol=0)
    assert bool(torch.isfinite(st.mean).all())


@pytest.mark.parametrize("sigma,dt,a", [(0.6, -0.1, 0.7), (0.3, -0.2, 0.5)])
def test_cps_step_matches_the_authors_formula(sigma, dt, a):
    x, v, z = _state(2)
    prev = sigma + dt
    st = SAMPLERS.get("flow_cps").fn(x, v, "v", _t(sigma), _t(prev), FLOW, eta=a, noise=z)
    std = prev * math.sin(a * math.pi / 2)
    x0, x1 = x - sigma * v, x + v * (1 - sigma)
    mean = x0 * (1 - prev) + x1 * math.sqrt(prev**2 - std**2)
    torch.testing.assert_close(st.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.std, _t(std), rtol=1e-12, atol=0)
    # coefficients preserved: signal 1 − t', total noise variance (t'² − std²) + std² = t'²
    assert math.isclose((prev**2 - std**2) + std**2, prev**2)


@pytest.mark.parametrize("sigma,dt,eta", [(0.6, -0.1, 0.3), (0.9, -0.2, 1.0)])
def test_dance_step_matches_the_authors_formula_and_is_flow_grpo_with_constant_sigma(
        sigma, dt, eta):
    x, v, z = _state(3)
    st = SAMPLERS.get("dance_sde").fn(x, v, "v", _t(sigma), _t(sigma + dt), FLOW, eta=eta,
                                      noise=z)
    # DanceGRPO flux_step, written out
    x0 = x - sigma * v
    score = -(x - x0 * (1 - sigma)) / sigma**2
    mean = x + dt * v + (-0.5 * eta**2 * score) * dt
    torch.testing.assert_close(st.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.std, _t(eta * math.sqrt(-dt)), rtol=1e-12, atol=0)
    # = Flow-GRPO's drift v + σ_t²/(2σ)·ε̂ with σ_t ≡ η
    eps = x + (1 - sigma) * v
    torch.testing.assert_close(st.mean, x + dt * (v + eta**2 / (2 * sigma) * eps),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["flow_sde", "dance_sde"])
@pytest.mark.parametrize("kind", ["v", "eps", "x0"])
def test_noise_level_zero_is_the_euler_ode_bit_for_bit(name, kind):
    model = gaussian_velocity(0.5)
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def pred(x, t):  # the Gaussian's exact prediction of this kind, fp32
        from scorealign.sde.param import convert
        return convert(model(x, t), "v", kind, x, t.double(), FLOW).float()

    for grid in ("uniform", "sd3_shift"):
        ode = sample(pred, kind, FLOW, x_T, sampler="euler_ode", steps=7, grid=grid, record=True)
        sde = sample(pred, kind, FLOW, x_T, sampler=name, steps=7, eta=0.0, grid=grid,
                     record=True)
        assert torch.equal(sde.xs, ode.xs) and torch.equal(sde.x0, ode.x0)
        assert bool((sde.stds == 0).all())


def test_cps_at_zero_noise_level_is_the_euler_step():
    x, v, _ = _state(4)
    cps = SAMPLERS.get("flow_cps").fn(x, v, "v", _t(0.7), _t(0.55), FLOW, eta=0.0)
    ode = SAMPLERS.get("euler_ode").fn(x, v, "v", _t(0.7), _t(0.55), FLOW)
    torch.testing.assert_close(cps.mean, ode.mean, rtol=0, atol=1e-14)
    assert bool((cps.std == 0).all())


@pytest.mark.parametrize("name,eta", [("flow_sde", 0.7), ("dance_sde", 0.3), ("flow_sde", 0.0)])
def test_the_sde_keeps_the_marginals_of_the_flow(name, eta):
    """x_0 ~ N(0, c²): with the exact velocity the samplers end at variance c² as S grows
    (measured error at S = 50 / 200 / 800 for flow_sde a = 0.7: +0.40 / +0.016 / +0.001; the
    first steps near t = 1 carry σ_t = a·sqrt(t/(1 − t)) ≈ 22 when t_max = 0.999)."""
    c = 0.5
    x_T = torch.randn(1000, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = sample(gaussian_velocity(c), "v", FLOW, x_T, sampler=name, steps=400, eta=eta,
                 generator=torch.Generator().manual_seed(2))
    assert abs(out.x0.var().item() - c**2) < 0.008, out.x0.var().item()


def test_cps_is_not_marginal_preserving_with_a_posterior_mean_model():
    """CPS re-noises x̂_0 = E[x_0 | x_t] with a std that does not shrink with the step, so even
    with the exact velocity the variance stays short of c² as S grows (−0.081 / −0.073 / −0.069
    at S = 50 / 200 / 800, a = 0.7, c = 0.5): a property of the scheme, documented here."""
    c = 0.5
    x_T = torch.randn(1000, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = sample(gaussian_velocity(c), "v", FLOW, x_T, sampler="flow_cps", steps=50, eta=0.7,
                 generator=torch.Generator().manual_seed(2))
    assert out.x0.var().item() < 0.8 * c**2


def test_sd3_shift_grid():
    ts = make_grid(FLOW, 10, "sd3_shift")
    u = make_grid(FLOW, 10, "uniform")
    assert ts[0] == u[0] and ts[-1] == u[-1]
    torch.testing.assert_close(ts[1:-1], 3 * u[1:-1] / (1 + 2 * u[1:-1]), rtol=1e-15, atol=0)
    assert bool((ts[:-1] > ts[1:]).all()) and bool((ts >= u).all())
    assert torch.equal(time_shift(u, 1.0), u)


@pytest.mark.parametrize("name", ["flow_sde", "flow_cps", "dance_sde"])
def test_flow_steps_refuse_other_sdes(name):
    x, v, _ = _state()
    with pytest.raises(ValueError, match="flow"):
        SAMPLERS.get(name).fn(x, v, "eps", _t(0.5), _t(0.4), build_sde("vp"))
