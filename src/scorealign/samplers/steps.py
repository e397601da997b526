"""Sampler steps T → t_min as pure functions: the noise is passed in, the kernel is returned.

Every predictor shares one signature,

    step(x, pred, kind, t, t_next, sde, *, eta=…, noise=None, pred_fn=None) -> GaussianStep,

where ``pred`` is the model's ``kind`` prediction at (x, t), ``t_next < t`` (both [B]),
``noise`` ~ N(0, I) has the shape of x, and ``pred_fn(x, t)`` is needed only by multi-evaluation
steps (Heun). With ``noise=None`` a step returns its kernel with ``x_next = mean`` (for
recomputing log-probabilities of recorded transitions). Each stochastic step is Gaussian given x,
so ``GaussianStep.mean``/``std`` give log p(x_next | x) exactly.

Precision (general path): all arithmetic in float64; ``x_next``/``mean`` are cast to
``x.dtype`` and ``std`` to at least fp32. The model sees t as a [B] tensor in fp32 (fp64 when x
is fp64).

Fast path (one time for every row): the sampling loop and the policy pass t = ``ts[i].expand(B)``
with the grid on the CPU. When t and t' are CPU tensors whose rows are all equal, the steps that
are affine in (x, pred) — ddim and ddpm without ``clip_x0``, euler_maruyama, euler_ode, any kind
(eps, x0, v, score are all affine in (x̂₀, ε̂)) — compute mean = A x + B pred with A, B and the
std as float64 host numbers. A, B, σ are read off the general path itself, run once on the
probes (x, pred) = (1, 0) and (0, 1) in float64 and cached per (SDE, step, kind, η, t, t'), so
they are the general path's own coefficients (its formulas live in one place). The elementwise
work is then two fused ops (three with noise) in ``log_prob_dtype(x.dtype)``: fp32 for fp32/bf16
x (fp64 coefficients rounded to fp32 once, error ≈ fp32 rounding of A x and B pred), fp64 for
fp64 x (error ≈ 1e-16 relative to |A x| + |B pred|). No time tensor is copied to the device and
nothing waits on the device; the returned step carries its std as a host number
(``GaussianStep.std_value``). Per-row times, times on the device, ``clip_x0`` (nonlinear) and
Heun (a second model call) and the Langevin corrector take the general path. Measured on one
CPU thread (batch 8 of 4×64×64): the same two-op update costs ~0.1 ms in fp32 and ~0.8–1.6 ms
in fp64, hence fp32 elementwise work for fp32 inputs (as diffusers' schedulers do).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable

import torch
from torch import Tensor

from scorealign.registry import Registry
from scorealign.samplers.kernel import GaussianStep
from scorealign.sde.base import SDE, as_time, bcast, log_prob_dtype
from scorealign.sde.param import to_score, to_x0_eps

SAMPLERS = Registry("sampler")
CORRECTORS = Registry("corrector")
PredFn = Callable[[Tensor, Tensor], Tensor]
_F64 = torch.float64


def model_time(t: Tensor, x: Tensor) -> Tensor:
    """The time tensor handed to a model: [B] in fp32 (fp64 when x is fp64)."""
    return as_time(t, x).to(device=x.device, dtype=log_prob_dtype(x.dtype))


def model_times(ts: Tensor, x: Tensor) -> Tensor:
    """The model's times of a whole grid at once: [len(ts), B] on x's device, row i equal to
    ``model_time(ts[i].expand(B), x)`` bit for bit (one host→device copy for the grid)."""
    mt = ts.to(torch.float64).to(log_prob_dtype(x.dtype))
    return mt[:, None].expand(-1, x.shape[0]).contiguous().to(x.device)


def _times(x: Tensor, t: Tensor, t_next: Tensor) -> tuple[Tensor, Tensor]:
    return as_time(t, x).to(x.device), as_time(t_next, x).to(x.device)


def _finish(x: Tensor, mean: Tensor, std: Tensor, noise: Tensor | None) -> GaussianStep:
    """x_next = mean + std · noise (float64), cast back to x's dtype."""
    x_next = mean if noise is None else mean + bcast(std, x) * noise.to(_F64)
    return GaussianStep(x_next.to(x.dtype), mean.to(x.dtype), std.to(log_prob_dtype(x.dtype)))


_PROBING = threading.local()
_COEFS: OrderedDict = OrderedDict()
_COEFS_MAX = 4096
_COEFS_LOCK = threading.Lock()


