"""Memory and speed options of the SD adapter (``SDParts``): bf16 networks with fp32 log-probs,
gradient checkpointing, cached prompt embeddings, torch.compile, and the pipeline sizes."""

from __future__ import annotations

import pytest
import torch

from scorealign.policy.diffusers_sd import SDParts, add_lora
from scorealign.policy.policy import Policy
from scorealign.policy.sd import build_tiny_sd_pipeline

LORA = dict(rank=4, alpha=4.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"])


def _policy(parts):
    return Policy(parts.model, parts.sde, kind="eps", shape=parts.shape, sampler="ddim",
                  steps=4, eta=1.0, guidance=5.0, encode=parts.encode)


def _nudge_lora(unet, seed=1):
    """Give LoRA's B a non-zero value so the adapters matter (B = 0 at init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def test_bf16_network_keeps_fp32_log_probs_and_on_policy_ratio_exactly_one():
    parts = SDParts(build_tiny_sd_pipeline(0), dtype="bfloat16")
    unet = parts.pipe.unet
    add_lora(unet, **LORA)
    _nudge_lora(unet)
    assert unet.conv_in.weight.dtype == torch.bfloat16
    lora = [p for n, p in unet.named_parameters() if p.requires_grad]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    pol = _policy(parts)
    with torch.no_grad():
        traj = pol.rollout(["a cat", "a red car"], k=2, seeds=torch.arange(4))
    assert traj.log_probs.dtype == torch.float32 and traj.xs.dtype == torch.float32
    logp = pol.log_prob(traj)  # the training recompute, with the graph
    assert logp.dtype == torch.float32
    assert torch.equal(logp.detach(), traj.log_probs)
    ratio = torch.exp(logp - traj.log_probs)
    assert torch.equal(ratio.detach(), torch.ones_like(ratio))
    ratio.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora)
    # bf16 is a different policy from fp32 (not silently upcast), but close to it
    ref = _policy(SDParts(build_tiny_sd_pipeline(0)))
    add_lora(ref.model.unet, **LORA)
    _nudge_lora(ref.model.unet)
    with torch.no_grad():
        lp32 = ref.log_prob(traj)
    assert not torch.equal(lp32, traj.log_probs)
    rel = (lp32 - traj.log_probs).abs().max() / traj.log_probs.abs().max()
    assert 0 < rel < 0.05


def _lora_grads(**kw):
    parts = SDParts(build_tiny_sd_pipeline(0), **kw)
    add_lora(parts.pipe.unet, **LORA)
    _nudge_lora(parts.pipe.unet)
    parts.pipe.unet.train()
    pol = _policy(parts)
    with torch.no_grad():
        traj = pol.rollout(["a cat", "a dog"], k=1, seeds=torch.arange(2))
    pol.log_prob(traj).sum().backward()
    return {n: p.grad for n, p in parts.pipe.unet.named_parameters() if p.requires_grad}, parts


def test_gradient_checkpointing_gives_the_same_gradient():
    plain, _ = _lora_grads()
    ckpt, parts = _lora_grads(gradient_checkpointing=True)
    assert parts.pipe.unet.is_gradient_checkpointing
    assert plain.keys() == ckpt.keys()
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-7)


def test_cached_prompt_embeddings_equal_fresh_ones_and_encode_once():
    pipe = build_tiny_sd_pipeline(0)
    fresh = SDParts(pipe)
    cached = SDParts(pipe, cache_prompts=True)
    prompts = ["a cat", "a dog", "a cat", "a tree"]
    calls = cached.encoder_calls
    e1 = cached.encode(prompts).text_emb
    e2 = cached.encode(prompts[::-1]).text_emb
    assert cached.encoder_calls == calls + 1  # 3 new prompts in one call; then none
    torch.testing.assert_close(e1, fresh.encode(prompts).text_emb, rtol=0, atol=0)
    torch.testing.assert_close(e2, e1.flip(0), rtol=0, atol=0)


def test_compiled_unet_matches_eager_and_keeps_parameter_names():
    parts = SDParts(build_tiny_sd_pipeline(0), compile="eager")
    eager = SDParts(build_tiny_sd_pipeline(0))
    assert [n for n, _ in parts.model.named_parameters()] == \
        [n for n, _ in eager.model.named_parameters()]
    x = torch.randn(2, *parts.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.9, 0.3])
    cond = parts.encode(["a cat", "a dog"])
    with torch.no_grad():
        torch.testing.assert_close(parts.model(x, t, cond), eager.model(x, t, cond),
                                   rtol=1e-5, atol=1e-6)


def test_pipeline_sizes_and_bad_dtype():
    pipe = build_tiny_sd_pipeline(0, size="compute")
    parts = SDParts(pipe)
    assert parts.shape == (4, 32, 32)
    assert tuple(pipe.unet.config.block_out_channels) == (64, 128)
    with torch.no_grad():
        img = parts.decode(torch.zeros(1, *parts.shape))
    assert img.shape == (1, 3, 64, 64)
    # head dim = channels / heads (diffusers' attention_head_dim is the head count): 8 and 32
    attn = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attn.heads == 8 and attn.inner_dim // attn.heads == 8
    hd32 = build_tiny_sd_pipeline(0, size="compute_hd32").unet
    attn = hd32.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attn.heads == 2 and attn.inner_dim // attn.heads == 32
    with pytest.raises(ValueError, match="unknown pipeline size"):
        build_tiny_sd_pipeline(0, size="xl")
    with pytest.raises(ValueError, match="dtype"):
        SDParts(build_tiny_sd_pipeline(0), dtype="int8")
