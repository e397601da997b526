r"""Flow-matching SDE samplers with exact Gaussian kernels: Flow-GRPO, CPS, DanceGRPO, SD3 shift.

All steps act on the linear interpolant x_t = (1 − t) x_0 + t ε of ``sde.flow.FlowSDE`` (data at
t = 0, noise at t = 1). Its time is the flow-matching σ of diffusers' ``FlowMatchEulerDiscrete-
Scheduler`` and of the authors' code (our t = their σ), and our velocity v = dx_t/dt = ε − x_0 is
the SD3/FLUX transformer's output, so the formulas below are theirs symbol for symbol. With
v̂ the model's velocity (any prediction kind, converted by ``pf_ode_velocity``) the estimates are

    x̂_0 = x − t v̂  (predicted data),   x̂_1 = ε̂ = x + (1 − t) v̂  (predicted noise),
    ∇log p_t(x) = −ε̂ / t.

Each step has the common signature of ``samplers.steps`` (its ``eta`` is the noise level a or η)
and returns a :class:`~scorealign.samplers.kernel.GaussianStep`, so the Policy computes exact
per-step log-probabilities (summed over dimensions; the authors average them over dimensions, see
``kernel.gaussian_log_prob(reduce=…)``). Each is registered with the property
``stochastic_if_eta``: at ``eta = 0`` it is deterministic, which is how ``policy.action_steps``
(issue 10) makes the non-action steps of a mixed ODE/SDE trajectory (MixGRPO windows,
Flow-GRPO-Fast branching): the same function at η = 0. ``flow_sde`` and ``dance_sde`` at η = 0
return exactly the bits of ``euler_ode``. All three steps are affine in (x, pred) and take the
one-time fast path of ``samplers.steps`` (same coefficients, read off the general path), where
the η = 0 coefficients are those of ``euler_ode`` exactly, so the bit-for-bit identity holds on
both paths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorealign.samplers.grids import GRIDS, uniform_grid
from scorealign.samplers.kernel import GaussianStep
from scorealign.samplers.steps import (SAMPLERS, PredFn, _fast_step, _finish, _times,
                                       pf_ode_velocity)
from scorealign.sde.base import SDE, bcast
from scorealign.sde.flow import FlowSDE

_F64 = torch.float64
# Flow-GRPO's default noise level a (yifan123/flow_grpo config/grpo.py: sample.noise_level = 0.7).
FLOW_GRPO_NOISE_LEVEL = 0.7
# DanceGRPO's η (XueZeyue/DanceGRPO scripts/finetune/finetune_flux_grpo.sh: --eta 0.3).
DANCE_GRPO_ETA = 0.3
# SD3.5's FlowMatchEulerDiscreteScheduler shift (scheduler_config.json "shift": 3.0; DanceGRPO
# --shift 3).
SD3_SHIFT = 3.0


def _check_flow(sde: SDE, name: str) -> None:
    if not isinstance(sde, FlowSDE):
        raise ValueError(f"{name} is a step of the linear interpolant (sde 'flow'); got "
                         f"{type(sde).__name__}")


def _velocity_and_noise(x: Tensor, pred: Tensor, kind: str, t: Tensor, sde: SDE
                        ) -> tuple[Tensor, Tensor]:
    """(v̂, ε̂ = x + (1 − t) v̂) in float64; v̂ is exactly ``euler_ode``'s velocity."""
    v = pf_ode_velocity(x, pred, kind, t, sde)
    return v, x.to(_F64) + bcast(1.0 - t, x) * v


def flow_grpo_sigma(t: Tensor, t_next: Tensor, a: float) -> Tensor:
    r"""σ_t = a · sqrt(t / (1 − t)) with t = 1 replaced by t_next in the denominator, float64.

    yifan123/flow_grpo ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py``:
    ``std_dev_t = sqrt(sigma / (1 - where(sigma == 1, sigma_max, sigma))) * noise_level`` with
    ``sigma_max = sigmas[1]``, the grid's second time (t_next of the first step).
    """
    t, t_next = t.to(_F64), t_next.to(_F64)
    return a * (t / (1.0 - torch.where(t == 1.0, t_next, t))).sqrt()


