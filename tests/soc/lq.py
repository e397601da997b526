"""Linear–quadratic (LQ) reference for adjoint-matching tests: exact discrete optimal control.

Base: Gaussian data N(μ₀, Σ₀) sampled by a registered step with the exact (affine) denoiser, so each
step is x_{k+1} = A_k x_k + c_k + σ_k (w_k + z_k) with w_k the control in noise units
(w = sqrt(δ) u). Cost Σ_k ½‖w_k‖² − r(x_S)/λ with r(x) = −½ (x − y)ᵀ Q (x − y).

Riccati recursion (V_k(x) = ½ xᵀ P_k x − q_kᵀ x + const, V_S = −r/λ):
    M = (I + σ² P_{k+1})⁻¹,  w*_k(x) = σ M (q_{k+1} − P_{k+1}(A_k x + c_k)) = K_k x + h_k,
    P_k = A_kᵀ P_{k+1} M A_k,  q_k = A_kᵀ (M q_{k+1} − P_{k+1} M c_k).
(minimize ½‖w‖² + E V_{k+1}(m + σ w + σ z) over w; M commutes with P, so P M is symmetric.)
"""

from __future__ import annotations

import torch

from scorealign.samplers import SAMPLERS
from scorealign.samplers.memoryless import base_step_mean

F64 = torch.float64


def affine_steps(data, sde, ts, sampler, eta=None):
    """(A [S, d, d], c [S, d], σ [S]) of the base steps, probed exactly (the map is affine)."""
    kw = {} if eta is None else {"eta": eta}
    mean = base_step_mean(data.pred_fn(sde, "x0"), "x0", sde, sampler, **kw)
    d = data.dim
    probes = torch.cat([torch.zeros(1, d, dtype=F64), torch.eye(d, dtype=F64)])
    A, c, s = [], [], []
    step = SAMPLERS.get(sampler).fn
    for k in range(len(ts) - 1):
        t, tn = ts[k].expand(d + 1), ts[k + 1].expand(d + 1)
        with torch.no_grad():
            m = mean(probes, t, tn)
            st = step(probes, data.pred_fn(sde, "x0")(probes, t), "x0", t, tn, sde, noise=None, **kw)
        c.append(m[0])
        A.append((m[1:] - m[0]).T)
        s.append(st.std[0].to(F64))
    return torch.stack(A), torch.stack(c), torch.stack(s)


def riccati(A, c, s, Q, y, lam):
    """Exact optimal control w*_k(x) = K_k x + h_k: (K [S, d, d], h [S, d])."""
    S, d = c.shape
    eye = torch.eye(d, dtype=F64)
    P, q = Q / lam, Q @ y / lam
    K, h = torch.zeros(S, d, d, dtype=F64), torch.zeros(S, d, dtype=F64)
    for k in range(S - 1, -1, -1):
        M = torch.linalg.inv(eye + s[k] ** 2 * P)
        K[k] = -s[k] * M @ P @ A[k]
        h[k] = s[k] * M @ (q - P @ c[k])
        P, q = A[k].T @ P @ M @ A[k], A[k].T @ (M @ q - P @ M @ c[k])
    return K, h


def terminal_law(A, c, s, K, h, mean0, cov0):
    """Mean and covariance of x_S under the control (K, h) from x_0 ~ N(mean0, cov0)."""
    mu, cov = mean0.clone(), cov0.clone()
    for k in range(c.shape[0]):
        Ak = A[k] + s[k] * K[k]
        mu = Ak @ mu + c[k] + s[k] * h[k]
        cov = Ak @ cov @ Ak.T + s[k] ** 2 * torch.eye(len(mu), dtype=F64)
    return mu, cov


def gaussian_tilt(mean, cov, Q, y, lam):
    """N(mean, cov) · e^{r/λ} / Z with r = −½(x − y)ᵀQ(x − y): a Gaussian (mean', cov')."""
    prec = torch.linalg.inv(cov) + Q / lam
    cov_t = torch.linalg.inv(prec)
    return cov_t @ (torch.linalg.solve(cov, mean) + Q @ y / lam), cov_t
