"""Consistency functions f_θ(x_t, t) ≈ x_{t_min} on any registered SDE; f(x, t_min) = x exactly.

A consistency function maps every point of a probability-flow ODE trajectory to the trajectory's
point at t_min [Song+23, arXiv:2303.01469, Def. §3]. Song+23 build the boundary condition into the
network by skip and output scalings [§3, Eq. 5; App. C], written for the VE SDE with σ = t:

    f_θ(x, σ) = c_skip(σ) x + c_out(σ) F_θ(x, σ),
    c_skip(σ) = σ_d² / ((σ − σ_min)² + σ_d²),   c_out(σ) = σ_d (σ − σ_min) / sqrt(σ_d² + σ²),

with σ_d = 0.5 (openai/consistency_models ``cm/karras_diffusion.py``, ``sigma_data=0.5``) and
F_θ the EDM-preconditioned network, i.e. F_θ = (D_θ − c_skip^E x)/c_out^E for the EDM denoiser
D_θ with c_skip^E = σ_d²/(σ² + σ_d²), c_out^E = σ σ_d / sqrt(σ² + σ_d²) [Karras+22, Tab. 1].

Here the network is any of the project's networks, of any prediction kind (eps, x0, score, v);
``param.to_x0`` turns its prediction into the denoiser D_θ = x̂_0. Substituting F_θ gives Song's
f as an affine function of x and D_θ:

    f = c_skip y + c_out F = [c_skip − b c_skip^E] y + b D_θ,   b = c_out / c_out^E = (σ − σ_min)/σ,

exactly the paper's parameterization when the network is EDM's. Any linear SDE x_t = m x_0 + s ε
is the VE SDE of y = x_t / m(t) with σ = s/m (``SDE.nsr``); mapping back to x_{t_min} = m_min y:

    f(x, t) = c_x(t) x + c_D(t) D_θ(x, t),
    c_x = (m_min / m(t)) (c_skip − b c_skip^E),   c_D = m_min b.

At t = t_min: σ − σ_min = 0, so b = 0, c_skip = 1 and m_min/m = 1, all exactly in floating
point; hence f(x, t_min) = 1·x + 0·D = x bit for bit, for every family (VE, VP, sub-VP, the
contractive ones, discrete VP and rectified flow). Coefficients are float64.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from scorealign.sde.base import SDE, as_time, bcast
from scorealign.sde.param import to_x0

#: σ_d of the skip/out scalings: openai/consistency_models ``KarrasDenoiser(sigma_data=0.5)``
#: (data in [-1, 1]); the project's digits live in [-1, 1] too.
SIGMA_DATA = 0.5


def consistency_coefs(t: Tensor, sde: SDE, sigma_data: float = SIGMA_DATA
                      ) -> tuple[Tensor, Tensor]:
    """(c_x, c_D) with f = c_x x + c_D D_θ at times ``t`` (float64, shape of t).

    See the module docstring: Song+23 App. C scalings in the VE variable y = x/m, σ = s/m,
    with F_θ expressed through the denoiser D_θ. c_x(t_min) = 1 and c_D(t_min) = 0 exactly.
    """
    t = as_time(t)
    t_min = torch.full_like(t, sde.t_min)
    mg, mg0 = sde.marginal(t), sde.marginal(t_min)
    sigma, sigma_min = mg.std / mg.mean_coef, mg0.std / mg0.mean_coef
    d2 = sigma_data**2
    gap = sigma - sigma_min
    c_skip = d2 / (gap**2 + d2)                      # Song+23 App. C
    c_skip_edm = d2 / (sigma**2 + d2)                # Karras+22 Tab. 1
    b = torch.where(gap == 0, torch.zeros_like(gap), gap / sigma)  # c_out / c_out^E
    c_x = (mg0.mean_coef / mg.mean_coef) * (c_skip - b * c_skip_edm)
    return c_x, mg0.mean_coef * b


def consistency_fn(pred: Tensor, kind: str, x: Tensor, t: Tensor, sde: SDE,
                   sigma_data: float = SIGMA_DATA) -> Tensor:
    """f(x, t) = c_x(t) x + c_D(t) x̂_0(pred) in float64 [B, *D]  [Song+23, Eq. 5, App. C].

    Args:
        pred: the network's ``kind`` prediction at (x, t).
        kind: "eps", "x0", "score" or "v".
        x: the state x_t [B, *D].
        t: times [B] (or a scalar).
        sde: the forward SDE.
    """
    t = as_time(t, x).to(x.device)
    c_x, c_d = consistency_coefs(t, sde, sigma_data)
    x64 = x.to(torch.float64)
    # At t_min, c_D = 0 must not multiply a non-finite x̂_0 into NaN (0·inf): mask it.
    d = torch.where(bcast(c_d, x) == 0, torch.zeros_like(x64),
                    to_x0(pred.to(torch.float64), kind, x64, t, sde))
    return bcast(c_x, x) * x64 + bcast(c_d, x) * d


class ConsistencyFunction(nn.Module):
    """A project network wrapped as f_θ(x, t, cond) = c_x x + c_D x̂_0(model(x, t, cond)).

    The output has the dtype of x; f(x, t_min, ·) returns x unchanged. Gradients flow to the
    wrapped model's parameters.
    """

    def __init__(self, model: nn.Module, sde: SDE, kind: str | None = None,
                 sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.model, self.sde = model, sde
        self.kind = kind or model.kind
        self.sigma_data = sigma_data

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """f_θ(x, t); ``t`` [B] float64 (the network sees it in fp32, as samplers pass it)."""
        t = as_time(t, x).to(x.device)
        pred = self.model(x, t.to(torch.promote_types(x.dtype, torch.float32)), cond)
        return consistency_fn(pred, self.kind, x, t, self.sde, self.sigma_data).to(x.dtype)


def consistency_pred_fn(pred_fn: Callable[[Tensor, Tensor], Tensor], kind: str, sde: SDE
                        ) -> Callable[[Tensor, Tensor], Tensor]:
    """``f(x, t)`` (dtype of x) from a sampler-style ``pred_fn(x, t)`` of ``kind``."""
    return lambda x, t: consistency_fn(pred_fn(x, t), kind, x, t, sde).to(x.dtype)
