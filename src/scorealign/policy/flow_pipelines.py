r"""Flow-matching transformer pipelines (SD3-style, FLUX-style) as ``model(x, t, cond)`` policies.

Two adapters make a diffusers flow pipeline speak scorealign's convention — velocity
prediction v = ε − x_0 on the linear interpolant x_t = (1 − t) x_0 + t ε (``sde.flow.FlowSDE``):

* :class:`SD3Velocity` wraps ``SD3Transformer2DModel``: the pipeline's time is
  ``FlowMatchEulerDiscreteScheduler``'s σ = t and the transformer's timestep is σ·1000, as in
  ``StableDiffusion3Pipeline.__call__`` (``timestep = t.expand(...)`` with ``scheduler.timesteps =
  sigmas · num_train_timesteps``); its output is the velocity ε − x_0 of the scheduler's Euler
  step x' = x + (σ' − σ) v [Esser+24 SD3, §2 (rectified flow, v = ε − x_0)].
* :class:`FluxVelocity` wraps ``FluxTransformer2DModel``: latents [C, H, W] are packed into
  2×2 patches (``FluxPipeline._pack_latents``), the transformer gets ``timestep = σ`` (FLUX
  multiplies by 1000 inside) and, for guidance-distilled models, the guidance embedding
  (``guidance_scale``, FLUX.1-dev default 3.5) [Black Forest Labs FLUX.1; diffusers
  ``FluxPipeline.__call__``].

Text conditioning uses the pipeline's own ``encode_prompt`` (two CLIPs, optional T5 for SD3;
CLIP + T5 for FLUX). The token embeddings and the pooled embedding travel in one ``Cond.text_emb``
of shape ``[B, L + 1, E]``: row ``L`` holds the pooled vector, zero-padded to E. A ``null`` row
uses the empty prompt's embedding, so classifier-free guidance is ``nets.cond.guided``
[Ho & Salimans 22]. LoRA adapters come from peft (``policy.diffusers_sd.add_lora``).

``build_tiny_sd3_pipeline`` / ``build_tiny_flux_pipeline`` assemble miniature pipelines from
configs with seeded random weights (no hub files), the CPU stand-ins of SD3.5 and FLUX.1;
``load_flow_pipeline`` loads a real one from a local directory or hub id with the same code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scorealign.nets.cond import Cond
from scorealign.policy.schedule import SchedulerFlow
from scorealign.policy.sd import _seeded, build_clip_tokenizer
from scorealign.sde.flow import FlowSDE

TEXT_TOKENS = 8  # T5 max_sequence_length of the tiny pipelines (SD3 default 256, FLUX 512)
# FLUX.1-dev's default guidance scale (diffusers FluxPipeline.__call__: guidance_scale=3.5).
FLUX_GUIDANCE = 3.5
# FLUX.1-dev's scheduler (black-forest-labs/FLUX.1-dev scheduler/scheduler_config.json):
# FlowMatchEulerDiscreteScheduler with the resolution-dependent (dynamic, exponential) shift.
FLUX_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096)


def _pack_pooled(tokens: Tensor, pooled: Tensor) -> Tensor:
    """``[B, L, E]`` + ``[B, P]`` (P ≤ E) → ``[B, L + 1, E]`` with the pooled row last."""
    e = tokens.shape[-1]
    if pooled.shape[-1] > e:
        raise ValueError(f"pooled dim {pooled.shape[-1]} exceeds the token dim {e}")
    row = torch.nn.functional.pad(pooled, (0, e - pooled.shape[-1]))
    return torch.cat([tokens, row[:, None].to(tokens.dtype)], 1)


class _FlowVelocity(nn.Module):
    """Shared part: ``cond`` → (token embeddings, pooled) with the null embedding for CFG."""

    kind = "v"

    def __init__(self, transformer: nn.Module, null_emb: Tensor, pooled_dim: int):
        super().__init__()
        self.transformer, self.pooled_dim = transformer, pooled_dim
        self.register_buffer("null_emb", null_emb.detach().clone(), persistent=False)

    def _embeds(self, cond: Cond | None, b: int, device) -> tuple[Tensor, Tensor]:
        if cond is None:
            emb = self.null_emb.expand(b, -1, -1)
        else:
            emb = torch.where(cond.null_mask()[:, None, None].to(device),
                              self.null_emb.to(cond.text_emb.dtype), cond.text_emb)
        emb = emb.to(device)
        return emb[:, :-1], emb[:, -1, :self.pooled_dim]


class SD3Velocity(_FlowVelocity):
    """``SD3Transformer2DModel`` → ``model(x, t, cond) -> v`` with x the latents [B, C, H, W]."""

    def forward(self, x: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        tokens, pooled = self._embeds(cond, x.shape[0], x.device)
        dtype = self.transformer.dtype
        out = self.transformer(hidden_states=x.to(dtype), timestep=(t * 1000).to(dtype),
                               encoder_hidden_states=tokens.to(dtype),
                               pooled_projections=pooled.to(dtype), return_dict=False)[0]
        return out.to(x.dtype)


class FluxVelocity(_FlowVelocity):
    """``FluxTransformer2DModel`` → ``model(x, t, cond) -> v`` on unpacked latents [B, C, H, W].

    Args:
        guidance: the guidance-embedding scale of guidance-distilled models (ignored when the
            transformer has no guidance embedding).
    """

    def __init__(self, transformer: nn.Module, null_emb: Tensor, pooled_dim: int,
                 guidance: float = FLUX_GUIDANCE):
        super().__init__(transformer, null_emb, pooled_dim)
        self.guidance = guidance

    def forward(self, x: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        from diffusers import FluxPipeline

        b, c, h, w = x.shape
        t = t.expand(b) if t.dim() == 0 else t
        tokens, pooled = self._embeds(cond, b, x.device)
        dtype = self.transformer.dtype
        packed = FluxPipeline._pack_latents(x.to(dtype), b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, dtype)
        txt_ids = torch.zeros(tokens.shape[1], 3, device=x.device, dtype=dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance, device=x.device, dtype=torch.float32)
        # FluxPipeline.__call__ hands the transformer ``timestep / 1000`` with timestep = σ·1000
        # (the scheduler's timesteps, in the latents' dtype): the same bits here
        ts = (t.float() * 1000).to(dtype) / 1000
        out = self.transformer(hidden_states=packed, timestep=ts, guidance=guidance,
                               pooled_projections=pooled.to(dtype),
                               encoder_hidden_states=tokens.to(dtype), txt_ids=txt_ids,
                               img_ids=img_ids, return_dict=False)[0]
        # FluxPipeline._unpack_latents with the latent size given directly
        out = out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, c, h, w).to(x.dtype)


class FlowParts:
    """What the trainer needs from a flow pipeline: model, SDE, text → Cond, latents → images.

    Args:
        pipe: a ``StableDiffusion3Pipeline`` or ``FluxPipeline``.
        latent_size: latent height = width (default: the transformer's ``sample_size`` for SD3;
            required for FLUX, whose transformer has no spatial size).
        max_sequence_length: T5 tokens (``encode_prompt``'s argument).
        guidance: FLUX guidance-embedding scale.
    Attributes:
        model, sde (``SchedulerFlow``: a ``FlowSDE`` from t = 1, pure noise, to t = 0, whose
        default grid is the pipeline scheduler's σ's), shape ``(C, H, W)``, family (``"sd3"``
        or ``"flux"``).
    """

    def __init__(self, pipe: Any, latent_size: int | None = None,
                 max_sequence_length: int = TEXT_TOKENS, guidance: float = FLUX_GUIDANCE):
        self.pipe, self.max_sequence_length = pipe, max_sequence_length
        name = type(pipe).__name__
        if "StableDiffusion3" in name:
            self.family = "sd3"
        elif "Flux" in name:
            self.family = "flux"
        else:
            raise ValueError(f"not a flow pipeline (SD3 or FLUX): {name}")
        for m in self._encoders() + [pipe.vae]:
            m.requires_grad_(False)
        with torch.no_grad():
            null = self.embed([""])
        tr = pipe.transformer
        pooled_dim = int(tr.config.pooled_projection_dim)
        if self.family == "sd3":
            self.model: nn.Module = SD3Velocity(tr, null, pooled_dim)
            c = int(tr.config.in_channels)
            size = latent_size or int(tr.config.sample_size)
        else:
            if latent_size is None:
                raise ValueError("FLUX pipelines need latent_size (the transformer has none)")
            self.model = FluxVelocity(tr, null, pooled_dim, guidance)
            c, size = int(tr.config.in_channels) // 4, latent_size
        self.shape = (c, size, size)
        # the pipeline's σ grid by default (policy/schedule.py); image tokens as the pipeline
        # counts them: SD3 (H/p)(W/p), FLUX (H/2)(W/2) after 2×2 packing
        patch = int(tr.config.patch_size) if self.family == "sd3" else 2
        self.sde: FlowSDE = SchedulerFlow(scheduler=pipe.scheduler, family=self.family,
                                          image_seq_len=(size // patch) ** 2)

    def _encoders(self) -> list[nn.Module]:
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [getattr(self.pipe, n) for n in names if getattr(self.pipe, n, None) is not None]

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> Tensor:
        """``[B, L + 1, E]``: the pipeline's prompt embeddings with the pooled row appended."""
        device = next(self._encoders()[0].parameters()).device
        if self.family == "sd3":
            tokens, _, pooled, _ = self.pipe.encode_prompt(
                prompts, None, None, device=device, do_classifier_free_guidance=False,
                max_sequence_length=self.max_sequence_length)
        else:
            tokens, pooled, _ = self.pipe.encode_prompt(
                prompts, None, device=device, max_sequence_length=self.max_sequence_length)
        return _pack_pooled(tokens, pooled)

    def encode(self, prompts: list[str]) -> Cond:
        """``Cond(text_emb=…)`` for the policy."""
        return Cond(text_emb=self.embed(prompts))

    def decode(self, latents: Tensor) -> Tensor:
        """Latents → images in [-1, 1] ``[B, 3, H, W]`` through the VAE (differentiable):
        x = vae.decode(z / scaling_factor + shift_factor), as both pipelines do."""
        vae = self.pipe.vae
        shift = vae.config.shift_factor or 0.0
        z = latents.to(vae.dtype) / vae.config.scaling_factor + shift
        return vae.decode(z).sample.float().clamp(-1.0, 1.0)


def _tiny_vae(seed: int, latent_channels: int):
    from diffusers import AutoencoderKL

    return _seeded(seed, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, sample_size=16, scaling_factor=1.0,
        shift_factor=0.0, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D")))


def _tiny_clip(seed: int, tokenizer, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=tokenizer.model_max_length,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, projection_dim=32)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _seeded(seed, lambda: cls(cfg))


def _finish(pipe, modules):
    for m in modules:
        m.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sd3_pipeline(seed: int = 0):
    """A random-weight SD3-shaped ``StableDiffusion3Pipeline`` (16×16 images, 4×8×8 latents).

    Two CLIP text encoders with projection (pooled 2 × 32 = 64, token features 2 × 32 = 64), no
    T5 (SD3 runs without it: zero T5 tokens), an ``SD3Transformer2DModel`` (patch 1, 2 joint
    blocks), an ``AutoencoderKL`` and ``FlowMatchEulerDiscreteScheduler(shift=3.0)`` (SD3.5).
    """
    from diffusers import (FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)

    tok, tok2 = build_clip_tokenizer(), build_clip_tokenizer()
    te, te2 = _tiny_clip(seed, tok, True), _tiny_clip(seed + 1, tok2, True)
    transformer = _seeded(seed + 2, lambda: SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
        pooled_projection_dim=64, out_channels=4, pos_embed_max_size=16))
    vae = _tiny_vae(seed + 3, 4)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=te, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok2,
        text_encoder_3=None, tokenizer_3=None)
    return _finish(pipe, (transformer, vae, te, te2))