@SAMPLERS.register("flow_sde", paper="Liu+25 (Flow-GRPO), arXiv:2505.05470",
                   equation="Eq. 9-12 (ODE-to-SDE); yifan123/flow_grpo sd3_sde_with_logprob.py "
                            "sde_type='sde'",
                   properties=frozenset({"stochastic_if_eta", "flow_only"}))
def flow_sde_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
                  eta: float = FLOW_GRPO_NOISE_LEVEL, noise: Tensor | None = None,
                  pred_fn: PredFn | None = None) -> GaussianStep:
    r"""Flow-GRPO's marginal-preserving SDE, Euler–Maruyama, with noise level a = ``eta``.

    The reverse SDE dx = [v − ½σ_t² ∇log p_t] dt + σ_t dW has the marginals of the flow ODE for
    any σ_t [Liu+25 Flow-GRPO, Eq. 9-10]; with ∇log p_t = −ε̂/t and σ_t = a·sqrt(t/(1 − t)):

        mean = x + [v̂ + σ_t²/(2t) · (x + (1 − t) v̂)] · dt,   std = σ_t · sqrt(−dt),  dt = t' − t,

    which is flow_grpo's ``prev_sample_mean = sample·(1 + σ_t²dt/(2σ)) + v·(1 + σ_t²(1−σ)/(2σ))
    ·dt`` regrouped (``sd3_sde_with_logprob.py``, ``sde_type='sde'``). a = 0 gives σ_t = 0 and
    mean = x + v̂ dt computed with the same float64 operations as ``euler_ode``: bit for bit.

    Notes:
        flow_grpo averages the log-density over dimensions; we keep the exact sum.
    """
    _check_flow(sde, "flow_sde")
    fast = _fast_step(flow_sde_step, x, pred, kind, t, t_next, sde, noise, eta=eta)
    if fast is not None:  # one time for all rows: the affine fast path (samplers.steps)
        return fast
    t, tn = _times(x, t, t_next)
    dt = tn - t
    v, eps = _velocity_and_noise(x, pred, kind, t, sde)
    sig = flow_grpo_sigma(t, tn, eta)
    drift = v + bcast(sig**2 / (2.0 * t), x) * eps
    mean = x.to(_F64) + bcast(dt, x) * drift
    return _finish(x, mean, sig * (-dt).sqrt(), noise)


@SAMPLERS.register("flow_cps", paper="Coefficients-Preserving Sampling (CPS; arXiv id not "
                                     "verified); yifan123/flow_grpo",
                   equation="flow_grpo sd3_sde_with_logprob.py sde_type='cps'",
                   properties=frozenset({"stochastic_if_eta", "flow_only"}))
def flow_cps_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
                  eta: float = FLOW_GRPO_NOISE_LEVEL, noise: Tensor | None = None,
                  pred_fn: PredFn | None = None) -> GaussianStep:
    r"""Coefficients-preserving sampling: re-noise x̂_0 to t' keeping the coefficient sum.

        std = t' · sin(aπ/2),   mean = (1 − t') x̂_0 + sqrt(t'² − std²) · x̂_1,
        x̂_0 = x − t v̂,  x̂_1 = x + (1 − t) v̂

    (flow_grpo ``sd3_sde_with_logprob.py``, ``sde_type='cps'``: ``std_dev_t = sigma_prev *
    sin(noise_level·π/2)``, ``prev_sample_mean = pred_original_sample·(1 − sigma_prev) +
    noise_estimate·sqrt(sigma_prev² − std_dev_t²)``). The new state has signal coefficient
    1 − t' and total noise std sqrt((t'² − std²) + std²) = t', the marginal's. a = 0 is the
    DDIM-type step (1 − t') x̂_0 + t' x̂_1, algebraically the Euler step x + (t' − t) v̂.

    Notes:
        flow_grpo's CPS log-prob is −(x' − mean)² with every constant and the 1/(2 std²) factor
        dropped ("remove all constants"), a rescaled quantity; here it is the exact Gaussian.
    """
    _check_flow(sde, "flow_cps")
    fast = _fast_step(flow_cps_step, x, pred, kind, t, t_next, sde, noise, eta=eta)
    if fast is not None:  # one time for all rows: the affine fast path (samplers.steps)
        return fast
    t, tn = _times(x, t, t_next)
    v, x1 = _velocity_and_noise(x, pred, kind, t, sde)
    x0 = x.to(_F64) - bcast(t, x) * v
    std = tn * math.sin(eta * math.pi / 2)
    mean = bcast(1.0 - tn, x) * x0 + bcast((tn**2 - std**2).clamp_min(0.0).sqrt(), x) * x1
    return _finish(x, mean, std, noise)


