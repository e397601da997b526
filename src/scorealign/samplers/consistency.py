"""One-step and multistep consistency sampling as a registered sampler step  [Song+23, Alg. 1].

Step i of the loop evaluates the consistency function at (x_i, t_i) and re-noises its output to
the next grid time with the forward transition from t_min:

    f = f_θ(x_i, t_i) ≈ x_{t_min},   x_{i+1} = r f + std · z,   r = m(t_{i+1}) / m(t_min),
    std² = s(t_{i+1})² − r² s(t_min)² + η² r² s(t_min)²,

which for the VE SDE (r = 1, s = σ) is Song+23 Alg. 1, x ← x + sqrt(τ² − ε²) z, at η = 0.
With ``steps=1`` the loop is one-step generation x = f(x_T, T); with S steps it is S-step
consistency sampling on the chosen grid (S network calls). Every step is Gaussian given x_i,
so ``GaussianStep.mean``/``std`` give exact log-probabilities and a Policy over this sampler is
an RL policy. η = 0 (default, the paper's sampler) makes the last step (to t_min)
deterministic; η = 1 re-noises from the x̂_0 estimate f/m_min with the full marginal std
s(t_{i+1}) — then the last step adds s(t_min) noise and every step has a density (use η = 1 for
RL fine-tuning, where every step is an action).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorealign.samplers.kernel import GaussianStep
from scorealign.samplers.steps import SAMPLERS, PredFn, _finish, _times
from scorealign.sde.base import SDE, bcast
from scorealign.sde.consistency import consistency_fn


@SAMPLERS.register("consistency", paper="Song+23 (Consistency Models), arXiv:2303.01469",
                   equation="Alg. 1 (multistep consistency sampling)",
                   properties=frozenset({"stochastic", "consistency"}))
def consistency_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
                     eta: float = 0.0, noise: Tensor | None = None,
                     pred_fn: PredFn | None = None) -> GaussianStep:
    r"""Denoise with the consistency function, re-noise to ``t_next``  [Song+23, Alg. 1].

    ``pred`` is the network's ``kind`` prediction at (x, t); f = c_x x + c_D x̂_0
    (``sde.consistency``). Kernel N(r f, std² I) with r = m(t')/m(t_min) and
    std² = s(t')² − (1 − η²) r² s(t_min)² (module docstring).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"consistency sampling takes eta in [0, 1], got {eta}")
    t, tn = _times(x, t, t_next)
    f = consistency_fn(pred, kind, x, t, sde)
    t_min = torch.full_like(tn, sde.t_min)
    m0, mn = sde.marginal(t_min), sde.marginal(tn)
    r = mn.mean_coef / m0.mean_coef
    var = (mn.std**2 - (1.0 - eta**2) * (r * m0.std) ** 2).clamp_min(0.0)
    var = torch.where(tn == t_min, eta**2 * m0.std**2, var)  # exact 0 at t_min for η = 0
    return _finish(x, bcast(r, x) * f, var.sqrt(), noise)