@contextmanager
def general_path():
    """Within this block every step takes the general (per-row, float64) path (tests, debugging)."""
    old = getattr(_PROBING, "on", False)
    _PROBING.on = True
    try:
        yield
    finally:
        _PROBING.on = old


def uniform_time(t: Tensor | float) -> float | None:
    """t as a host float when every row holds the same time on the CPU, else None (no sync)."""
    if isinstance(t, (float, int)):
        return float(t)
    if not isinstance(t, Tensor) or t.device.type != "cpu" or t.dim() > 1 or t.numel() == 0:
        return None
    if t.dim() == 1 and t.stride(0) != 0 and not bool((t == t[0]).all()):
        return None
    return float(t.reshape(-1)[0])


def affine_step_coefs(fn: Callable, kind: str, t: float, t_next: float, sde: SDE,
                      **kw) -> tuple[float, float, float]:
    """(A, B, σ) with mean = A x + B pred and std σ of the affine step ``fn`` from t to t'.

    Read off the general path (float64) at (x, pred) = (1, 0) and (0, 1): 1·c + 0·d = c
    exactly, so A and B are the general path's own float64 coefficients. Cached.
    """
    key = (id(sde), fn, kind, t, t_next, tuple(sorted(kw.items())))
    hit = _COEFS.get(key)
    if hit is not None and hit[0] is sde:
        return hit[1]
    x = torch.tensor([[1.0], [0.0]], dtype=_F64)
    tt, ttn = torch.full((2,), t, dtype=_F64), torch.full((2,), t_next, dtype=_F64)
    with general_path(), torch.no_grad():
        st = fn(x, 1.0 - x, kind, tt, ttn, sde, noise=None, **kw)
    mean = st.mean.reshape(-1).tolist()
    coefs = (mean[0], mean[1], float(st.std[0]))
    with _COEFS_LOCK:
        _COEFS[key] = (sde, coefs)  # holding sde keeps its id from being reused
        if len(_COEFS) > _COEFS_MAX:
            _COEFS.popitem(last=False)
    return coefs


def _fast_step(fn: Callable, x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor,
               sde: SDE, noise: Tensor | None, **kw) -> GaussianStep | None:
    """The one-time fast path of an affine step (module docstring), or None if it does not
    apply (per-row or device times, or called from inside the probe)."""
    if getattr(_PROBING, "on", False) or x.dim() == 0 or x.shape[0] == 0:
        return None
    t0, t1 = uniform_time(t), uniform_time(t_next)
    if t0 is None or t1 is None:
        return None
    if isinstance(t, Tensor) and t.dim() == 1 and t.shape[0] != x.shape[0]:
        return None
    a, b, std = affine_step_coefs(fn, kind, t0, t1, sde, **kw)
    dt = log_prob_dtype(x.dtype)
    xd = x.to(dt)
    # A = 1 (flow Euler, ...): x·1 = x exactly, so skipping the product keeps the same bits
    mean = torch.add(xd if a == 1.0 else xd * a, pred.to(dt), alpha=b)
    x_next = mean if noise is None or std == 0.0 else torch.add(mean, noise.to(dt), alpha=std)
    std_t = torch.full((x.shape[0],), std, dtype=dt, device=x.device)
    return GaussianStep(x_next.to(x.dtype), mean.to(x.dtype), std_t, std_value=std)


def _no_eta(name: str, eta: float) -> None:
    if eta != 0.0:
        raise ValueError(f"{name} is deterministic; it takes no eta (got eta={eta})")


def pf_ode_velocity(x: Tensor, pred: Tensor, kind: str, t: Tensor, sde: SDE) -> Tensor:
    r"""dx/dt of the probability-flow ODE, float64 [B, *D].

    f − ½ g² ∇log p_t = m'(t) x̂_0 + s'(t) ε̂ [Song+21, Eq. 13]: substitute
    ∇log p_t = −ε̂/s and x = m x̂_0 + s ε̂. This form stays finite where a or g is singular
    (``flow`` at t = 1).
    """
    t = as_time(t, x).to(x.device)
    x0, eps = to_x0_eps(pred, kind, x, t, sde)
    rate = sde.marginal_rate(t)
    return bcast(rate.mean_coef, x) * x0 + bcast(rate.std, x) * eps


