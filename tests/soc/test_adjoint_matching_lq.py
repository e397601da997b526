"""Adjoint matching on the linear–quadratic problem, against the exact discrete optimal control.

Base: Gaussian data N(μ₀, Σ₀), exact denoiser, flow ``ddpm`` (memoryless) with S steps; reward
r(x) = −½(x − y)ᵀQ(x − y), λ = 0.5. Reference: the Riccati solution of tests/soc/lq.py.
"""

import pytest
import torch

from lq import F64, affine_steps, gaussian_tilt, riccati, terminal_law
from scorealign.rl.adjoint_matching import adjoint_matching_loss, sample_time_indices
from scorealign.samplers import make_grid
from scorealign.samplers.memoryless import base_step_mean
from scorealign.sde import FlowSDE, GaussianMixture
from scorealign.sde.soc import lean_adjoint

DATA = GaussianMixture.isotropic([1.0], [[0.5, -1.0]], 0.7)
Q = torch.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=F64)
Y = torch.tensor([1.0, 1.0], dtype=F64)
LAM = 0.5
SDE = FlowSDE()
STEPS = 10


def _problem(steps=STEPS, sampler="ddpm", eta=None):
    ts = make_grid(SDE, steps, t_max=1.0)
    A, c, s = affine_steps(DATA, SDE, ts, sampler, eta)
    return ts, A, c, s


def _rollout_and_adjoint(ts, A, c, s, K, h, n, g):
    """States [n, S+1, d] under w_k(x) = K_k x + h_k, and the lean adjoint along them."""
    x = torch.randn(n, 2, generator=g, dtype=F64)
    xs = [x]
    for k in range(len(ts) - 1):
        w = x @ K[k].T + h[k]
        x = x @ A[k].T + c[k] + s[k] * (w + torch.randn(n, 2, generator=g, dtype=F64))
        xs.append(x)
    xs = torch.stack(xs, 1)
    adj = lean_adjoint(xs, ts, _affine_mean(ts, A, c), -(xs[:, -1] - Y) @ Q, LAM)
    return xs, adj


def _affine_mean(ts, A, c):
    """The base step mean x ↦ A_k x + c_k (the probed ddpm map; test_lean_adjoint.py checks the
    lean adjoint through ``base_step_mean`` itself, this keeps the training loop cheap)."""
    index = {float(t): k for k, t in enumerate(ts[:-1])}
    return lambda x, t, tn: x @ A[index[float(t[0])]].T + c[index[float(t[0])]]


def test_affine_mean_is_base_step_mean():
    ts, A, c, _ = _problem(4)
    x = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    mean = base_step_mean(DATA.pred_fn(SDE, "x0"), "x0", SDE)
    for k in range(4):
        t, tn = ts[k].expand(8), ts[k + 1].expand(8)
        assert torch.allclose(_affine_mean(ts, A, c)(x, t, tn), mean(x, t, tn), atol=1e-12)


def _loss(xs, adj, s, K, h):
    """AM loss of the linear control: step k's control at x_k, paired with ã_{k+1}."""
    w = torch.einsum("bki,kji->bkj", xs[:, :-1], K) + h
    return adjoint_matching_loss(w, adj[:, 1:], s).loss


def test_exact_optimum_is_stationary():
    """∇L at the Riccati control is ~0 (MC noise), and large at a perturbed control."""
    ts, A, c, s = _problem()
    K_opt, h_opt = riccati(A, c, s, Q, Y, LAM)
    g = torch.Generator().manual_seed(0)
    norms = {}
    for name, dK in (("opt", 0.0), ("perturbed", 0.2)):
        K = (K_opt + dK).requires_grad_(True)
        h = h_opt.clone().requires_grad_(True)
        xs, adj = _rollout_and_adjoint(ts, A, c, s, K.detach(), h.detach(), 20000, g)
        gK, gh = torch.autograd.grad(_loss(xs, adj, s, K, h), (K, h))
        norms[name] = float(torch.cat([gK.flatten(), gh.flatten()]).norm())
    # measured: opt 2.4e-3, perturbed 1.2e-1
    assert norms["opt"] < 0.05 * norms["perturbed"], norms


def test_trained_linear_control_converges_to_riccati():
    """300 Adam steps on the AM loss (batch 256) reach the exact optimal control."""
    ts, A, c, s = _problem()
    K_opt, h_opt = riccati(A, c, s, Q, Y, LAM)
    K = torch.zeros_like(K_opt, requires_grad=True)
    h = torch.zeros_like(h_opt, requires_grad=True)
    opt = torch.optim.Adam([K, h], lr=0.05)
    g = torch.Generator().manual_seed(1)
    for it in range(300):
        lr = 0.05 if it < 200 else 0.01
        for grp in opt.param_groups:
            grp["lr"] = lr
        xs, adj = _rollout_and_adjoint(ts, A, c, s, K.detach(), h.detach(), 256, g)
        opt.zero_grad()
        _loss(xs, adj, s, K, h).backward()
        opt.step()
    err_K = float((K.detach() - K_opt).abs().max())
    err_h = float((h.detach() - h_opt).abs().max())
    # measured: max |K − K*| ≈ 0.02, max |h − h*| ≈ 0.02 (|h*| up to ~1.4)
    assert err_K < 0.08 and err_h < 0.08, (err_K, err_h)
    mu, cov = terminal_law(A, c, s, K.detach(), h.detach(), torch.zeros(2, dtype=F64),
                           torch.eye(2, dtype=F64))
    mu_o, cov_o = terminal_law(A, c, s, K_opt, h_opt, torch.zeros(2, dtype=F64),
                               torch.eye(2, dtype=F64))
    assert (mu - mu_o).norm() < 0.05 and (cov - cov_o).norm() < 0.05


def test_memoryless_reaches_tilt_non_memoryless_misses():
    """Exact optimum's terminal law vs p₀e^{r/λ}/Z: O(1/S) for ddpm, a floor for ddim η = 0.2.

    Measured ‖mean − tilt mean‖ (S = 25 / 100 / 400): ddpm 0.10 / 2.9e-2 / 7.8e-3 (cov 2.0e-2 /
    5.5e-3 / 1.6e-3); ddim η = 0.2: 0.70 / 0.55 / 0.46; the base law itself is off by 1.1e-3 in mean.
    """
    tilt_mu, tilt_cov = gaussian_tilt(DATA.mean(), DATA.cov(), Q, Y, LAM)
    err = {}
    for sampler, eta in (("ddpm", None), ("ddim", 0.2)):
        for steps in (25, 100):
            ts, A, c, s = _problem(steps, sampler, eta)
            K, h = riccati(A, c, s, Q, Y, LAM)
            mu, cov = terminal_law(A, c, s, K, h, torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
            err[sampler, steps] = float((mu - tilt_mu).norm()), float((cov - tilt_cov).norm())
    assert err["ddpm", 100][0] < 0.035 and err["ddpm", 100][1] < 0.007
    assert err["ddpm", 25][0] / err["ddpm", 100][0] > 3.0  # first order in 1/S
    assert err["ddim", 100][0] > 0.5 and err["ddim", 100][0] > 15 * err["ddpm", 100][0]


def test_sample_time_indices_authors_split():
    g = torch.Generator().manual_seed(0)
    idx = sample_time_indices(50, 10, g)
    assert idx.tolist() == sorted(set(idx.tolist())) and len(idx) == 10
    assert int((idx < 30).sum()) == 5
    assert sample_time_indices(8, 10, g).tolist() == list(range(8))
