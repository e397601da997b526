"""Diffusion-DPO on the tiny SD-shaped diffusers pipeline (offline, random weights)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("scorealign.policy.sd")
from scorealign.policy.sd import build_tiny_sd_pipeline  # noqa: E402
from scorealign.preference.sd_dpo import SDDiffusionDPO  # noqa: E402

PROMPTS = ["a red square", "a blue circle"]


def _images(seed):
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("mode", ["frozen", "lora_disabled"])
def test_log2_at_init_and_one_step_raises_the_margin(mode):
    pipe = build_tiny_sd_pipeline(seed=0)
    if mode == "lora_disabled":
        params = SDDiffusionDPO.add_lora(pipe, r=2)
    else:
        params = list(pipe.unet.parameters())
    dpo = SDDiffusionDPO(pipe, reference=mode, beta=50.0)
    x_w, x_l = _images(1), _images(2)
    out = dpo.loss(x_w, x_l, PROMPTS, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.losses, torch.full((2,), math.log(2.0)))
    out.losses.mean().backward()
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    opt = torch.optim.SGD(params, lr=1e-2 if mode == "lora_disabled" else 1e-3)
    opt.step()
    after = dpo.loss(x_w, x_l, PROMPTS, torch.Generator().manual_seed(0))
    assert float((after.logratio_w - after.logratio_l).mean()) > 0
    assert float(after.losses.detach().mean()) < math.log(2.0)


def test_lora_disabled_reference_is_the_base_unet():
    pipe = build_tiny_sd_pipeline(seed=0)
    base = build_tiny_sd_pipeline(seed=0).unet
    SDDiffusionDPO.add_lora(pipe, r=2)
    for n, p in pipe.unet.named_parameters():  # move the adapters away from zero
        if "lora_B" in n:
            p.data.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    dpo = SDDiffusionDPO(pipe, reference="lora_disabled")
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([10, 500])
    hidden = dpo.text(PROMPTS)
    with torch.no_grad():
        with dpo._ref_ctx():
            ref = dpo.errors(pipe.unet, z, z, t, z, hidden)[0]
        want = dpo.errors(base, z, z, t, z, hidden)[0]
        pol = dpo.errors(pipe.unet, z, z, t, z, hidden)[0]
    torch.testing.assert_close(ref, want)
    assert not torch.allclose(pol, want)


def test_latents_are_posterior_samples_and_beta_is_the_authors_5000():
    # SalesforceAIResearch/DiffusionDPO train.py: vae.encode(...).latent_dist.sample(), and
    # --beta_dpo 5000 (default and both launchers); the posterior mean was used here before.
    pipe = build_tiny_sd_pipeline(seed=0)
    dpo = SDDiffusionDPO(pipe)
    assert dpo.beta == 5000.0
    x = _images(1)
    with torch.no_grad():
        dist = pipe.vae.encode(x).latent_dist
    a = dpo.latents(x, torch.Generator().manual_seed(1))
    b = dpo.latents(x, torch.Generator().manual_seed(1))
    c = dpo.latents(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    eps = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(1))
    want = (dist.mean + dist.std * eps) * pipe.vae.config.scaling_factor
    torch.testing.assert_close(a, want)
    assert (a - dist.mean * pipe.vae.config.scaling_factor).abs().max() > 1e-4
