"""Samplers: step kernels, time grids, the sampling loop and PF-ODE likelihoods.

Importing this package registers every step in ``SAMPLERS`` / ``CORRECTORS`` (the consistency
step of ``samplers/consistency.py`` included) and every grid in ``GRIDS``. See docs/conventions.md.
"""

from scorealign.samplers import consistency as _consistency  # noqa: F401  (registers)
from scorealign.samplers.grids import GRIDS, make_grid
from scorealign.samplers.kernel import GaussianStep, gaussian_log_prob
from scorealign.samplers.loop import SampleResult, sample
from scorealign.samplers.steps import (
    CORRECTORS, SAMPLERS, ddim_step, ddpm_step, euler_maruyama_step, euler_ode_step,
    heun_ode_step, heun_sde_step, langevin_corrector_step, pf_ode_velocity, posterior_var,
)
from scorealign.samplers import flow  # noqa: E402,F401  (registers flow_sde, flow_cps, ...)

__all__ = [
    "GRIDS", "make_grid", "GaussianStep", "gaussian_log_prob", "SampleResult", "sample",
    "CORRECTORS", "SAMPLERS", "ddim_step", "ddpm_step", "euler_maruyama_step", "euler_ode_step",
    "heun_ode_step", "heun_sde_step", "langevin_corrector_step", "pf_ode_velocity",
    "posterior_var",
]
