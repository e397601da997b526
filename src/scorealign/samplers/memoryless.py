r"""Memoryless sampler settings and the base model's differentiable step map (for the lean adjoint).

A generative SDE is *memoryless* when its start X_T (noise) and its end X_{t_min} (data) are
independent [Domingo-Enrich+25, arXiv:2409.08861, Definition 1; schedules characterized by
Prop. 1, the fine-tuning recipe is Thm. 1, §4.3]: only then is the optimum of KL-regularized
reward fine-tuning the tilt p_base e^{r/λ}/Z (otherwise the value function at the start biases
it: p*(X_0, X_1) ∝ p_base(X_0, X_1) e^{r(X_1)/λ + V(X_0, 0)}, the initial value function bias of
§4.2). Numbers as quoted by third-party readings and the authors' README (Prop. 1, Thm. 1); not
checked against the PDF (docs/methods/adjoint_matching.md).

For the linear SDEs of this package the reverse SDE (η = 1) run from full noise is memoryless:
its joint law of (X_0, X_T) is that of the forward process, Cov(X_0, X_T) = m(T) Cov(X_0), which
vanishes iff m(T) = 0.

* diffusion (VP): DDPM, i.e. ``sampler="ddpm"`` (DDIM η = 1), from t = T. m(T) = e^{−B(T)/2} ≈ 6.6e-3
  for β ∈ [0.1, 20] — memoryless up to that ratio. "Any DDIM schedule with η ≥ 1 is memoryless
  by Prop. 1 …, and setting η = 1 yields the distinguished memoryless schedule in Thm. 1"
  (microsoft/soc-fine-tuning-sd README.md:89); the authors run SD 1.5 that way
  (``configs/multi_prompt.yaml:16`` ``eta: 1.0``, passed to ``SOCDDIMScheduler.step``,
  ``src/SOC_DDIM_scheduler.py:233``).
* flow (rectified flow): ``ddpm`` on ``FlowSDE`` from t = 1 — the exact-Gaussian step of the SDE with
  the paper's σ(τ) = sqrt(2(1 − τ)/τ) (``sde.soc.flow_memoryless_sigma``). At t = 1, m = 0 and the
  first step's mean m(t') x̂_0 does not depend on x_T at all: memoryless in discrete time too. Needs
  an ``x0`` or ``v`` prediction at t = 1 (``FlowSDE`` docstring).
* VE never reaches full noise (m ≡ 1): not memoryless; :func:`memoryless_settings` refuses it.

Non-memoryless references for tests: ``ddim`` with η < 1, ``euler_ode``/``heun_ode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from scorealign.samplers.steps import SAMPLERS, model_time
from scorealign.sde.base import SDE, as_time
from scorealign.sde.soc import StepMean

PredFn = Callable[[Tensor, Tensor], Tensor]

#: Largest signal-to-noise ratio m(T)/s(T) at the start accepted as memoryless by default.
MEMORY_TOL = 1e-2


@dataclass(frozen=True)
class MemorylessSettings:
    """Sampler options that make a policy's rollout memoryless (pass them to ``samplers.sample``).

    Attributes:
        sampler: a name in ``SAMPLERS`` ("ddpm").
        eta: its η (1.0).
        t_max: the start time (``sde.T``: full noise).
        memory: m(T)/s(T), the residual signal-to-noise ratio at the start (0 for flow).
    """

    sampler: str
    eta: float
    t_max: float
    memory: float


def memory(sde: SDE, t_max: float | None = None) -> float:
    """m(t_max)/s(t_max): Corr(X_0, X_T) ≈ memory · std(X_0) for the η = 1 reverse SDE."""
    t = as_time(sde.T if t_max is None else t_max).reshape(1)
    mg = sde.marginal(t)
    return float(mg.mean_coef / mg.std)


def memoryless_settings(sde: SDE, tol: float = MEMORY_TOL) -> MemorylessSettings:
    """The memoryless sampler for ``sde``: DDPM (DDIM η = 1) from t = T.

    Raises:
        ValueError: when m(T)/s(T) > ``tol`` (VE, or a VP truncated before full noise): no
            η = 1 schedule on that SDE is memoryless.
    """
    mem = memory(sde)
    if mem > tol:
        raise ValueError(f"{type(sde).__name__} keeps signal at t=T (m/s = {mem:.3g} > {tol}); "
                         f"it has no memoryless schedule (use 'vp' or 'flow' to full noise)")
    return MemorylessSettings(sampler="ddpm", eta=1.0, t_max=float(sde.T), memory=mem)


def base_step_mean(pred_fn: PredFn, kind: str, sde: SDE, sampler: str = "ddpm",
                   eta: float = 1.0) -> StepMean:
    r"""The base model's step mean μ_base(x, t, t') of a registered sampler, differentiable in x.

    μ_base is the ``sampler`` step with noise = 0 (the authors' ``grad_inner_product`` calls
    ``scheduler.step(..., variance_noise=zeros)``, microsoft/soc-fine-tuning-sd
    ``am_trainer.py:83–93``), with the base prediction ``pred_fn(x, t)`` taken
    inside, so that ∂μ_base/∂x includes the model's Jacobian. For ``sde.soc.lean_adjoint``.
    """
    step = SAMPLERS.get(sampler).fn
    kw = {} if sampler == "ddpm" else {"eta": eta}

    def step_mean(x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        pred = pred_fn(x, model_time(t, x))
        return step(x, pred, kind, t, t_next, sde, noise=None, **kw).mean

    return step_mean


def cross_covariance(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Sample cross-covariance Cov(a, b) [D, D] of a, b [N, D] and its Monte-Carlo standard error.

    The standard error of each entry is std((a_i − ā_i)(b_j − b̄_j))/sqrt(N) (float64).
    """
    a = a.to(torch.float64) - a.to(torch.float64).mean(0)
    b = b.to(torch.float64) - b.to(torch.float64).mean(0)
    prod = a[:, :, None] * b[:, None, :]
    return prod.mean(0), prod.std(0) / prod.shape[0] ** 0.5


def decorrelation_z(a: Tensor, b: Tensor, generator: torch.Generator, perms: int = 32
                    ) -> tuple[float, float]:
    r"""Permutation z-score of ‖Ĉov(a, b)‖²_F: how far the ends' cross-covariance is above chance.

    a [N, Da], b [N, Db] (flattened per row): the statistic ‖Ĉov(a, b)‖²_F is compared with its
    values after ``perms`` random re-pairings of the rows (which make a and b independent with
    the same marginals). Returns (z, ‖Ĉov‖²_F) with z = (stat − mean_perm)/sd_perm; |z| ≲ 3 when
    a ⟂ b, large when the sampler has memory. For high-dimensional ends (images, latents) where
    entrywise standard errors (:func:`cross_covariance`) are too many to test one by one.
    """
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    a, b = a - a.mean(0), b - b.mean(0)
    n = a.shape[0]

    def stat(bb: Tensor) -> float:
        return float(((a.T @ bb) / n).pow(2).sum())

    obs = stat(b)
    null = torch.tensor([stat(b[torch.randperm(n, generator=generator)]) for _ in range(perms)])
    return (obs - float(null.mean())) / float(null.std()), obs
