"""Sampling conditions of the CDPM robustness experiment: injected score error and step count.

A condition perturbs the model's prediction before the sampler sees it. The error has size δ per
coordinate (RMS) and is either fresh Gaussian noise at every evaluation (``noise``: NOT a score
function, since two calls at the same (x, t) disagree; kept for the record, not evidence about
score error) or a fixed direction u with ±1 coordinates (``bias``). It is added in one of two
spaces:

* ``score``: ŝ = s_θ + δ e, a uniform absolute score error — the assumption of the CDPM error
  bounds [Tang & Zhao 24] (sup_t E‖s_θ − ∇log p_t‖² ≤ ε²);
* ``eps``:   ε̂ = ε_θ + δ e, i.e. a score error δ e / s(t) that scales with the noise level, the
  way an ε-prediction network errs.

The reverse SDE is integrated with Euler–Maruyama (η = 1) [Song+21, Eq. 6], the sampler of the
CDPM paper's experiments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from scorealign.rng import generator
from scorealign.samplers import sample
from scorealign.sde import SDE
from scorealign.sde.param import convert

PredFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Condition:
    """One sampling condition: error (space, kind, δ), solver steps and time grid."""

    space: str = "none"  # "none", "score" or "eps"
    kind: str = "none"  # "none", "noise" or "bias"
    delta: float = 0.0
    steps: int = 50
    grid: str = "karras"

    @property
    def name(self) -> str:
        """Stable label, e.g. ``eps-bias-0.1@20karras`` or ``clean@50uniform``."""
        err = "clean" if self.delta == 0 else f"{self.space}-{self.kind}-{self.delta:g}"
        return f"{err}@{self.steps}{self.grid}"


def step_sweep(steps: list[int], grids: list[str]) -> list[Condition]:
    """No injected error, varying steps (discretization error) on each grid."""
    return [Condition(steps=s, grid=g) for g in grids for s in steps]


def error_sweep(deltas: dict[tuple[str, str], list[float]], steps: int) -> list[Condition]:
    """Injected error of each (space, kind) and δ at a fixed step count on the karras grid."""
    return [Condition(sp, k, d, steps, "karras") for (sp, k), ds in deltas.items() for d in ds]


def with_error(pred_fn: PredFn, kind: str, sde: SDE, cond: Condition, seed: int) -> PredFn:
    """The score predictor ``pred_fn`` (of ``kind``) with the condition's error added."""
    g = generator(seed, "cdpm/inject", cond.name)
    u: list[Tensor] = []

    def error(x: Tensor) -> Tensor:
        if cond.kind == "noise":
            return torch.randn(x.shape, generator=g, dtype=torch.float64)
        if not u:  # the bias direction: one draw of ±1 per coordinate, shared by all samples
            u.append((torch.randint(0, 2, x.shape[1:], generator=g) * 2 - 1).double())
        return u[0].expand(x.shape)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        x64, pred = x.double(), pred_fn(x, t).double()
        if cond.delta == 0:
            return convert(pred, kind, "score", x64, t, sde)
        space = cond.space if cond.space in ("eps", "score") else None
        if space is None:
            raise ValueError(f"unknown error space {cond.space!r}; choose eps or score")
        out = convert(pred, kind, space, x64, t, sde) + cond.delta * error(x)
        return convert(out, space, "score", x64, t, sde)

    return fn


@torch.no_grad()
def draw(pred_fn: PredFn, kind: str, sde: SDE, shape: tuple[int, ...], cond: Condition,
         seed: int) -> Tensor:
    """Samples [N, *D] (float32) of the reverse SDE under ``cond``.

    The prior draw and the sampler's noise come from generators keyed by the condition only, so
    every family sees the same standard-normal numbers (common random numbers).
    """
    g = generator(seed, "cdpm/sample", cond.name)
    x_T = sde.prior_sample(shape, g)
    fn = with_error(pred_fn, kind, sde, cond, seed)
    out = sample(fn, "score", sde, x_T, sampler="euler_maruyama", steps=cond.steps,
                 grid=cond.grid, generator=g)
    return out.x0.float()
