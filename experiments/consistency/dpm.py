"""DPM-Solver++(2M), the teacher's multistep baseline of Part A (the library registers one-step
samplers only; this one keeps the previous step's data prediction, so it lives here).

Lu+22b, "DPM-Solver++", arXiv:2211.01095, Alg. 2 (multistep second order, data prediction),
for a linear SDE x_t = m(t) x_0 + s(t) ε with λ = log(m/s) and h_i = λ_{t_i} − λ_{t_{i−1}}:

    x_{t_i} = (s_i/s_{i−1}) x_{t_{i−1}} − m_i (e^{−h_i} − 1) D_i,
    D_1 = x̂_0(t_0),  D_i = (1 + 1/(2 r_i)) x̂_0(t_{i−1}) − 1/(2 r_i) x̂_0(t_{i−2}),
    r_i = h_{i−1}/h_i.

One network call per step (NFE = S). The first step is first order (= DDIM η = 0); as in
diffusers' ``DPMSolverMultistepScheduler`` (``lower_order_final=True`` for fewer than 15 steps)
the last step is first order too. Grid: uniform in λ (Lu+22, arXiv:2206.00927, §3.4; the
library's ``logsnr`` grid).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorealign.samplers.grids import make_grid
from scorealign.samplers.steps import model_times
from scorealign.sde.param import to_x0


def dpm_solver_pp_2m(pred_fn, kind: str, sde, x_T: Tensor, steps: int, grid: str = "logsnr",
                     lower_order_final: bool = True) -> Tensor:
    """Integrate the PF-ODE from x_T at T to t_min with DPM-Solver++(2M); returns x at t_min.

    ``pred_fn(x, t)`` returns the model's ``kind`` prediction (guidance closed over)."""
    ts = make_grid(sde, steps, grid)
    mts = model_times(ts, x_T)
    mg = sde.marginal(ts)
    m, s = mg.mean_coef, mg.std
    lam = torch.log(m / s)
    x = x_T.to(torch.float64)
    prev, h_prev = None, None
    for i in range(steps):
        d = to_x0(pred_fn(x.to(x_T.dtype), mts[i]), kind, x, ts[i].expand(x.shape[0]), sde)
        h = lam[i + 1] - lam[i]
        last = i == steps - 1 and lower_order_final and steps < 15
        if prev is None or last:
            D = d
        else:
            r = h_prev / h
            D = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * prev
        x = (s[i + 1] / s[i]) * x - m[i + 1] * torch.expm1(-h) * D
        prev, h_prev = d, h
    return x.to(x_T.dtype)
