"""Flow LoRA runs export in the diffusers LoRA format: ``load_lora_weights`` on the base pipeline
reproduces the trained transformer (SD3-style and FLUX-style tiny pipelines)."""

from types import SimpleNamespace

import pytest
import torch

from scorealign.commands.kind_finetune import export_setup
from scorealign.policy import flow_pipelines as fp
from scorealign.policy.diffusers_sd import add_lora


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_lora_export_reproduces_the_trained_transformer(family, tmp_path):
    build = fp.build_tiny_sd3_pipeline if family == "sd3" else fp.build_tiny_flux_pipeline
    pipe = build(0)
    parts = fp.FlowParts(pipe, latent_size=8)
    add_lora(pipe.transformer, 4, 8.0, ["to_q", "to_k", "to_v", "to_out.0"])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # "train": give every adapter weight a nonzero value
        for n, p in pipe.transformer.named_parameters():
            if "lora_" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    cfg = SimpleNamespace(base=SimpleNamespace(type=f"{family}_tiny", seed=0, path=""),
                          lora=SimpleNamespace(rank=4))
    export_setup(SimpleNamespace(model=parts.model), cfg, tmp_path / "final")

    fresh = build(0)
    fresh.load_lora_weights(tmp_path / "final")
    x = torch.randn(2, *parts.shape, generator=g)
    t = torch.full((2,), 0.6)
    cond = parts.encode(["a cat", "a dog"])
    other = fp.FlowParts(fresh, latent_size=8)
    with torch.no_grad():
        want, got = parts.model(x, t, cond), other.model(x, t, cond)
        plain = fp.FlowParts(build(0), latent_size=8).model(x, t, cond)
    assert not torch.allclose(want, plain, atol=1e-4)  # the adapters change the output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
