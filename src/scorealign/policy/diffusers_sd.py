"""Adapter: a diffusers ``StableDiffusionPipeline`` (text encoder + UNet + VAE) as a policy model.

The UNet is made to speak ``model(x, t, cond) -> ε̂`` on latents, with our continuous time
converted once, here, to diffusers' (fractional) timestep k = t·N/T − 1 of the pipeline's own
``alphas_cumprod`` (``sde.discrete.DiscreteVP``, whose marginals equal DDPM's at every node), so
scorealign's samplers, log-probs and KLs apply unchanged [Rombach+22 LDM; Ho+20 DDPM, Eq. 4].
Conditioning is a ``Cond`` of CLIP token embeddings; a ``null`` row uses the empty prompt's
embedding, so CFG is ``nets.cond.guided`` [Ho & Salimans 22]. LoRA adapters come from peft.

Memory and speed options (:class:`SDParts` arguments, one config field each in the trainers that
use them): ``dtype`` runs the frozen networks in bf16/fp16 while the UNet's inputs and outputs,
and so every log-prob, ratio and KL computed from them, stay fp32 (LoRA adapters are kept fp32
by :func:`add_lora`); ``gradient_checkpointing`` recomputes UNet block activations in the backward
pass; ``cache_prompts`` encodes each distinct prompt once per run; ``compile`` wraps the UNet in
``torch.compile``. CFG is always one batched forward (``nets.cond.guided``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scorealign.nets.cond import Cond
from scorealign.policy.schedule import SchedulerVP
from scorealign.sde.discrete import DiscreteVP

_SNAP = 1e-3  # timesteps within 1e-3 of an integer are that integer (fp32 time round-off)


class SDUNet(nn.Module):
    """``UNet2DConditionModel`` → ``model(x, t, cond)`` (ε-prediction on latents).

    Args:
        unet: the pipeline's UNet.
        sde: the pipeline scheduler's schedule as a ``DiscreteVP``.
        null_emb: ``[1, L, E]`` CLIP embedding of the empty prompt (CFG's unconditional input).
    """

    kind = "eps"

    def __init__(self, unet: nn.Module, sde: DiscreteVP, null_emb: Tensor):
        super().__init__()
        self.unet, self.sde = unet, sde
        self.register_buffer("null_emb", null_emb.detach().clone(), persistent=False)

    def forward(self, x: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        """ε̂ in ``x``'s dtype; the UNet itself runs in its parameters' dtype (bf16/fp16 ok)."""
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        k = self.sde.t_to_timestep(t.double())
        # the scheduler's integer timesteps arrive through fp32 times (error ≤ 3e-5 timesteps):
        # snap them back, so the UNet sees the pipeline's own timestep bits
        k = torch.where((k - k.round()).abs() < _SNAP, k.round(), k).to(x.device, torch.float32)
        dtype = self.unet.conv_in.weight.dtype  # LoRA adapters may be fp32: not .dtype
        if cond is None:
            emb = self.null_emb.expand(x.shape[0], -1, -1)
        else:
            emb = torch.where(cond.null_mask()[:, None, None].to(x.device),
                              self.null_emb.to(cond.text_emb.dtype), cond.text_emb)
        net = self.compiled if self.compiled is not None else self.unet
        return net(x.to(dtype), k, encoder_hidden_states=emb.to(dtype)).sample.to(x.dtype)

    compiled: nn.Module | None = None


class SDParts:
    """What the trainer needs from a pipeline: model, SDE, text → Cond, latents → images.

    Attributes:
        model: :class:`SDUNet` around the pipeline's UNet.
        sde: ``DiscreteVP`` of the scheduler (a ``SchedulerVP``: its default grid is the
            scheduler's own, ``policy.schedule``).
        shape: latent shape ``(C, H, W)``.

    Args:
        pipe: a ``StableDiffusionPipeline`` (or one with the same parts).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``: dtype of the UNet, VAE and text
            encoder weights. Latents, ε̂ returned to the samplers, log-probs and KLs stay fp32.
        gradient_checkpointing: recompute the UNet's block activations in backward.
        cache_prompts: keep each distinct prompt's embedding (fp32, on the encoder's device)
            so a prompt is encoded once per run.
        compile: ``torch.compile`` the UNet (a ``torch.compile`` backend name, or True for the
            default); the eager module keeps the weights, the optimizer and checkpoints.
    """

    def __init__(self, pipe: Any, dtype: str | torch.dtype = "float32",
                 gradient_checkpointing: bool = False, cache_prompts: bool = False,
                 compile: bool | str = False):
        self.pipe = pipe
        self.sde = SchedulerVP.from_scheduler(pipe.scheduler)
        self.dtype = _dtype(dtype)
        for m in (pipe.text_encoder, pipe.vae, pipe.unet):
            if m.dtype != self.dtype:
                m.to(self.dtype)
        for m in (pipe.text_encoder, pipe.vae):
            m.requires_grad_(False)
        if gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        self.cache: dict[str, Tensor] | None = {} if cache_prompts else None
        self.encoder_calls = 0
        with torch.no_grad():
            null = self.embed([""])
        self.model = SDUNet(pipe.unet, self.sde, null)
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            # not a registered submodule: parameters and state dicts keep their names
            object.__setattr__(self.model, "compiled", torch.compile(pipe.unet, backend=backend))
        c = pipe.unet.config
        self.shape = (c.in_channels, c.sample_size, c.sample_size)

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> Tensor:
        """CLIP token embeddings ``[B, L, E]`` (fp32) of prompts padded to the max length."""
        if self.cache is None:
            return self._encode(prompts)
        new = sorted({p for p in prompts if p not in self.cache})
        if new:
            for p, e in zip(new, self._encode(new)):
                self.cache[p] = e
        return torch.stack([self.cache[p] for p in prompts])

    def _encode(self, prompts: list[str]) -> Tensor:
        tok = self.pipe.tokenizer(prompts, padding="max_length", truncation=True,
                                  max_length=self.pipe.tokenizer.model_max_length,
                                  return_tensors="pt")
        device = next(self.pipe.text_encoder.parameters()).device
        self.encoder_calls += 1
        return self.pipe.text_encoder(tok.input_ids.to(device))[0].float()

    def encode(self, prompts: list[str]) -> Cond:
        """``Cond(text_emb=…)`` for the policy."""
        return Cond(text_emb=self.embed(prompts))

    def to(self, device: torch.device | str) -> "SDParts":
        """Text encoder, VAE and cached embeddings on ``device`` (the UNet is placed with the
        model by the trainer's accelerator)."""
        for m in (self.pipe.text_encoder, self.pipe.vae):
            m.to(device)
        if self.cache is not None:
            self.cache = {p: e.to(device) for p, e in self.cache.items()}
        return self

    def decode(self, latents: Tensor) -> Tensor:
        """Latents → images in [-1, 1] ``[B, 3, H, W]`` through the VAE (differentiable)."""
        vae = self.pipe.vae
        x = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return x.float().clamp(-1.0, 1.0)


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in table:
        raise ValueError(f"dtype {dtype!r}: choose one of {sorted(table)}")
    return table[dtype]


def load_sd_pipeline(path: str, dtype: str | torch.dtype = "float32") -> Any:
    """A real Stable-Diffusion-1.x/2.x-style pipeline (CLIP text encoder + UNet + VAE) from a
    local directory or hub id (``StableDiffusionPipeline.from_pretrained``), the ``base.type:
    sd`` of a finetune run.

    Args:
        path: a directory written by ``save_pretrained`` (e.g. a local copy of
            ``stable-diffusion-v1-5/stable-diffusion-v1-5``) or a hub id (downloading, if the
            hub is reachable at all, is the user's business; with ``HF_HUB_OFFLINE=1`` only the
            local cache is read).
        dtype: the weights' dtype (loaded in it: no fp32 copy on the way).

    The safety checker is not loaded (``safety_checker=None``): fine-tuning never runs it, and
    SD 1.5's is a 1.2 GB CLIP model. A pipeline exported with ``--with-base`` therefore has none
    either (``model_index.json`` records ``requires_safety_checker: false``).
    """
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=_dtype(dtype),
                                                   safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_lora(unet: nn.Module, rank: int, alpha: float, target_modules: list[str],
             seed: int = 0) -> nn.Module:
    """Freeze ``unet`` and add peft LoRA adapters (B = 0 at init, so the policy is unchanged).

    The adapters are fp32 whatever the UNet's dtype (peft casts the layer input to the adapter's
    dtype and the sum back), so optimizer states and updates are full precision.
    """
    from peft import LoraConfig

    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules,
                                    init_lora_weights=True))
    for p in unet.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return unet
