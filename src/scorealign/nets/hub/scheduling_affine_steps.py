"""A diffusers scheduler that replays a fixed sequence of affine Gaussian sampler steps.

Every step of the samplers ddim (any η), ddpm, euler_ode and euler_maruyama, for any SDE with a
Gaussian marginal and any prediction kind (eps, x0, v, score), is affine in the state and the
network's prediction given the step's two times:

    x_{i+1} = A_i x_i + B_i pred(x_i, t_i) + σ_i z_i,   z_i ~ N(0, I)

[Song+21a DDIM, Eq. 12, 16; Ho+20 DDPM, Eq. 6-7; Song+21 score SDE, Eq. 6, 13]. The exporter
reads (A_i, B_i, σ_i) off the sampler's own step at each grid pair (t_i, t_{i+1}) and writes them
with the grid into ``scheduler_config.json``; :meth:`step` applies them with the same two fused
fp32 operations as the sampler's fast path, so the same latents and noise give the same sample.
The network's timestep at step i is ``times[i] * time_scale`` (``timesteps[i]``).

This file imports only torch and diffusers (it is shipped inside exported pipelines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput


@dataclass
class AffineStepSchedulerOutput(BaseOutput):
    """``prev_sample``: x_{i+1}."""

    prev_sample: torch.Tensor


class AffineStepScheduler(SchedulerMixin, ConfigMixin):
    """x_{i+1} = A_i x_i + B_i pred + σ_i z over a recorded grid (module docstring).

    Args:
        times: the grid t_0 > … > t_S (S + 1 floats, the SDE's time, data at 0).
        coef_x, coef_pred, noise_std: A_i, B_i, σ_i for the S steps.
        time_scale: network timestep = t · time_scale.
        prediction_type: what the network predicts (eps, x0, v, score); informative only, the
            coefficients already account for it.
        init_noise_sigma: standard deviation of the prior the latents are drawn from.
        sampler: the sampler the coefficients were read from (informative).
        stochastic: whether the sampler draws z_i at every step (also where σ_i = 0), so that a
            generator gives the same stream of draws as the sampler.
    """

    order = 1

    @register_to_config
    def __init__(self, times: List[float] = (1.0, 0.0), coef_x: List[float] = (0.0,),
                 coef_pred: List[float] = (1.0,), noise_std: List[float] = (0.0,),
                 time_scale: float = 1000.0, prediction_type: str = "eps",
                 init_noise_sigma: float = 1.0, sampler: str = "ddim", stochastic: bool = False):
        steps = len(times) - 1
        if steps < 1 or not (len(coef_x) == len(coef_pred) == len(noise_std) == steps):
            raise ValueError(f"need S + 1 times and S coefficients each; got {len(times)} times, "
                             f"{len(coef_x)}, {len(coef_pred)}, {len(noise_std)} coefficients")
        self.init_noise_sigma = float(init_noise_sigma)
        self.num_inference_steps = steps
        self.times = torch.tensor([float(t) for t in times], dtype=torch.float64)
        self.timesteps = self.model_times(torch.float32)

    def model_times(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """t_0 … t_{S-1} in ``dtype`` (the times the sampler hands the network)."""
        return self.times[:-1].to(dtype)

    def set_timesteps(self, num_inference_steps: Optional[int] = None,
                      device: Optional[torch.device] = None) -> None:
        """The grid is fixed at export: ``num_inference_steps`` must be None or S."""
        steps = len(self.config.times) - 1
        if num_inference_steps not in (None, steps):
            raise ValueError(f"this scheduler replays the exported grid of {steps} steps; "
                             f"got num_inference_steps={num_inference_steps}")
        self.timesteps = self.model_times(torch.float32).to(device or "cpu")

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Unchanged (the network sees x_t as is)."""
        return sample

    def step(self, model_output: torch.Tensor, step_index: int, sample: torch.Tensor,
             noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
             return_dict: bool = True):
        """x_{i+1} = A_i x + B_i pred + σ_i z for step ``step_index`` (an int in [0, S)).

        ``noise``: z (shape of ``sample``); drawn from ``generator`` when the sampler is
        stochastic and none is given. Computed in fp32 (fp64 for fp64 samples) with the
        coefficients as host numbers: mean = x·A + B·pred, then mean + σ·z.
        """
        i = int(step_index)
        a = float(self.config.coef_x[i])
        b = float(self.config.coef_pred[i])
        std = float(self.config.noise_std[i])
        dt = torch.float64 if sample.dtype == torch.float64 else torch.float32
        xd = sample.to(dt)
        mean = torch.add(xd if a == 1.0 else xd * a, model_output.to(dt), alpha=b)
        if noise is None and self.config.stochastic:
            noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype,
                                device=sample.device)
        if noise is not None and std != 0.0:
            mean = torch.add(mean, noise.to(dt), alpha=std)
        prev = mean.to(sample.dtype)
        if not return_dict:
            return (prev,)
        return AffineStepSchedulerOutput(prev_sample=prev)

    def __len__(self) -> int:
        return len(self.config.times) - 1