def build_tiny_flux_pipeline(seed: int = 0):
    """A random-weight FLUX-shaped ``FluxPipeline`` (16×16 images, 4×8×8 latents, 2×2 packing).

    A CLIP text encoder (pooled 32), a T5 encoder (d_model 32) over the same byte-level
    vocabulary, a ``FluxTransformer2DModel`` with the guidance embedding (1 double + 1 single
    block, RoPE axes 4+6+6 = head dim 16), an ``AutoencoderKL`` and FLUX.1-dev's scheduler
    (:data:`FLUX_SCHEDULER`: dynamic shift from the image sequence length).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tok, tok2 = build_clip_tokenizer(), build_clip_tokenizer()
    te = _tiny_clip(seed, tok, False)
    t5_cfg = T5Config(vocab_size=len(tok2), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                      num_heads=4, pad_token_id=tok2.pad_token_id,
                      eos_token_id=tok2.eos_token_id, decoder_start_token_id=0)
    te2 = _seeded(seed + 1, lambda: T5EncoderModel(t5_cfg))
    transformer = _seeded(seed + 2, lambda: FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=True, axes_dims_rope=(4, 6, 6)))
    vae = _tiny_vae(seed + 3, 4)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae,
                        text_encoder=te, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok2,
                        transformer=transformer)
    return _finish(pipe, (transformer, vae, te, te2))


def load_flow_pipeline(path: str, family: str, dtype: torch.dtype = torch.float32):
    """A real SD3 / FLUX pipeline from a local directory or hub id (``from_pretrained``).

    Args:
        path: directory written by ``save_pretrained`` or a hub id (e.g.
            ``stabilityai/stable-diffusion-3.5-medium``; downloading is the user's business).
        family: ``"sd3"`` or ``"flux"``.
        dtype: weights' dtype.
    """
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    cls = {"sd3": StableDiffusion3Pipeline, "flux": FluxPipeline}.get(family)
    if cls is None:
        raise ValueError(f"family must be 'sd3' or 'flux', got {family!r}")
    from pathlib import Path

    kw: dict[str, Any] = {}
    if family == "sd3" and Path(path).is_dir() and not (Path(path) / "text_encoder_3").is_dir():
        kw = {"text_encoder_3": None, "tokenizer_3": None}  # SD3 without T5 (zero T5 tokens)
    pipe = cls.from_pretrained(path, torch_dtype=dtype, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


__all__ = ["FlowParts", "FluxVelocity", "SD3Velocity", "build_tiny_flux_pipeline",
           "build_tiny_sd3_pipeline", "load_flow_pipeline"]
