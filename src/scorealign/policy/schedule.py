r"""The pipeline scheduler's own time grid: the trajectory ``pipe(...)`` runs, in scorealign's time.

A pipeline policy trains on the nodes its users deploy on. The SDE of a pipeline policy carries a
private copy of the pipeline's scheduler and answers ``grid="scheduler"`` (its ``default_grid``, so
``policy.grid: auto`` picks it) with the grid ``scheduler.set_timesteps`` gives:

* **SD-style** (``DDIMScheduler``, ``DDPMScheduler``; :class:`SchedulerVP`): the integer timesteps
  k_0 > … > k_{S−1} of ``set_timesteps(S)`` at t = (k + 1) T / N (``DiscreteVP``), then the
  scheduler's final node: ``DDIMScheduler.final_alpha_cumprod`` (ᾱ = 1 at t = 0 with
  ``set_alpha_to_one``, else ᾱ_0 at t = T/N), ``DDPMScheduler``'s ᾱ = 1 (its ``previous_timestep``
  of the last timestep is −1). DDIM steps from k to k − N//S; a spacing whose consecutive
  timesteps are not N//S apart (``linspace``, ``trailing`` with S ∤ N) steps to nodes the next step
  does not start from, which no Markov chain of states reproduces: refused.
* **flow** (``FlowMatchEulerDiscreteScheduler``; :class:`SchedulerFlow`): ``scheduler.sigmas``
  after ``set_timesteps`` exactly as the pipeline calls it: ``StableDiffusion3Pipeline`` passes
  no sigmas (the scheduler's ``linspace(σ_max, σ_min)``, shifted by ``shift``) and ``mu`` only with
  ``use_dynamic_shifting``; ``FluxPipeline`` passes ``sigmas = linspace(1, 1/S, S)`` and
  ``mu = calculate_shift(image_seq_len, …)`` with the packed sequence length (H/2)(W/2)
  (diffusers ``pipeline_flux.py`` ``__call__`` step 5), which the scheduler's dynamic (exponential)
  shift uses. σ = t (``FlowSDE``), and the grid ends at the appended terminal 0.

Explicit lists (``policy.timesteps`` / ``policy.sigmas``) go through the same calls, as
``pipe(..., timesteps=…)`` / ``pipe(..., sigmas=…)`` take them: diffusers timesteps for SD-style
schedulers, pre-shift σ's for flow schedulers (the scheduler shifts them, as in the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from scorealign.sde.discrete import DiscreteVP
from scorealign.sde.flow import FlowSDE


def _copy(scheduler: Any) -> Any:
    """A fresh scheduler of the same class and config (``set_timesteps`` mutates its state)."""
    return type(scheduler).from_config(scheduler.config)


def _decreasing(ts: Tensor, what: str) -> Tensor:
    if ts.dim() != 1 or ts.numel() < 2 or not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError(f"{what}: the grid must be strictly decreasing with ≥ 2 nodes, got "
                         f"{ts.tolist()}")
    return ts


def vp_scheduler_grid(scheduler: Any, sde: DiscreteVP, steps: int,
                      timesteps: Sequence[float] | None = None) -> Tensor:
    """The grid ``[S + 1]`` (float64, t) of an SD-style scheduler (module docstring).

    Args:
        scheduler: a ``DDIMScheduler`` or ``DDPMScheduler`` (anything else is refused).
        sde: the ``DiscreteVP`` of its ``alphas_cumprod``.
        steps: S.
        timesteps: explicit diffusers timesteps (S values, decreasing); None: ``set_timesteps(S)``.
    """
    name = type(scheduler).__name__
    n = sde.num_timesteps
    sched = _copy(scheduler)
    if timesteps is not None:
        ks = torch.as_tensor(list(timesteps), dtype=torch.float64)
        if ks.numel() != steps:
            raise ValueError(f"policy.timesteps has {ks.numel()} values; policy.steps is {steps}")
        if bool((ks < 0).any()) or bool((ks > n - 1).any()):
            raise ValueError(f"policy.timesteps must lie in [0, {n - 1}], got {ks.tolist()}")
    else:
        sched.set_timesteps(steps)
        ks = sched.timesteps.to(torch.float64)
        if ks.numel() != steps:
            raise ValueError(f"{name}.set_timesteps({steps}) gave {ks.numel()} timesteps")
    if name.startswith("DDIM"):
        if timesteps is None:
            ratio = n // steps
            nxt = ks[1:]
            if not bool((ks[:-1] - ratio == nxt).all()):
                raise ValueError(
                    f"DDIMScheduler(timestep_spacing={sched.config.timestep_spacing!r}) steps "
                    f"from k to k - {ratio}, not to the next of its timesteps {ks.tolist()}: no "
                    f"chain of states follows it; use timestep_spacing 'leading', or a step count "
                    f"that divides {n}, or policy.timesteps")
        final = float(sched.final_alpha_cumprod)
    elif name.startswith("DDPM"):
        final = 1.0  # DDPMScheduler.step: alpha_prod_t_prev = self.one at prev_t = -1
    else:
        raise ValueError(f"a scheduler grid for {name} is not supported (DDIMScheduler, "
                         f"DDPMScheduler); pass policy.grid or an explicit grid")
    if final == 1.0:
        t_end = 0.0
    elif final == float(sde.alphas_cumprod[0]):
        t_end = float(sde.timestep_to_t(0))
    else:
        raise ValueError(f"{name}'s final alpha_cumprod {final} is neither 1 nor alphas_cumprod[0]")
    ts = torch.cat([sde.timestep_to_t(ks), torch.tensor([t_end], dtype=torch.float64)])
    return _decreasing(ts, f"{name} grid")


def flow_scheduler_grid(scheduler: Any, steps: int, *, family: str, image_seq_len: int,
                        sigmas: Sequence[float] | None = None) -> Tensor:
    """The σ grid ``[S + 1]`` (float64) of a flow pipeline's ``FlowMatchEulerDiscreteScheduler``,
    as ``StableDiffusion3Pipeline`` (``family="sd3"``) or ``FluxPipeline`` (``"flux"``) set it.

    Args:
        scheduler: the pipeline's scheduler (copied; the pipeline's own is not touched).
        steps: S.
        family: ``"sd3"`` or ``"flux"``.
        image_seq_len: the transformer's image tokens (SD3: (H/p)(W/p); FLUX: (H/2)(W/2)).
        sigmas: explicit pre-shift σ's (S values), as ``pipe(sigmas=…)``; None: the pipeline's.
    """
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    sched = _copy(scheduler)
    cfg = sched.config
    if sigmas is not None:
        sigmas = [float(s) for s in sigmas]
        if len(sigmas) != steps:
            raise ValueError(f"policy.sigmas has {len(sigmas)} values; policy.steps is {steps}")
    kw: dict[str, Any] = {}
    if family == "flux":
        # diffusers FluxPipeline.__call__, "5. Prepare timesteps"
        if sigmas is None:
            sigmas = list(np.linspace(1.0, 1 / steps, steps))
        if getattr(cfg, "use_flow_sigmas", False):
            sigmas = None
        kw["mu"] = calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256),
                                   cfg.get("max_image_seq_len", 4096),
                                   cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
    elif family == "sd3":
        # diffusers StableDiffusion3Pipeline.__call__: mu only with use_dynamic_shifting
        if cfg.get("use_dynamic_shifting", None):
            kw["mu"] = calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256),
                                       cfg.get("max_image_seq_len", 4096),
                                       cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16))
    else:
        raise ValueError(f"family must be 'sd3' or 'flux', got {family!r}")
    retrieve_timesteps(sched, None if sigmas is not None else steps, "cpu", sigmas=sigmas, **kw)
    ts = sched.sigmas.to(torch.float64)
    if ts.numel() != steps + 1:
        raise ValueError(f"the scheduler gave {ts.numel()} sigmas for {steps} steps")
    return _decreasing(ts, f"{type(scheduler).__name__} sigmas")


@dataclass(frozen=True, eq=False)
class SchedulerVP(DiscreteVP):
    """``DiscreteVP`` of an SD-style pipeline that knows its scheduler's grid (module docstring).

    ``scheduler`` is the pipeline's scheduler (a copy is configured for every grid)."""

    scheduler: Any = field(default=None, repr=False)
    default_grid = "scheduler"

    @classmethod
    def from_scheduler(cls, scheduler: Any, **kwargs: Any) -> "SchedulerVP":
        return cls(alphas_cumprod=scheduler.alphas_cumprod.clone(), scheduler=scheduler,
                   **kwargs)

    def scheduler_grid(self, steps: int, timesteps: Sequence[float] | None = None,
                       sigmas: Sequence[float] | None = None) -> Tensor:
        """:func:`vp_scheduler_grid` (``sigmas`` are for flow schedulers: refused here)."""
        if sigmas is not None:
            raise ValueError("policy.sigmas is for flow pipelines; an SD-style scheduler takes "
                             "policy.timesteps")
        return vp_scheduler_grid(self.scheduler, self, steps, timesteps)


@dataclass(frozen=True, eq=False)
class SchedulerFlow(FlowSDE):
    """``FlowSDE`` of an SD3/FLUX pipeline, from pure noise (t_max = 1) to data (t_min = 0),
    that knows its scheduler's σ grid (module docstring)."""

    T: float = 1.0
    t_min: float = 0.0
    t_max: float = 1.0  # type: ignore[assignment]
    scheduler: Any = field(default=None, repr=False)
    family: str = "sd3"
    image_seq_len: int = 0
    default_grid = "scheduler"

    def scheduler_grid(self, steps: int, timesteps: Sequence[float] | None = None,
                       sigmas: Sequence[float] | None = None) -> Tensor:
        """:func:`flow_scheduler_grid` (``timesteps`` are for SD-style schedulers: refused)."""
        if timesteps is not None:
            raise ValueError("policy.timesteps is for SD-style (DDIM/DDPM) pipelines; a flow "
                             "scheduler takes policy.sigmas")
        return flow_scheduler_grid(self.scheduler, steps, family=self.family,
                                   image_seq_len=self.image_seq_len, sigmas=sigmas)


__all__ = ["SchedulerFlow", "SchedulerVP", "flow_scheduler_grid", "vp_scheduler_grid"]
