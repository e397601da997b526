"""A tiny Stable-Diffusion-shaped pipeline built from configs, offline (no hub files).

``build_tiny_sd_pipeline(seed)`` returns a diffusers ``StableDiffusionPipeline`` whose parts have
the shapes of SD 1.x in miniature: a cross-attention ``UNet2DConditionModel`` on 4-channel
latents, an ``AutoencoderKL`` (16×16 RGB ↔ 4×8×8 latents), a ``CLIPTextModel`` and a
``CLIPTokenizer`` whose byte-level vocabulary (256 bytes, their end-of-word forms and the two
specials, no merges) is written to a temporary directory, plus SD's ``DDIMScheduler`` settings.
Weights are random, drawn under ``seed`` without touching the caller's global RNG stream. It is
the test and benchmark stand-in for SD 1.5 (TRL used ``hf-internal-testing/tiny-stable-diffusion-
torch`` for the same purpose; that needs the hub).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

MAX_PROMPT_TOKENS = 32  # model_max_length of the tokenizer = CLIP position embeddings


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode map (the alphabet of byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_clip_tokenizer(max_length: int = MAX_PROMPT_TOKENS):
    """A ``CLIPTokenizer`` over single bytes (no merges), built from files written locally."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as d:
        vocab, merges = Path(d) / "vocab.json", Path(d) / "merges.txt"
        vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        merges.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=max_length)


def _seeded(seed: int, build):
    """``build()`` under ``torch.manual_seed(seed)`` inside a forked RNG (caller's stream kept)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# UNet/VAE/text-encoder sizes: "tiny" is the test stand-in; "compute" an SD-shaped UNet large
# enough that the network dominates an RL epoch on CPU (32×32×4 latents, channels 64–128);
# "sd15" SD 1.5's UNet (860M parameters, 64×64×4 latents, cross-attention 768) for GPU benchmarks
# with a small text encoder and VAE of matching widths (UNet config from
# runwayml/stable-diffusion-v1-5 unet/config.json).
def _size(latent: int, channels: tuple[int, int], groups: int, width: int,
          attn_first: bool, vae_size: int, heads: int | tuple[int, int] = 8) -> dict:
    """A two-level SD-shaped size: UNet with one cross-attention level (the first or the
    second), CLIP text encoder of hidden size ``width``, VAE 32–64 for ``vae_size`` images.
    ``heads``: attention heads per level (diffusers' legacy ``attention_head_dim`` of
    ``UNet2DConditionModel`` is the head count; SD 1.5 has 8, i.e. head dim 40–160)."""
    down = ("CrossAttnDownBlock2D", "DownBlock2D") if attn_first else \
        ("DownBlock2D", "CrossAttnDownBlock2D")
    up = ("UpBlock2D", "CrossAttnUpBlock2D") if attn_first else \
        ("CrossAttnUpBlock2D", "UpBlock2D")
    return dict(unet=dict(sample_size=latent, layers_per_block=1, block_out_channels=channels,
                          norm_num_groups=groups, cross_attention_dim=width,
                          attention_head_dim=heads, down_block_types=down, up_block_types=up),
                text=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                          num_attention_heads=4),
                vae=dict(block_out_channels=(32, 64), sample_size=vae_size))


SIZES = {
    "tiny": _size(8, (32, 64), 8, 32, attn_first=False, vae_size=16),
    "compute": _size(32, (64, 128), 32, 64, attn_first=True, vae_size=64),
    # "compute" with head dim 32 (2 and 4 heads) instead of 8: nearer SD 1.5's 40
    "compute_hd32": _size(32, (64, 128), 32, 64, attn_first=True, vae_size=64, heads=(2, 4)),
    "sd15": dict(unet=dict(sample_size=64, layers_per_block=2,
                           block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32,
                           cross_attention_dim=768, attention_head_dim=8,
                           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                             "CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D",
                                           "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
                 text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=2,
                           num_attention_heads=12),
                 vae=dict(block_out_channels=(32, 64), sample_size=128)),
}


def build_tiny_sd_pipeline(seed: int = 0, size: str = "tiny"):
    """A random-weight SD-1.x-shaped ``StableDiffusionPipeline``.

    Args:
        seed: seed of every component's initialization.
        size: ``"tiny"`` (16×16 images, 8×8 latents: tests), ``"compute"`` (64×64 images,
            32×32 latents, UNet channels 64–128: CPU benchmarks; ``"compute_hd32"`` the same
            with attention head dim 32 instead of 8) or ``"sd15"`` (SD 1.5's UNet,
            64×64 latents: GPU benchmarks); see :data:`SIZES`.
    Returns:
        ``StableDiffusionPipeline`` in eval mode, no safety checker, ``DDIMScheduler`` with SD's
        ``scaled_linear`` betas (0.00085 → 0.012, 1000 steps).
    """
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    if size not in SIZES:
        raise ValueError(f"unknown pipeline size {size!r}; choose one of {sorted(SIZES)}")
    sz = SIZES[size]
    tokenizer = build_clip_tokenizer()
    text_cfg = CLIPTextConfig(vocab_size=len(tokenizer), **sz["text"],
                              max_position_embeddings=MAX_PROMPT_TOKENS,
                              bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id, projection_dim=32)
    text_encoder = _seeded(seed, lambda: CLIPTextModel(text_cfg))
    unet = _seeded(seed + 1, lambda: UNet2DConditionModel(in_channels=4, out_channels=4,
                                                          **sz["unet"]))
    vae = _seeded(seed + 2, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), **sz["vae"]))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    for m in (unet, vae, text_encoder):
        m.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