def posterior_var(sde: SDE, t: Tensor, t_next: Tensor) -> Tensor:
    """Var[x_{t'} | x_t, x_0] = s(t')² v / s(t)², v = Var[x_t | x_{t'}]  (t' < t), float64 [B]."""
    v = sde.transition(t_next, t).std ** 2
    return sde.marginal(t_next).std ** 2 * v / sde.marginal(t).std ** 2


def clip_x0_eps(x0: Tensor, x: Tensor, t: Tensor, sde: SDE, clip: float | None
                ) -> tuple[Tensor, Tensor | None]:
    """diffusers' ``clip_sample``: x̂₀ clamped to ±clip and ε̂ recomputed from it,
    ε̂ = (x − m(t) x̂₀)/s(t) (``DDIMScheduler.step``); (x0, None) when ``clip`` is None."""
    if clip is None:
        return x0, None
    x0 = x0.clamp(-clip, clip)
    mg = sde.marginal(t)
    return x0, (x.to(_F64) - bcast(mg.mean_coef, x) * x0) / bcast(mg.std, x)


@SAMPLERS.register("ddim", paper="Song+21a (DDIM), arXiv:2010.02502", equation="Eq. 12, 16",
                   properties=frozenset({"stochastic_if_eta", "exact_at_eta_1", "clip_sample"}))
def ddim_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
              eta: float = 0.0, noise: Tensor | None = None, pred_fn: PredFn | None = None,
              clip_x0: float | None = None) -> GaussianStep:
    r"""Generalized DDIM step for any SDE with a Gaussian marginal  [Song+21a, Eq. 12, 16].

    x_{t'} = m(t') x̂_0 + sqrt(s(t')² − σ²) ε̂ + σ z,  σ² = η² Var[x_{t'} | x_t, x_0].
    For VP, σ = η sqrt((1−ᾱ_{t'})/(1−ᾱ_t)) sqrt(1 − ᾱ_t/ᾱ_{t'}) (DDIM Eq. 16, diffusers'
    ``DDIMScheduler.step``). η = 1 is the exact posterior q(x_{t'} | x_t, x̂_0), i.e. DDPM;
    η = 0 is deterministic: x_{t'}/m(t') = x_t/m(t) + (r(t') − r(t)) ε̂ with r = s/m, the
    first-order exponential integrator of the PF-ODE (DPM-Solver-1 [Lu+22, §3.3]).

    Notes:
        η ∈ [0, 1]; for η > 1 the direction coefficient is clamped at 0. ``clip_x0`` (diffusers'
        ``clip_sample``, for pixel-space models): x̂₀ is clamped to ±clip_x0 and ε̂ recomputed
        from it. The kernel stays an exact Gaussian given x_t (the clamp is a deterministic
        function of x_t and θ), so log-probs remain exact; where a pixel is clipped the mean
        no longer depends on θ through x̂₀, so that pixel's log-prob gradient flows through ε̂
        only. None (default) leaves the step bit-identical to the unclipped one.
    """
    if clip_x0 is None:
        fast = _fast_step(ddim_step, x, pred, kind, t, t_next, sde, noise, eta=eta)
        if fast is not None:
            return fast
    t, tn = _times(x, t, t_next)
    x0, eps = to_x0_eps(pred, kind, x, t, sde)
    x0_c, eps_c = clip_x0_eps(x0, x, t, sde, clip_x0)
    if eps_c is not None:
        x0, eps = x0_c, eps_c
    nxt = sde.marginal(tn)
    # σ_t(η)², DDIM Eq. 16 generalized through the SDE's transition kernel.
    var = eta**2 * posterior_var(sde, t, tn)
    # "direction pointing to x_t" and "predicted x_0" terms of DDIM Eq. 12.
    direction = (nxt.std**2 - var).clamp_min(0.0).sqrt()
    mean = bcast(nxt.mean_coef, x) * x0 + bcast(direction, x) * eps
    return _finish(x, mean, var.sqrt(), noise)


@SAMPLERS.register("ddpm", paper="Ho+20 (DDPM), arXiv:2006.11239", equation="Eq. 6-7, Alg. 2",
                   properties=frozenset({"stochastic", "exact_posterior", "clip_sample"}))
