"""Time grids for samplers: decreasing float64 tensors t_0 = t_max > … > t_S = t_min.

Grids are built in float64 and stay float64 (EDM keeps its σ grid in float64 too).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from scorealign.registry import Registry
from scorealign.sde.base import SDE

GRIDS = Registry("time grid")


def _frac(steps: int) -> Tensor:
    """i/S for i = 0..S, float64."""
    return torch.arange(steps + 1, dtype=torch.float64) / steps


@GRIDS.register("uniform", paper="Song+21 (score SDE), arXiv:2011.13456", equation="§4 (uniform)")
def uniform_grid(sde: SDE, steps: int, t_max: float, t_min: float, rho: float) -> Tensor:
    """t_i = t_max + (i/S)(t_min − t_max)."""
    return t_max + _frac(steps) * (t_min - t_max)


@GRIDS.register("quadratic", paper="Song+21a (DDIM), arXiv:2010.02502",
                equation="App. D.2 (quadratic τ)")
def quadratic_grid(sde: SDE, steps: int, t_max: float, t_min: float, rho: float) -> Tensor:
    """t_i = t_min + (t_max − t_min)(1 − i/S)²: denser near the data."""
    return t_min + (t_max - t_min) * (1.0 - _frac(steps)) ** 2


@GRIDS.register("karras", paper="Karras+22 (EDM), arXiv:2206.00364", equation="Eq. 5")
def karras_grid(sde: SDE, steps: int, t_max: float, t_min: float, rho: float) -> Tensor:
    """r_i = (r_max^{1/ρ} + (i/S)(r_min^{1/ρ} − r_max^{1/ρ}))^ρ in the ratio r = s/m; t = r⁻¹."""
    r_max, r_min = _nsr_range(sde, t_max, t_min)
    a, b = r_max ** (1 / rho), r_min ** (1 / rho)
    return _to_t(sde, (a + _frac(steps) * (b - a)) ** rho, t_max, t_min)


@GRIDS.register("logsnr", paper="Lu+22 (DPM-Solver), arXiv:2206.00927",
                equation="§3.4 (uniform λ = log α/σ)")
def logsnr_grid(sde: SDE, steps: int, t_max: float, t_min: float, rho: float) -> Tensor:
    """Uniform in log(s/m) = −λ (half log-SNR), mapped back to t."""
    r_max, r_min = _nsr_range(sde, t_max, t_min)
    logs = math.log(r_max) + _frac(steps) * (math.log(r_min) - math.log(r_max))
    return _to_t(sde, logs.exp(), t_max, t_min)


@GRIDS.register("scheduler", paper="diffusers schedulers' set_timesteps (the pipeline's own grid)",
                equation="policy/schedule.py", properties=frozenset({"own_endpoints"}))
def scheduler_grid(sde: SDE, steps: int, t_max: float, t_min: float, rho: float) -> Tensor:
    """The grid of the pipeline scheduler an SDE carries (``policy.schedule``: DDIM/DDPM integer
    timesteps with the scheduler's final ᾱ, flow σ's with their shift, ending at 0); its own
    endpoints (``t_max``/``t_min`` do not apply)."""
    fn = getattr(sde, "scheduler_grid", None)
    if fn is None:
        raise ValueError(f"grid 'scheduler' needs the SDE of a diffusers pipeline policy "
                         f"(policy/schedule.py); {type(sde).__name__} has no scheduler")
    return fn(steps)


def _nsr_range(sde: SDE, t_max: float, t_min: float) -> tuple[float, float]:
    r = sde.nsr(torch.tensor([t_max, t_min], dtype=torch.float64))
    if not bool(torch.isfinite(r).all()) or float(r[1]) <= 0:
        raise ValueError(f"this grid needs a finite, positive noise-to-signal ratio on "
                         f"[t_min, t_max] = [{t_min}, {t_max}] (got {r.tolist()}); pass "
                         f"t_max < T (flow: e.g. 0.999) or use grid='uniform'")
    return float(r[0]), float(r[1])


def _to_t(sde: SDE, r: Tensor, t_max: float, t_min: float) -> Tensor:
    t = sde.t_from_nsr(r)
    t[0], t[-1] = t_max, t_min  # exact endpoints
    return t


def make_grid(sde: SDE, steps: int, kind: str = "uniform", t_max: float | None = None,
              t_min: float | None = None, rho: float = 7.0) -> Tensor:
    """A decreasing float64 time grid of ``steps + 1`` points from t_max (T) to t_min.

    Args:
        sde: the SDE (its ``T``, ``t_min`` and noise-to-signal ratio).
        steps: number of sampler steps S ≥ 1.
        kind: a name in ``GRIDS``: ``uniform``, ``quadratic``, ``karras`` (EDM ρ-schedule in
            s/m), ``logsnr`` (uniform in log s/m), ``scheduler`` (a pipeline SDE's scheduler
            grid, with its own endpoints); or ``auto``: the SDE's ``default_grid`` (``uniform``
            but for the contractive SDEs and the pipelines' SDEs).
        t_max, t_min: endpoints (default ``sde.t_max`` and ``sde.t_min``).
        rho: ρ of the ``karras`` grid.

    Returns:
        Tensor [S + 1], float64, strictly decreasing.
    """
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    t_max = sde.t_max if t_max is None else float(t_max)
    t_min = sde.t_min if t_min is None else float(t_min)
    if not t_max > t_min >= 0:
        raise ValueError(f"need t_max > t_min ≥ 0, got t_max={t_max}, t_min={t_min}")
    if kind == "auto":
        kind = sde.default_grid
    entry = GRIDS.get(kind)
    fn: Callable[..., Tensor] = entry.fn
    ts = fn(sde, steps, t_max, t_min, rho)
    if "own_endpoints" in entry.properties:
        return ts.to(torch.float64)
    ts[0], ts[-1] = t_max, t_min  # exact endpoints (t_max + 1·(t_min − t_max) may round)
    return ts


def explicit_grid(ts: Tensor | Sequence[float], steps: int | None = None) -> Tensor:
    """An explicit grid as a float64 tensor ``[S + 1]``, checked: 1-D, strictly decreasing,
    non-negative, ``steps + 1`` nodes when ``steps`` is given."""
    g = torch.as_tensor(ts, dtype=torch.float64).detach().cpu().clone()
    if g.dim() != 1 or g.numel() < 2:
        raise ValueError(f"an explicit grid needs ≥ 2 times in a 1-D list, got shape "
                         f"{list(g.shape)}")
    if steps is not None and g.numel() != steps + 1:
        raise ValueError(f"an explicit grid of {steps} steps has {steps + 1} times, got "
                         f"{g.numel()}")
    if not bool((g[1:] < g[:-1]).all()) or float(g[-1]) < 0:
        raise ValueError(f"an explicit grid must be strictly decreasing and ≥ 0, got "
                         f"{g.tolist()}")
    return g
