"""SD3/FLUX pipeline policies train on the trajectories the pipelines run: the default grid is the
scheduler's σ's (shift 3 for SD3.5, FLUX's dynamic shift from the image sequence length, ending
at 0), the deterministic rollout is ``pipe(..., output_type="latent")``, and the stochastic steps
and their log-probs are flow_grpo's ``sde_step_with_logprob`` written out; the named grids match
flow_grpo's and DanceGRPO's schedules at 10 and 40 steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scorealign.policy.flow_pipelines import (FlowParts, build_tiny_flux_pipeline,
                                              build_tiny_sd3_pipeline)
from scorealign.policy.policy import Policy
from scorealign.policy.schedule import SchedulerFlow

BUILD = {"sd3": build_tiny_sd3_pipeline, "flux": build_tiny_flux_pipeline}
PROMPTS = ["a cat", "a red car"]


@pytest.fixture(scope="module", params=["sd3", "flux"])
def parts(request):
    return FlowParts(BUILD[request.param](0), latent_size=8)


def _policy(parts, **kw):
    # SD3.5: CFG 4.5 with the empty prompt; FLUX.1-dev: guidance embedding 3.5, no CFG
    g = 4.5 if parts.family == "sd3" else 1.0
    base = dict(kind="v", shape=parts.shape, sampler="flow_sde", steps=10, eta=0.7, guidance=g,
                encode=parts.encode)
    return Policy(parts.model, parts.sde, **{**base, **kw})


def _pipe_latents(parts, x_T, steps):
    pipe = parts.pipe
    if parts.family == "sd3":
        return pipe(PROMPTS, num_inference_steps=steps, guidance_scale=4.5, height=16, width=16,
                    latents=x_T.clone(), output_type="latent", max_sequence_length=8).images
    packed = pipe._pack_latents(x_T.clone(), x_T.shape[0], *parts.shape)
    lat = pipe(PROMPTS, num_inference_steps=steps, guidance_scale=3.5, height=16, width=16,
               latents=packed, output_type="latent", max_sequence_length=8).images
    return pipe._unpack_latents(lat, 16, 16, pipe.vae_scale_factor)


def test_deterministic_rollout_is_the_pipeline(parts):
    pol = _policy(parts)
    seeds = torch.arange(2) + 1
    with torch.no_grad():
        traj = pol.rollout(PROMPTS, 1, seeds=seeds, deterministic=True)
        lat = _pipe_latents(parts, pol.initial_state(seeds), 10)
    # the grid is the one the pipeline just ran on, and it ends at 0
    assert torch.equal(pol.ts, parts.pipe.scheduler.sigmas.double())
    assert float(pol.ts[0]) == 1.0 and float(pol.ts[-1]) == 0.0
    torch.testing.assert_close(traj.x0, lat.float(), rtol=0, atol=1e-5)


# yifan123/flow_grpo flow_grpo/diffusers_patch/sd3_sde_with_logprob.py (index commit 54809b5),
# sde_step_with_logprob, written out for one step (sigma, sigma_prev, sigma_max = sigmas[1]):
# prev_sample given → its log-prob; else drawn with variance_noise = noise.
def _flow_grpo_step(model_output, sample, sigma, sigma_prev, sigma_max, noise_level, sde_type,
                    prev_sample=None, noise=None):
    dt = sigma_prev - sigma
    if sde_type == "sde":
        std_dev_t = math.sqrt(sigma / (1 - (sigma_max if sigma == 1 else sigma))) * noise_level
        mean = sample * (1 + std_dev_t**2 / (2 * sigma) * dt) + \
            model_output * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
        if prev_sample is None:
            prev_sample = mean + std_dev_t * math.sqrt(-dt) * noise
        std = std_dev_t * math.sqrt(-dt)
        log_prob = (-((prev_sample - mean) ** 2) / (2 * std**2) - math.log(std)
                    - math.log(math.sqrt(2 * math.pi)))
    else:  # 'cps'
        std_dev_t = sigma_prev * math.sin(noise_level * math.pi / 2)
        x0 = sample - sigma * model_output
        x1 = sample + model_output * (1 - sigma)
        mean = x0 * (1 - sigma_prev) + x1 * math.sqrt(sigma_prev**2 - std_dev_t**2)
        if prev_sample is None:
            prev_sample = mean + std_dev_t * noise
        log_prob = -((prev_sample - mean) ** 2)  # "remove all constants"
    return prev_sample, log_prob.flatten(1).mean(1), mean, std_dev_t


@pytest.mark.parametrize("sampler", ["flow_sde", "flow_cps"])
def test_stochastic_steps_and_log_probs_are_flow_grpos(parts, sampler):
    pol = _policy(parts, sampler=sampler, action_steps="all")
    seeds = torch.arange(2) + 4
    d = math.prod(parts.shape)
    kind = "sde" if sampler == "flow_sde" else "cps"
    with torch.no_grad():
        traj = pol.rollout(PROMPTS, 1, seeds=seeds)
        z = pol.step_noise(seeds).double()
        preds = pol.step_preds(traj)
    ts = [float(t) for t in traj.ts]
    checked = 0
    for k in range(traj.num_steps):
        if not bool(traj.stochastic[0, k]):
            continue  # CPS's last step: std t'·sin(aπ/2) = 0 at t' = 0
        v, x = preds[k].double(), traj.xs[:, k].double()
        prev, _, _, _ = _flow_grpo_step(v, x, ts[k], ts[k + 1], ts[1], 0.7, kind, noise=z[k])
        torch.testing.assert_close(traj.xs[:, k + 1].double(), prev, rtol=0, atol=2e-5)
        # the log-prob of the recorded transition, per dimension (algo.ratio_units=per_dim):
        # flow_sde the exact Gaussian, flow_cps the authors' −mean (x' − μ)² (log_prob_units)
        _, lp, _, _ = _flow_grpo_step(v, x, ts[k], ts[k + 1], ts[1], 0.7, kind,
                                      prev_sample=traj.xs[:, k + 1].double())
        torch.testing.assert_close(traj.log_probs[:, k].double() / d, lp, rtol=1e-4, atol=1e-6)
        checked += 1
    assert checked >= traj.num_steps - 1


def _flow_grpo_sd3_sigmas(steps: int, shift: float = 3.0, n_train: int = 1000) -> np.ndarray:
    """flow_grpo's SD3 schedule: sd3_pipeline_with_logprob.py (ac4c86e) lines 119-127 call
    ``retrieve_timesteps(self.scheduler, num_inference_steps, device, sigmas=None)`` on SD3.5's
    ``FlowMatchEulerDiscreteScheduler(shift=3)``; its ``set_timesteps`` written out: σ_max = 1,
    σ_min = shift(1/N) (the __init__'s training σ's), linspace of the timesteps, shift, then 0."""
    def sh(s):
        return shift * s / (1 + (shift - 1) * s)
    sig_min = sh(1.0 / n_train)
    t = np.linspace(1.0 * n_train, sig_min * n_train, steps) / n_train
    return np.append(sh(t.astype(np.float32)).astype(np.float32), 0.0)


def _dance_grpo_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    """XueZeyue/DanceGRPO fastvideo/train_grpo_flux.py (15cc71d): lines 127-128
    ``sd3_time_shift(shift, t) = (shift * t) / (1 + (shift - 1) * t)`` and lines 311-313
    ``sigma_schedule = sd3_time_shift(args.shift, torch.linspace(1, 0, args.sampling_steps + 1))``
    (scripts/finetune/finetune_flux_grpo.sh: --shift 3)."""
    t = torch.linspace(1, 0, steps + 1)
    return (shift * t) / (1 + (shift - 1) * t)


@pytest.mark.parametrize("steps", [10, 40])
def test_grid_parity_with_flow_grpo_and_dance_grpo(steps):
    sd3 = FlowParts(build_tiny_sd3_pipeline(0), latent_size=8)
    pol = Policy(sd3.model, sd3.sde, kind="v", shape=sd3.shape, sampler="flow_sde", steps=steps)
    np.testing.assert_allclose(pol.ts.numpy(), _flow_grpo_sd3_sigmas(steps), rtol=0, atol=2e-7)
    # at 10 steps the old sd3_shift-from-uniform grid was up to 0.24 off and ended at 1e-3
    # DanceGRPO: the named grid sd3_shift on a pipeline's SDE (t from 1 to 0)
    dance = Policy(sd3.model, sd3.sde, kind="v", shape=sd3.shape, sampler="dance_sde",
                   eta=0.3, steps=steps, grid="sd3_shift")
    torch.testing.assert_close(dance.ts.float(), _dance_grpo_sigmas(steps), rtol=0, atol=2e-7)
    if steps == 10:
        assert float((pol.ts - dance.ts).abs().max()) > 0.1  # two different schedules


def _flux_sigmas(steps: int, image_seq_len: int) -> np.ndarray:
    """diffusers FluxPipeline.__call__ (0.42) written out with FLUX.1-dev's scheduler config:
    σ = linspace(1, 1/S, S), μ = calculate_shift(L) = L·m + b with m = (1.15 − 0.5)/(4096 − 256),
    b = 0.5 − 256 m, exponential time shift e^μ / (e^μ + (1/σ − 1)), then 0."""
    s = np.linspace(1.0, 1 / steps, steps).astype(np.float32)
    m = (1.15 - 0.5) / (4096 - 256)
    mu = image_seq_len * m + (0.5 - m * 256)
    shifted = math.exp(mu) / (math.exp(mu) + (1 / s - 1) ** 1.0)
    return np.append(shifted.astype(np.float32), 0.0)


@pytest.mark.parametrize("steps,latent", [(10, 8), (40, 8), (10, 64), (40, 64)])
def test_flux_dynamic_shift_follows_the_image_sequence_length(steps, latent):
    flux = build_tiny_flux_pipeline(0)
    sde = FlowParts(flux, latent_size=latent).sde
    assert isinstance(sde, SchedulerFlow) and sde.image_seq_len == (latent // 2) ** 2
    ts = sde.scheduler_grid(steps)
    np.testing.assert_allclose(ts.numpy(), _flux_sigmas(steps, (latent // 2) ** 2), rtol=0,
                               atol=2e-6)


def test_explicit_sigmas_are_shifted_as_pipe_sigmas(parts):
    sig = [1.0, 0.75, 0.5, 0.25]
    pol = _policy(parts, steps=4, sigmas=sig)
    sched = type(parts.pipe.scheduler).from_config(parts.pipe.scheduler.config)
    kw = {"mu": float(np.log(1.0))} if parts.family == "flux" else {}
    if parts.family == "flux":  # the pipeline's μ for 4×4 packed tokens
        m = (1.15 - 0.5) / (4096 - 256)
        kw["mu"] = 16 * m + (0.5 - m * 256)
    sched.set_timesteps(sigmas=sig, **kw)
    assert torch.equal(pol.ts, sched.sigmas.double())
    with pytest.raises(ValueError, match="policy.timesteps is for SD-style"):
        _policy(parts, steps=2, timesteps=[900.0, 100.0])
