"""SD-style pipeline policies roll out on the scheduler's own grid: DDIM's integer timesteps with
its final ᾱ, the deterministic rollout is ``pipe(..., eta=0)``, a stochastic step is
``DDIMScheduler.step(..., eta, variance_noise=z)``; explicit grids and ``policy.timesteps``."""

from __future__ import annotations

import pytest
import torch

from scorealign.config import ConfigError, load_config
from scorealign.policy.diffusers_sd import SDParts
from scorealign.policy.policy import Policy
from scorealign.policy.sd import build_tiny_sd_pipeline
from scorealign.rl.config import FinetuneConfig
from scorealign.sde import build_sde

PROMPTS = ["a cat", "a red car"]


@pytest.fixture(scope="module")
def parts():
    return SDParts(build_tiny_sd_pipeline(seed=0))


def _policy(parts, **kw):
    base = dict(kind="eps", shape=parts.shape, sampler="ddim", steps=10, eta=1.0, guidance=5.0,
                encode=parts.encode)
    return Policy(parts.model, parts.sde, **{**base, **kw})


def test_the_default_grid_is_ddims_integer_timesteps_and_final_alpha(parts):
    pol = _policy(parts)
    n = parts.sde.num_timesteps
    # DDIMScheduler(steps_offset=1, leading) at 10 steps: 901, 801, …, 1, then final_alpha_cumprod
    # = alphas_cumprod[0] (set_alpha_to_one=False): the node of timestep 0, t = 1/N
    ks = torch.arange(901, 0, -100, dtype=torch.float64)
    want = torch.cat([(ks + 1) / n, torch.tensor([1.0 / n], dtype=torch.float64)])
    assert torch.equal(pol.ts, want)
    # with set_alpha_to_one the chain ends at ᾱ = 1, t = 0
    from diffusers import DDIMScheduler

    from scorealign.policy.schedule import SchedulerVP
    sched = DDIMScheduler.from_config(parts.pipe.scheduler.config, set_alpha_to_one=True)
    assert float(SchedulerVP.from_scheduler(sched).scheduler_grid(10)[-1]) == 0.0


def test_deterministic_rollout_is_the_pipeline_with_eta_zero(parts):
    pol = _policy(parts)
    seeds = torch.arange(2) + 3
    with torch.no_grad():
        traj = pol.rollout(PROMPTS, 1, seeds=seeds, deterministic=True)
        lat = parts.pipe(PROMPTS, num_inference_steps=10, guidance_scale=5.0, eta=0.0,
                         latents=pol.initial_state(seeds), output_type="latent").images
    assert not bool(traj.stochastic.any()) and bool((traj.log_probs == 0).all())
    # fp64 step arithmetic here, fp32 in DDIMScheduler: agreement to 1e-5 of the latents' scale
    err = (traj.x0 - lat).abs().max() / lat.abs().max()
    assert float(err) < 1e-5, float(err)


def test_stochastic_steps_are_the_schedulers_step_with_the_same_noise(parts):
    pol = _policy(parts, eta=0.8, action_steps="all")
    seeds = torch.arange(2) + 7
    sched = type(parts.pipe.scheduler).from_config(parts.pipe.scheduler.config)
    sched.set_timesteps(10)
    with torch.no_grad():
        traj = pol.rollout(PROMPTS, 1, seeds=seeds)
        z = pol.step_noise(seeds)
        preds = pol.step_preds(traj)
        for k, t in enumerate(sched.timesteps):
            x = traj.xs[:, k]
            theirs = sched.step(preds[k], t, x, eta=0.8, variance_noise=z[k]).prev_sample
            if not bool(traj.stochastic[0, k]):  # the final step (std 0 at ᾱ_final = ᾱ_0)
                continue
            torch.testing.assert_close(traj.xs[:, k + 1], theirs, rtol=1e-5, atol=1e-5)
    assert int(traj.stochastic[0].sum()) >= 9


def test_explicit_timesteps_and_an_explicit_grid(parts):
    ks = [951.0, 700.0, 420.0, 130.0]
    pol = _policy(parts, steps=4, timesteps=ks)
    n = parts.sde.num_timesteps
    want = torch.tensor([(k + 1) / n for k in ks] + [1.0 / n], dtype=torch.float64)
    assert torch.equal(pol.ts, want)
    # the same grid passed as a tensor: the same rollout, bit for bit
    same = _policy(parts, steps=4, grid=want)
    seeds = torch.arange(2)
    with torch.no_grad():
        a, b = pol.rollout(PROMPTS, 1, seeds=seeds), same.rollout(PROMPTS, 1, seeds=seeds)
    assert torch.equal(a.xs, b.xs) and torch.equal(a.log_probs, b.log_probs)
    assert same.steps == 4 and same.grid == "explicit"
    with pytest.raises(ValueError, match="explicit grid has 4 steps"):
        _policy(parts, steps=5, grid=want)
    with pytest.raises(ValueError, match="strictly decreasing"):
        _policy(parts, steps=4, grid=want.flip(0))


