"""Memoryless schedules: X_0 ⟂ X_T under the base model (exact mixture score), and the σ(t) identities.

Measured (N = 8000, 2-D two-component mixture, 25 steps): the largest |Cov(X_0, X_T)| entry is
within 4 Monte-Carlo standard errors for ddpm on VP and flow (measured 1.75 and 2.72 s.e.; |Cov| ≤ 0.022),
and ≥ 20 standard errors for the
non-memoryless references (ddim η = 0, euler_ode: measured 69 s.e., |Cov| ≈ 1.1).
"""

import pytest
import torch

from scorealign.rl.adjoint_matching import control_from_scores, control_from_velocities
from scorealign.samplers import sample
from scorealign.samplers.memoryless import cross_covariance, memory, memoryless_settings
from scorealign.sde import FlowSDE, GaussianMixture, VESDE, VPSDE
from scorealign.sde.soc import (flow_memoryless_drift, flow_memoryless_sigma,
                                flow_score_from_velocity)

MIX = GaussianMixture.isotropic([0.3, 0.7], [[-1.5, 0.5], [1.0, -0.5]], 0.5)


def _ends(sde, sampler, eta, kind="x0", n=8000, steps=25):
    g = torch.Generator().manual_seed(0)
    t_max = sde.T if sampler == "ddpm" or isinstance(sde, VPSDE) else sde.t_max
    if sampler in ("ddpm", "ddim") and isinstance(sde, FlowSDE):
        t_max = 1.0
    from scorealign.samplers import make_grid
    ts = make_grid(sde, steps, t_max=t_max)
    x_T = sde.prior_sample((n, 2), g, torch.float64)
    res = sample(MIX.pred_fn(sde, kind), kind, sde, x_T, sampler=sampler, steps=steps, eta=eta,
                 grid=ts, generator=g)
    return res.x0, x_T


@pytest.mark.parametrize("sde", [VPSDE(), FlowSDE()], ids=["vp", "flow"])
def test_memoryless_schedule_decorrelates(sde):
    st = memoryless_settings(sde)
    x0, xT = _ends(sde, st.sampler, st.eta)
    cov, se = cross_covariance(x0, xT)
    z = (cov.abs() / se).max()
    assert z < 4.0, (cov, se)
    # the sample is the data law (sampler floor): mean within 0.05
    assert torch.allclose(x0.mean(0), MIX.mean(), atol=0.05)


@pytest.mark.parametrize("sde,sampler", [(VPSDE(), "ddim"), (FlowSDE(), "ddim"),
                                         (FlowSDE(), "euler_ode")], ids=["vp-ddim0", "flow-ddim0",
                                                                         "flow-ode"])
def test_non_memoryless_schedule_correlates(sde, sampler):
    x0, xT = _ends(sde, sampler, 0.0 if sampler == "ddim" else None)
    cov, se = cross_covariance(x0, xT)
    assert (cov.abs() / se).max() > 20.0


def test_memoryless_settings_refuses_ve():
    assert memory(FlowSDE()) == 0.0
    assert memory(VPSDE()) < 7e-3
    with pytest.raises(ValueError, match="no memoryless"):
        memoryless_settings(VESDE())


def test_flow_sigma_is_forward_diffusion():
    """Paper σ(τ) = sqrt(2(1 − τ)/τ) equals g(t) of FlowSDE at t = 1 − τ."""
    tau = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    assert torch.allclose(flow_memoryless_sigma(tau), FlowSDE().diffusion(1.0 - tau), rtol=1e-14)


def test_flow_memoryless_drift_is_reverse_sde():
    """b(x, τ) = v + σ²/2 ∇log p (paper time) equals −(η = 1 reverse drift) in our time."""
    sde, g = FlowSDE(), torch.Generator().manual_seed(1)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        tt = torch.full((64,), t, dtype=torch.float64)
        v = MIX.pred_fn(sde, "v")(x, tt)
        score = MIX.score(x, tt, sde)
        assert torch.allclose(flow_score_from_velocity(x, v, tt), score, atol=1e-12)
        b = flow_memoryless_drift(x, -v, 1.0 - tt)
        assert torch.allclose(b, -sde.reverse_drift(x, tt, score, eta=1.0), atol=1e-10)


def test_velocity_control():
    """control_from_velocities = control_from_scores with scores converted from velocities."""
    sde, g = FlowSDE(), torch.Generator().manual_seed(2)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64)
    tt = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    v0 = torch.randn(32, 2, generator=g, dtype=torch.float64)
    v1 = v0 + torch.randn(32, 2, generator=g, dtype=torch.float64)
    u_v = control_from_velocities(v1, v0, tt)
    u_s = control_from_scores(flow_score_from_velocity(x, v1, tt), flow_score_from_velocity(x, v0, tt),
                              tt, sde)
    assert torch.allclose(u_v, u_s, atol=1e-12)
