"""The sampling loop: integrate T → t_min with a registered step; the only loop in the library.

Noise comes from the caller, either pre-drawn per step (``noise`` [S, B, *D], e.g. stacked from
:func:`scorealign.rng.randn_per_sample`, which makes every sample's draws independent of batch
size and order) or from a ``torch.Generator``. With ``record=True`` the trajectory keeps every
state, kernel mean/std and the exact step log-probabilities.

Host↔device traffic: the model's time grid is copied to x's device once per call
(:func:`~scorealign.samplers.steps.model_times`); the step times stay on the CPU, so the
affine steps take their one-time fast path (``samplers.steps``) and return their std as a host
number, with which the step log-probability is computed without reading the device. Per step,
nothing is copied to the device and nothing waits on it (tests/samplers/test_fast_kernels.py
runs the loop on the ``meta`` device, where any such read fails).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from scorealign.samplers.grids import make_grid
from scorealign.samplers.kernel import GaussianStep, gaussian_log_prob
from scorealign.samplers.steps import SAMPLERS, langevin_corrector_step, model_times
from scorealign.sde.base import SDE, log_prob_dtype

PredFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, Tensor, Tensor], None]


@dataclass(frozen=True)
class SampleResult:
    """Output of :func:`sample`.

    Attributes:
        x0: final state at t_min, [B, *D] (dtype of x_T).
        ts: the time grid t_0 = t_max > … > t_S = t_min, [S + 1], float64.
        xs: states, [B, S + 1, *D]; ``xs[:, i]`` is the state that step i starts from (after
            any corrector moves at t_i), ``xs[:, S] = x0``. ``None`` unless ``record``.
        means, stds: kernel of step i, [B, S, *D] and [B, S]. ``None`` unless ``record``.
        log_probs: log p(xs[:, i+1] | xs[:, i]) summed over dimensions, [B, S], fp32; NaN where
            the step is deterministic (std = 0). ``None`` unless ``record``.
        nfe: number of model evaluations.
    """

    x0: Tensor
    ts: Tensor
    xs: Tensor | None = None
    means: Tensor | None = None
    stds: Tensor | None = None
    log_probs: Tensor | None = None
    nfe: int = 0


def _is_stochastic(name: str, eta: float | None) -> bool:
    """Whether sampler ``name`` at ``eta`` draws noise (from its registry properties)."""
    entry = SAMPLERS.get(name)
    if "deterministic" in entry.properties:
        return False
    if "stochastic_if_eta" in entry.properties:
        default = inspect.signature(entry.fn).parameters["eta"].default
        return (default if eta is None else eta) > 0
    return True


def _noise_source(noise: Tensor | None, generator: torch.Generator | None, x: Tensor,
                  steps: int, per_step: int) -> Callable[[int, int], Tensor]:
    """draw(i, k): the k-th standard normal draw of step i (k = 0 predictor, 1.. correctors)."""
    if noise is not None:
        want = (steps, x.shape[0], *x.shape[1:])
        if per_step > 1:
            want = (steps, per_step, *want[1:])
        if tuple(noise.shape) != want:
            raise ValueError(f"noise must have shape {list(want)} ([S, (1+C,) B, *D]); "
                             f"got {list(noise.shape)}")
        return (lambda i, k: noise[i, k]) if per_step > 1 else (lambda i, k: noise[i])
    if generator is None:
        raise ValueError("this sampler is stochastic: pass noise=[S, B, *D] or a generator "
                         "(library code never uses the global RNG)")
    return lambda i, k: torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                    device=x.device)


def _step_log_prob(st: GaussianStep) -> Tensor:
    """log p(x_next | x) [B], NaN where the step is deterministic.

    With the std known on the host (``std_value``) nothing waits on the device: the same call on
    the whole batch as the masked one below when every row is stochastic (the case there too).
    """
    if st.std_value is not None:
        if st.std_value == 0.0:
            return torch.full(st.std.shape, float("nan"), dtype=log_prob_dtype(st.mean.dtype),
                              device=st.mean.device)
        lp = gaussian_log_prob(st.x_next.detach(), st.mean, st.std, std_value=st.std_value)
        return lp.to(log_prob_dtype(st.mean.dtype))
    out = torch.full(st.std.shape, float("nan"), dtype=log_prob_dtype(st.mean.dtype),
                     device=st.mean.device)
    ok = st.std > 0
    if bool(ok.any()):
        # x_next is the recorded outcome, a constant: with a graph (detach_states=True) only the
        # kernel's mean depends on θ, as in a recomputation at the recorded states
        out[ok] = gaussian_log_prob(st.x_next.detach()[ok], st.mean[ok], st.std[ok])
    return out


def sample(pred_fn: PredFn, kind: str, sde: SDE, x_T: Tensor, *, sampler: str, steps: int,
           eta: float | None = None, grid: str | Tensor = "uniform",
           generator: torch.Generator | None = None, noise: Tensor | None = None,
           record: bool = False, corrector_steps: int = 0, snr: float = 0.16,
           callback: Callback | None = None, deterministic: Tensor | None = None,
           clip_x0: float | None = None, detach_states: bool = False,
           step_hook: Callable[[int, GaussianStep, Tensor], None] | None = None
           ) -> SampleResult:
    """Integrate from x_T at t_max to t_min with the registered step ``sampler``.

    Args:
        pred_fn: ``pred_fn(x, t)`` → the model's ``kind`` prediction; t is [B] fp32 (fp64 for
            fp64 x). Condition and guidance are closed over by the caller.
        kind: "eps", "x0", "score" or "v".
        sde: the forward SDE.
        x_T: initial state [B, *D] (e.g. ``sde.prior_sample``).
        sampler: a name in ``SAMPLERS`` (ddim, ddpm, euler_maruyama, euler_ode, heun_ode,
            heun_sde).
        steps: number of steps S.
        eta: η of the sampler (default: the step function's own default).
        grid: a name in ``GRIDS`` or an explicit decreasing float64 grid of S + 1 times.
        generator: source of noise when ``noise`` is not given.
        noise: pre-drawn standard normals, [S, B, *D], or [S, 1 + C, B, *D] with C corrector
            steps (index 0: predictor).
        record: keep the trajectory (states, means, stds, log-probs).
        corrector_steps: Langevin corrector steps C before each predictor step [Song+21, Alg. 1].
        snr: signal-to-noise ratio of the corrector.
        callback: ``callback(i, t_next, x_next)`` after every step.
        deterministic: ``[S]`` bool, steps to take without noise (policy non-action steps): the
            sampler's η = 0 step when it has an η (the PF-ODE step of the same solver), else
            its kernel mean. None: every step as the sampler defines it (unchanged behaviour).
        clip_x0: diffusers' ``clip_sample`` for samplers with that property (ddim, ddpm):
            x̂₀ clamped to ±clip_x0 in every step; None (default): off, bit-identical.
        detach_states: cut the graph between steps (each state enters the next step as a
            constant), so with autograd on, step i's mean and log-prob carry the graph of step
            i's model call(s) only (``Policy.rollout(keep_graph=True)``).
        step_hook: ``step_hook(i, step, log_prob)`` after step i is taken and recorded (needs
            ``record``), before its state enters step i + 1 (``Policy.rollout(grads=...)``
            backpropagates each step's log-prob there); the trajectory then keeps the step's
            values without their graph.

    Returns:
        SampleResult.
    """
    ts = grid.to(torch.float64) if isinstance(grid, Tensor) else make_grid(sde, steps, grid)
    if ts.shape != (steps + 1,):
        raise ValueError(f"grid must have {steps + 1} times, got shape {list(ts.shape)}")
    fn = SAMPLERS.get(sampler).fn
    stochastic = _is_stochastic(sampler, eta)
    draw = None
    if stochastic or corrector_steps:
        draw = _noise_source(noise, generator, x_T, steps, 1 + corrector_steps)
    nfe = [0]

    def counted(x: Tensor, t: Tensor) -> Tensor:
        nfe[0] += 1
        return pred_fn(x, t)

    kw = {} if eta is None else {"eta": eta}
    if clip_x0 is not None:
        if "clip_sample" not in SAMPLERS.get(sampler).properties:
            raise ValueError(f"sampler {sampler!r} has no x0-clipping option (clip_x0); "
                             f"use ddim or ddpm")
        kw["clip_x0"] = clip_x0
    has_eta = "stochastic_if_eta" in SAMPLERS.get(sampler).properties
    if deterministic is not None and tuple(deterministic.shape) != (steps,):
        raise ValueError(f"deterministic must be [S]=[{steps}], got {list(deterministic.shape)}")
    x, trace = x_T, []
    b = x.shape[0]
    # the model's times [S + 1, B] on x's device, copied once (not once per model call)
    mts = model_times(ts, x)
    det_host = None if deterministic is None else deterministic.cpu().tolist()
    for i in range(steps):
        t, tn = ts[i].expand(b), ts[i + 1].expand(b)
        for c in range(corrector_steps):
            pred = counted(x, mts[i])
            x = langevin_corrector_step(x, pred, kind, t, sde, snr=snr, noise=draw(i, 1 + c)).x_next
        det = det_host is not None and bool(det_host[i])
        z = draw(i, 0) if stochastic and not det else None
        kw_i = {**kw, "eta": 0.0} if det and has_eta else kw
        st = fn(x, counted(x, mts[i]), kind, t, tn, sde, noise=z, pred_fn=counted, **kw_i)
        if det and not has_eta:  # the kernel mean: record the step as deterministic
            st = GaussianStep(st.mean, st.mean, torch.zeros_like(st.std), std_value=0.0)
        if record:
            trace.append((x, st, _step_log_prob(st)))
            if step_hook is not None:
                step_hook(i, st, trace[-1][2])
                # keep values only: the step's autograd graph (its nodes were allocated among
                # the activations) is released now, not when the rollout ends
                st = GaussianStep(st.x_next.detach(), st.mean.detach(), st.std.detach(),
                                  std_value=st.std_value)
                trace[-1] = (x, st, trace[-1][2].detach())
        x = st.x_next.detach() if detach_states else st.x_next
        if callback is not None:
            callback(i, ts[i + 1], x)
    if not record:
        return SampleResult(x0=x, ts=ts, nfe=nfe[0])
    return SampleResult(
        x0=x, ts=ts, nfe=nfe[0],
        xs=torch.stack([s[0] for s in trace] + [x], 1),
        means=torch.stack([s[1].mean for s in trace], 1),
        stds=torch.stack([s[1].std for s in trace], 1),
        log_probs=torch.stack([s[2] for s in trace], 1),
    )