def ddpm_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
              eta: float = 1.0, noise: Tensor | None = None, pred_fn: PredFn | None = None,
              clip_x0: float | None = None) -> GaussianStep:
    r"""Ancestral step: sample the Gaussian posterior q(x_{t'} | x_t, x_0 = x̂_0)  [Ho+20, Eq. 6-7].

    μ̃ = m(t') x̂_0 + (r s(t')²/s(t)) ε̂ with r = m(t)/m(t'), β̃ = s(t')² v/s(t)²; identical to
    :func:`ddim_step` with η = 1. ``eta`` must be 1 (it exists for the common signature).
    """
    if eta != 1.0:
        raise ValueError(f"ddpm is DDIM with eta=1; got eta={eta} (use sampler='ddim')")
    return ddim_step(x, pred, kind, t, t_next, sde, eta=1.0, noise=noise, clip_x0=clip_x0)


@SAMPLERS.register("euler_maruyama", paper="Song+21 (score SDE), arXiv:2011.13456",
                   equation="Eq. 6 (η = 1), Eq. 13 (η = 0)",
                   properties=frozenset({"stochastic_if_eta"}))
def euler_maruyama_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE,
                        *, eta: float = 1.0, noise: Tensor | None = None,
                        pred_fn: PredFn | None = None) -> GaussianStep:
    r"""Euler–Maruyama step of the η-family of reverse processes  [Song+21, Eq. 6 and 13].

    dx = [f − ½(1 + η²) g² ∇log p_t] dt + η g dW̄:  x' = x + drift · Δt + η g(t) sqrt(|Δt|) z,
    Δt = t' − t < 0. η = 1: reverse SDE; η = 0: Euler on the PF-ODE.
    """
    fast = _fast_step(euler_maruyama_step, x, pred, kind, t, t_next, sde, noise, eta=eta)
    if fast is not None:
        return fast
    t, tn = _times(x, t, t_next)
    dt = tn - t
    score = to_score(pred.to(_F64), kind, x.to(_F64), t, sde)
    drift = sde.reverse_drift(x.to(_F64), t, score, eta)
    mean = x.to(_F64) + bcast(dt, x) * drift
    return _finish(x, mean, eta * sde.diffusion(t) * (-dt).sqrt(), noise)


@SAMPLERS.register("euler_ode", paper="Song+21 (score SDE), arXiv:2011.13456",
                   equation="Eq. 13 (PF-ODE), Euler", properties=frozenset({"deterministic"}))
def euler_ode_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
                   eta: float = 0.0, noise: Tensor | None = None, pred_fn: PredFn | None = None
                   ) -> GaussianStep:
    """Euler step of the PF-ODE x' = x + Δt (m' x̂_0 + s' ε̂)  [Song+21, Eq. 13]; std = 0."""
    _no_eta("euler_ode", eta)
    fast = _fast_step(euler_ode_step, x, pred, kind, t, t_next, sde, None)
    if fast is not None:
        return fast
    t, tn = _times(x, t, t_next)
    mean = x.to(_F64) + bcast(tn - t, x) * pf_ode_velocity(x, pred, kind, t, sde)
    return _finish(x, mean, torch.zeros_like(t), None)


def _second_eval(pred_fn: PredFn | None, x: Tensor, t_next: Tensor, sde: SDE) -> bool:
    if pred_fn is None:
        raise ValueError("a Heun step evaluates the model twice: pass pred_fn")
    return bool((sde.marginal(t_next).std > 0).all())  # EDM Alg. 1: no correction at σ = 0


@SAMPLERS.register("heun_ode", paper="Karras+22 (EDM), arXiv:2206.00364", equation="Alg. 1",
                   properties=frozenset({"deterministic", "second_order"}))
def heun_ode_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
                  eta: float = 0.0, noise: Tensor | None = None, pred_fn: PredFn | None = None
                  ) -> GaussianStep:
    """Heun (trapezoidal predictor–corrector) step of the PF-ODE  [Karras+22, Alg. 1].

    d₁ = v(x, t), x̃ = x + Δt d₁, d₂ = v(x̃, t'), x' = x + Δt (d₁ + d₂)/2 (Euler when s(t') = 0).
    """
    _no_eta("heun_ode", eta)
    t, tn = _times(x, t, t_next)
    dt = bcast(tn - t, x)
    d1 = pf_ode_velocity(x, pred, kind, t, sde)
    mean = x.to(_F64) + dt * d1
    if _second_eval(pred_fn, x, tn, sde):
        x_e = mean.to(x.dtype)
        d2 = pf_ode_velocity(x_e, pred_fn(x_e, model_time(tn, x)), kind, tn, sde)
        mean = x.to(_F64) + 0.5 * dt * (d1 + d2)
    return _finish(x, mean, torch.zeros_like(t), None)


