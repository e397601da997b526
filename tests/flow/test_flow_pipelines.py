"""Tiny SD3-style and FLUX-style pipelines as policies: our Euler sampler on the wrapped
transformer reproduces the diffusers pipeline's own latents; save/load; LoRA; exact log-probs."""

from __future__ import annotations

import pytest
import torch

from scorealign.nets.cond import guided
from scorealign.policy.diffusers_sd import add_lora
from scorealign.policy.flow_pipelines import (FlowParts, build_tiny_flux_pipeline,
                                              build_tiny_sd3_pipeline, load_flow_pipeline)
from scorealign.policy.policy import Policy
from scorealign.samplers import sample
from scorealign.samplers.steps import model_time

BUILD = {"sd3": build_tiny_sd3_pipeline, "flux": build_tiny_flux_pipeline}


@pytest.fixture(scope="module", params=["sd3", "flux"])
def parts(request):
    return FlowParts(BUILD[request.param](0), latent_size=8)


def test_euler_on_the_wrapped_transformer_reproduces_the_pipeline(parts):
    pipe, prompts = parts.pipe, ["a cat", "a red car"]
    x_T = torch.randn(2, *parts.shape, generator=torch.Generator().manual_seed(0))
    if parts.family == "sd3":  # real CFG with the empty negative prompt, scale 4.5
        lat = pipe(prompts, num_inference_steps=4, guidance_scale=4.5, height=16, width=16,
                   latents=x_T.clone(), output_type="latent", max_sequence_length=8).images
        scale = 4.5
    else:  # guidance-distilled: guidance embedding 3.5, no CFG (true_cfg_scale = 1)
        packed = pipe._pack_latents(x_T.clone(), 2, *parts.shape)
        lat = pipe(prompts, num_inference_steps=4, guidance_scale=3.5, height=16, width=16,
                   latents=packed, output_type="latent", max_sequence_length=8).images
        lat = pipe._unpack_latents(lat, 16, 16, pipe.vae_scale_factor)
        scale = 1.0
    grid = pipe.scheduler.sigmas.to(torch.float64)  # shift-3 σ's, terminal 0
    cond = parts.encode(prompts)

    def pred(x, t):
        return guided(parts.model, x, t, cond, scale) if scale != 1 else parts.model(x, t, cond)

    with torch.no_grad():
        out = sample(pred, "v", parts.sde, x_T, sampler="euler_ode", steps=4, grid=grid)
    torch.testing.assert_close(out.x0, lat.float(), rtol=1e-4, atol=1e-4)


def test_a_saved_pipeline_loads_back_with_the_same_velocity(parts, tmp_path):
    parts.pipe.save_pretrained(tmp_path)
    again = FlowParts(load_flow_pipeline(str(tmp_path), parts.family), latent_size=8)
    x = torch.randn(2, *parts.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        a = parts.model(x, t, parts.encode(["a", "b"]))
        b = again.model(x, t, again.encode(["a", "b"]))
    assert torch.equal(a, b)


def test_lora_starts_at_the_base_policy_and_trains_only_adapters():
    parts = FlowParts(build_tiny_sd3_pipeline(0), latent_size=8)
    x = torch.randn(2, *parts.shape, generator=torch.Generator().manual_seed(2))
    t, cond = torch.tensor([0.4, 0.9]), parts.encode(["a cat", "a dog"])
    with torch.no_grad():
        before = parts.model(x, t, cond)
    add_lora(parts.pipe.transformer, 4, 8.0, ["to_q", "to_k", "to_v", "to_out.0"])
    trainable = [n for n, p in parts.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    with torch.no_grad():
        assert torch.equal(parts.model(x, t, cond), before)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_pipeline_policy_log_probs_are_exact(family):
    parts = FlowParts(BUILD[family](0), latent_size=8)
    pol = Policy(parts.model, parts.sde, kind="v", shape=parts.shape, sampler="flow_sde",
                 steps=3, eta=0.7, grid="sd3_shift", guidance=2.0, encode=parts.encode)
    traj = pol.rollout(["a cat", "a dog"], k=2, seeds=torch.arange(4))
    assert traj.ts[0] == 1.0  # flow pipelines start at pure noise
    with torch.no_grad():
        assert torch.equal(pol.log_prob(traj), traj.log_probs)
    x = traj.xs[:, 1]
    v = pol.pred_fn(traj.cond)(x, model_time(traj.ts[1].expand(4), x))
    assert v.shape == x.shape