def test_digits_policies_keep_the_uniform_grid(unet):
    vp = build_sde("vp")
    pol = Policy(unet, vp, kind="eps", shape=(1, 8, 8), sampler="ddim", steps=6, eta=1.0)
    assert pol.config.grid == "auto"
    from scorealign.samplers import make_grid
    assert torch.equal(pol.ts, make_grid(vp, 6, "uniform"))
    with pytest.raises(ValueError, match="needs a diffusers pipeline"):
        Policy(unet, vp, kind="eps", shape=(1, 8, 8), sampler="ddim", steps=2, eta=1.0,
               timesteps=[900.0, 100.0])


@pytest.mark.parametrize("sets,field,msg", [
    (["policy.steps=3", "policy.timesteps=[900, 500]"], "policy.timesteps", "has 2 values"),
    (["policy.steps=2", "policy.timesteps=[500, 900]"], "policy.timesteps", "decreasing"),
    (["policy.steps=2", "policy.sigmas=[1.5, 0.5]"], "policy.sigmas", r"\(0, 1\]"),
    (["policy.steps=2", "policy.sigmas=[1.0, 0.5]", "policy.timesteps=[900, 100]"],
     "policy.sigmas", "not both"),
    (["policy.steps=2", "policy.sigmas=[1.0, 0.5]", "policy.grid=uniform"], "policy.sigmas",
     "grid"),
])
def test_explicit_lists_are_validated_with_the_field_named(sets, field, msg):
    with pytest.raises(ConfigError, match=field) as e:
        load_config(None, FinetuneConfig, sets)
    assert e.match(msg)
    ok = load_config(None, FinetuneConfig, ["policy.steps=2", "policy.sigmas=[1.0, 0.5]"])
    assert ok.policy.sigmas == [1.0, 0.5] and ok.policy.grid == "auto"


def test_ddpm_scheduler_grid_and_step(parts):
    """DDPMScheduler: its timesteps, then ᾱ = 1 (t = 0); each ancestral step is the policy's
    kernel with the scheduler's own noise draw (``generator``)."""
    from diffusers import DDPMScheduler

    from scorealign.policy.schedule import SchedulerVP
    sched = DDPMScheduler.from_config(parts.pipe.scheduler.config)
    sde = SchedulerVP.from_scheduler(sched)
    pol = Policy(parts.model, sde, kind="eps", shape=parts.shape, sampler="ddpm", steps=5,
                 eta=1.0, guidance=5.0, encode=parts.encode, action_steps="all")
    sched.set_timesteps(5)
    ks = sched.timesteps.double()
    assert torch.equal(pol.ts, torch.cat([(ks + 1) / sde.num_timesteps,
                                          torch.zeros(1, dtype=torch.float64)]))
    with torch.no_grad():
        traj = pol.rollout(PROMPTS, 1, seeds=torch.arange(2))
        steps = pol.kernel_steps(traj, range(5))
        preds = pol.step_preds(traj)
        for k, t in enumerate(sched.timesteps):
            x = traj.xs[:, k]
            theirs = sched.step(preds[k], t, x, generator=torch.Generator().manual_seed(k))
            z = torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
            ours = steps[k].mean + steps[k].std.view(-1, 1, 1, 1) * z if int(t) > 0 \
                else steps[k].mean  # DDPM adds no noise at timestep 0 (our std is 0 there)
            torch.testing.assert_close(ours, theirs.prev_sample, rtol=1e-5, atol=1e-5)
    assert float(traj.stds[0, -1]) == 0.0


def test_a_ddim_spacing_that_skips_nodes_is_refused(parts):
    from diffusers import DDIMScheduler

    from scorealign.policy.schedule import SchedulerVP
    sched = DDIMScheduler.from_config(parts.pipe.scheduler.config, timestep_spacing="linspace")
    sde = SchedulerVP.from_scheduler(sched)
    with pytest.raises(ValueError, match="no chain of states"):
        sde.scheduler_grid(10)
    # explicit timesteps are taken as given, and the rollout may start from given latents
    pol = Policy(parts.model, sde, kind="eps", shape=parts.shape, sampler="ddim", steps=3,
                 eta=1.0, timesteps=[999.0, 500.0, 100.0], encode=parts.encode)
    x_T = pol.initial_state(torch.arange(2) + 9)
    with torch.no_grad():
        a = pol.rollout(PROMPTS, 1, seeds=torch.arange(2) + 9)
        b = pol.rollout(PROMPTS, 1, seeds=torch.arange(2) + 9, x_T=x_T.clone())
    assert torch.equal(a.xs, b.xs)