@SAMPLERS.register("heun_sde", paper="Karras+22 (EDM), arXiv:2206.00364; Song+21, arXiv:2011.13456",
                   equation="Alg. 1 (Heun) on Eq. 6 drift, additive noise",
                   properties=frozenset({"stochastic_if_eta", "second_order_drift"}))
def heun_sde_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, t_next: Tensor, sde: SDE, *,
                  eta: float = 1.0, noise: Tensor | None = None, pred_fn: PredFn | None = None
                  ) -> GaussianStep:
    r"""Heun on the η-drift plus additive noise: a stochastic step that stays Gaussian given x.

    d₁ = b_η(x, t), x̃ = x + Δt d₁, d₂ = b_η(x̃, t'), mean = x + Δt (d₁ + d₂)/2,
    std = η sqrt(½ (g(t)² + g(t')²) |Δt|), with b_η = f − ½(1+η²) g² ∇log p_t [Song+21, Eq. 6].

    Notes:
        The predictor x̃ carries no noise (unlike stochastic Heun / EDM Alg. 2), so the step is
        exactly Gaussian given x and its log-probability is exact. The drift is integrated to
        second order (η = 0 reproduces :func:`heun_ode_step`); the noise is Euler–Maruyama
        with a trapezoidal variance, so the weak order is 1 for η > 0.
    """
    t, tn = _times(x, t, t_next)
    dt = bcast(tn - t, x)
    d1 = sde.reverse_drift(x.to(_F64), t, to_score(pred.to(_F64), kind, x.to(_F64), t, sde), eta)
    mean = x.to(_F64) + dt * d1
    if _second_eval(pred_fn, x, tn, sde):
        x_e = mean.to(x.dtype)
        x_e64 = x_e.to(_F64)
        score2 = to_score(pred_fn(x_e, model_time(tn, x)).to(_F64), kind, x_e64, tn, sde)
        mean = x.to(_F64) + 0.5 * dt * (d1 + sde.reverse_drift(x_e64, tn, score2, eta))
    var = 0.5 * (sde.diffusion(t) ** 2 + sde.diffusion(tn) ** 2) * (t - tn)
    return _finish(x, mean, eta * var.sqrt(), noise)


@CORRECTORS.register("langevin", paper="Song+21 (score SDE), arXiv:2011.13456",
                     equation="Alg. 4-5 (Langevin corrector)")
def langevin_corrector_step(x: Tensor, pred: Tensor, kind: str, t: Tensor, sde: SDE, *,
                            snr: float = 0.16, noise: Tensor | None = None,
                            norms: str = "expected") -> GaussianStep:
    r"""One Langevin MCMC step at fixed t with an SNR-based step size  [Song+21, Alg. 4-5].

    x' = x + ε ∇log p_t(x) + sqrt(2ε) z with ε = 2 (r ‖z‖ / ‖∇log p_t(x)‖)², r = ``snr``.

    Args:
        norms: how the two norms are taken. ``"expected"`` (default): their typical values
            ‖z‖ ≈ sqrt(D), ‖∇log p_t‖ ≈ sqrt(D)/s(t), so ε = 2 (r s(t))² (the annealed-Langevin
            step of [Song & Ermon 19, Alg. 1]); ``"sample"``: the per-sample score norm.

    Notes:
        Deviations from score_sde, which uses batch means of the actual ‖z‖ and ‖∇log p‖: the
        noise norm is replaced by sqrt(D), so ε depends on x only and the kernel is exactly
        Gaussian; norms are never batch means, so results do not depend on the batch. In low
        dimension ``"sample"`` is unstable near modes (‖∇log p‖ → 0), hence the default. The VP
        factor α_i = 1 − β_i of the discrete chain is dropped (→ 1 in continuous time).
    """
    t = as_time(t, x).to(x.device)
    score = to_score(pred.to(_F64), kind, x.to(_F64), t, sde)
    if norms == "expected":
        step = 2.0 * (snr * sde.marginal(t).std) ** 2
    elif norms == "sample":
        grad_norm = score.flatten(1).norm(dim=1).clamp_min(1e-30)
        step = 2.0 * (snr * x[0].numel() ** 0.5 / grad_norm) ** 2
    else:
        raise ValueError(f"norms must be 'expected' or 'sample', got {norms!r}")
    mean = x.to(_F64) + bcast(step, x) * score
    return _finish(x, mean, (2.0 * step).sqrt(), noise)
