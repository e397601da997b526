"""experiments/consistency/dpm.py: DPM-Solver++(2M) against the exact PF-ODE flow of Gaussian
data (Lu+22b, arXiv:2211.01095, Alg. 2): its first step is DDIM η = 0, and it converges at
second order where DDIM converges at first."""

from __future__ import annotations

import pytest
import torch

from scorealign.samplers import sample
from scorealign.sde import VPSDE

from experiment_modules import load

MU, V = 0.3, 0.25  # data N(MU, V I)


def _dpm():
    return load("consistency_dpm", "consistency/dpm.py", rerun=True)


def _x0_hat(sde):
    """E[x_0 | x_t] of N(MU, V I) data: MU + m V/(m² V + s²) (x − m MU)."""
    def fn(x, t):
        mg = sde.marginal(t.to(torch.float64))
        m, s = mg.mean_coef[:, None], mg.std[:, None]
        return MU + m * V / (m**2 * V + s**2) * (x - m * MU)
    return fn


def _exact(sde, x_T):
    """The PF-ODE flow of Gaussian data is affine: x_t − m_t MU = (σ_t/σ_T)(x_T − m_T MU),
    σ_t² = m_t² V + s_t² (the marginal's std)."""
    T, tmin = torch.tensor([sde.T], dtype=torch.float64), torch.tensor([sde.t_min],
                                                                        dtype=torch.float64)
    a, b = sde.marginal(T), sde.marginal(tmin)
    sd = lambda mg: torch.sqrt(mg.mean_coef**2 * V + mg.std**2)  # noqa: E731
    return b.mean_coef * MU + sd(b) / sd(a) * (x_T - a.mean_coef * MU)


def _x_T(sde, n=64):
    g = torch.Generator().manual_seed(0)
    return sde.prior_sample((n, 2), g).to(torch.float64)


def test_one_step_is_ddim():
    dpm, sde = _dpm(), VPSDE()
    x_T = _x_T(sde)
    got = dpm.dpm_solver_pp_2m(_x0_hat(sde), "x0", sde, x_T, 1)
    ref = sample(_x0_hat(sde), "x0", sde, x_T, sampler="ddim", steps=1, eta=0.0,
                 grid="logsnr").x0
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)


def test_second_order_convergence_where_ddim_is_first():
    dpm, sde = _dpm(), VPSDE()
    x_T = _x_T(sde)
    exact = _exact(sde, x_T)

    def err(fn, s):
        return float((fn(s) - exact).abs().max())

    run_dpm = lambda s: dpm.dpm_solver_pp_2m(_x0_hat(sde), "x0", sde, x_T, s,  # noqa: E731
                                             lower_order_final=False)
    run_ddim = lambda s: sample(_x0_hat(sde), "x0", sde, x_T, sampler="ddim",  # noqa: E731
                                steps=s, eta=0.0, grid="logsnr").x0
    e_dpm = [err(run_dpm, s) for s in (32, 64, 128)]
    e_ddim = [err(run_ddim, s) for s in (32, 64, 128)]
    # halving h divides a p-th order method's global error by ≈ 2^p (asymptotically: at 8-16
    # steps on this grid DPM++ is not yet in its asymptotic regime)
    for a, b in zip(e_dpm, e_dpm[1:]):
        assert a / b > 3.5
    for a, b in zip(e_ddim, e_ddim[1:]):
        assert 1.8 < a / b < 2.2
    assert e_dpm[-1] < e_ddim[-1] / 10


@pytest.mark.parametrize("final", [True, False])
def test_lower_order_final_changes_only_the_last_step(final):
    dpm, sde = _dpm(), VPSDE()
    x_T = _x_T(sde)
    a = dpm.dpm_solver_pp_2m(_x0_hat(sde), "x0", sde, x_T, 2, lower_order_final=final)
    ddim = sample(_x0_hat(sde), "x0", sde, x_T, sampler="ddim", steps=2, eta=0.0,
                  grid="logsnr").x0
    # two steps with a first-order last step are two DDIM steps; without it they are not
    assert torch.allclose(a, ddim, rtol=0, atol=1e-12) == final