@SAMPLERS.register("dance_sde", paper="Xue+25 (DanceGRPO), arXiv:2505.07818",
                   equation="XueZeyue/DanceGRPO flux_step (sde_solver=True)",
                   properties=frozenset({"stochastic_if_eta", "flow_only"}))
def dance_sde_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
                   eta: float = DANCE_GRPO_ETA, noise: Tensor | None = None,
                   pred_fn: PredFn | None = None) -> GaussianStep:
    r"""DanceGRPO's step: the same reverse SDE with a constant diffusion coefficient η.

        score = −(x − x̂_0 (1 − t)) / t²,   mean = x + dt · v̂ − ½ η² · score · dt,
        std = η · sqrt(−dt)

    (XueZeyue/DanceGRPO ``fastvideo/train_grpo_flux.py`` ``flux_step``: ``prev_sample_mean =
    latents + dsigma·model_output``, ``score_estimate = −(latents − pred_original_sample·(1 −
    sigma))/sigma²``, ``prev_sample_mean += −0.5·eta²·score_estimate·dsigma``, ``std_dev_t =
    eta·sqrt(delta_t)``). Since x − x̂_0(1 − t) = t ε̂, this is :func:`flow_sde_step` with σ_t ≡ η.
    η = 0 is ``euler_ode`` bit for bit.
    """
    _check_flow(sde, "dance_sde")
    fast = _fast_step(dance_sde_step, x, pred, kind, t, t_next, sde, noise, eta=eta)
    if fast is not None:  # one time for all rows: the affine fast path (samplers.steps)
        return fast
    t, tn = _times(x, t, t_next)
    dt = tn - t
    v = pf_ode_velocity(x, pred, kind, t, sde)
    x0 = x.to(_F64) - bcast(t, x) * v
    score = -(x.to(_F64) - x0 * bcast(1.0 - t, x)) / bcast(t**2, x)
    mean = x.to(_F64) + bcast(dt, x) * (v - 0.5 * eta**2 * score)
    return _finish(x, mean, eta * (-dt).sqrt(), noise)


def time_shift(t: Tensor, shift: float) -> Tensor:
    r"""SD3's resolution-dependent time shift t' = s·t / (1 + (s − 1)·t)  [Esser+24 SD3, Eq. 23].

    diffusers ``FlowMatchEulerDiscreteScheduler`` (``shift``; 3.0 for SD3.5) and DanceGRPO's
    ``sd3_time_shift(shift, t) = (shift·t)/(1 + (shift − 1)·t)``. s > 1 spends more steps at
    high noise; s = 1 is the identity.
    """
    if not shift > 0:
        raise ValueError(f"time shift must be > 0, got {shift}")
    return shift * t / (1.0 + (shift - 1.0) * t)


@GRIDS.register("sd3_shift", paper="Esser+24 (SD3), arXiv:2403.03206", equation="Eq. 23 (s = 3)")
def sd3_shift_grid(sde: SDE, steps: int, t_max: float, t_min: float, rho: float) -> Tensor:
    """The uniform grid mapped through :func:`time_shift` with SD3.5's s = 3 (endpoints kept)."""
    return time_shift(uniform_grid(sde, steps, t_max, t_min, rho), SD3_SHIFT)


__all__ = ["DANCE_GRPO_ETA", "FLOW_GRPO_NOISE_LEVEL", "SD3_SHIFT", "dance_sde_step",
           "flow_cps_step", "flow_grpo_sigma", "flow_sde_step", "sd3_shift_grid", "time_shift"]
