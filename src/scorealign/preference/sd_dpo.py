"""Diffusion-DPO for Stable-Diffusion-style diffusers pipelines (VAE latents, text encoder, UNet).

The same surrogate as on digits [Wallace+23, arXiv:2311.12908, Eq. 14], in the pipeline's own
terms: images → VAE latents z_0 (× ``scaling_factor``), one integer timestep and one noise per
pair shared by the chosen and the rejected image, z_t = ``scheduler.add_noise(z_0, ε, t)``, the
target is ε (``epsilon``) or ``scheduler.get_velocity`` (``v_prediction``), and the per-image error
is the pixel-mean squared error, as in the authors' SD code. The links are the shared
``preference.losses.PAIRWISE`` ones. The reference is a frozen copy of the UNet or, with LoRA
adapters added through diffusers' peft integration, the same UNet with its adapters disabled.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Sequence

import torch
from torch import Tensor

from scorealign.preference.diffusion_logratio import (DIFFUSION_DPO_BETA, DiffusionPairLoss,
                                                      diffusion_dpo_loss)


class SDDiffusionDPO:
    """Diffusion-DPO loss on a diffusers text-to-image pipeline.

    Args:
        pipe: a ``StableDiffusionPipeline``-like object (``unet``, ``vae``, ``text_encoder``,
            ``tokenizer``, ``scheduler``).
        reference: ``"frozen"`` (a frozen deep copy of the UNet) or ``"lora_disabled"`` (the UNet
            with its peft adapters switched off; add them first, e.g. with :meth:`add_lora`).
        link, beta, scale: the pairwise link, β (5000: the authors' ``--beta_dpo`` default and
            both launchers, SalesforceAIResearch/DiffusionDPO ``train.py``, ``launchers/sd15.sh``,
            ``launchers/sdxl.sh``) and T·ω(λ_t) (see ``diffusion_dpo_loss``).
    """

    def __init__(self, pipe: Any, reference: str = "frozen", link: str = "sigmoid",
                 beta: float = DIFFUSION_DPO_BETA, scale: float = 0.5):
        if reference not in ("frozen", "lora_disabled"):
            raise ValueError(f"reference must be 'frozen' or 'lora_disabled', got {reference!r}")
        self.pipe, self.mode, self.link, self.beta, self.scale = pipe, reference, link, beta, scale
        self.ref_unet = None
        if reference == "frozen":
            self.ref_unet = copy.deepcopy(pipe.unet).requires_grad_(False).eval()
        pipe.vae.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)

    @staticmethod
    def add_lora(pipe: Any, r: int = 4, alpha: float = 4.0,
                 target_modules: Sequence[str] = ("to_q", "to_k", "to_v", "to_out.0")) -> list:
        """Add LoRA adapters to ``pipe.unet`` and make only them trainable; returns their params."""
        from peft import LoraConfig

        pipe.unet.requires_grad_(False)
        pipe.unet.add_adapter(LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules),
                                         init_lora_weights=True))
        params = [p for n, p in pipe.unet.named_parameters() if "lora_" in n]
        for p in params:
            p.requires_grad_(True)
        return params

    @torch.no_grad()
    def latents(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """VAE latents of images ``[B, 3, H, W]`` in [-1, 1]: a posterior *sample* × scaling factor.

        z ~ q(z|x) = N(μ(x), σ²(x)), as the authors' code encodes
        (``vae.encode(...).latent_dist.sample()``, SalesforceAIResearch/DiffusionDPO ``train.py``),
        not the posterior mean; ``generator`` makes the draw reproducible.
        """
        vae = self.pipe.vae
        dist = vae.encode(images.to(vae.dtype)).latent_dist
        return dist.sample(generator=generator) * vae.config.scaling_factor

    @torch.no_grad()
    def text(self, prompts: Sequence[str]) -> Tensor:
        """Text-encoder hidden states of ``prompts`` (padded to the tokenizer's max length)."""
        tok = self.pipe.tokenizer
        ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids
        return self.pipe.text_encoder(ids.to(self.pipe.text_encoder.device))[0]

    def _ref_ctx(self):
        if self.mode == "frozen":
            return contextlib.nullcontext()
        unet = self.pipe.unet

        @contextlib.contextmanager
        def off():
            unet.disable_adapters()
            try:
                yield
            finally:
                unet.enable_adapters()

        return off()

    def errors(self, unet: Any, z_w: Tensor, z_l: Tensor, t: Tensor, noise: Tensor,
               hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Pixel-mean squared errors of the pair at shared (t, ε): (err_w, err_l), [B] each."""
        sch = self.pipe.scheduler
        z0 = torch.cat([z_w, z_l])
        tt, eps = torch.cat([t, t]), torch.cat([noise, noise])
        z_t = sch.add_noise(z0, eps, tt)
        kind = sch.config.prediction_type
        if kind == "epsilon":
            target = eps
        elif kind == "v_prediction":
            target = sch.get_velocity(z0, eps, tt)
        else:
            raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")
        pred = unet(z_t, tt, encoder_hidden_states=torch.cat([hidden, hidden])).sample
        return (pred.float() - target.float()).pow(2).flatten(1).mean(1).chunk(2)

    def loss(self, images_w: Tensor, images_l: Tensor, prompts: Sequence[str],
             generator: torch.Generator) -> DiffusionPairLoss:
        """Per-pair Diffusion-DPO loss of images ``[B, 3, H, W]`` (chosen, rejected) for prompts."""
        if images_w.shape != images_l.shape or images_w.shape[0] != len(prompts):
            raise ValueError(f"chosen {tuple(images_w.shape)}, rejected {tuple(images_l.shape)} "
                             f"and {len(prompts)} prompts do not match")
        z_w, z_l = self.latents(images_w, generator), self.latents(images_l, generator)
        hidden = self.text(prompts)
        n = self.pipe.scheduler.config.num_train_timesteps
        t = torch.randint(0, n, (z_w.shape[0],), generator=generator).to(z_w.device)
        noise = torch.randn(z_w.shape, generator=generator).to(z_w.device, z_w.dtype)
        ep = self.errors(self.pipe.unet, z_w, z_l, t, noise, hidden)
        with torch.no_grad(), self._ref_ctx():
            er = self.errors(self.ref_unet or self.pipe.unet, z_w, z_l, t, noise, hidden)
        return diffusion_dpo_loss(ep[0], er[0], ep[1], er[1], link=self.link, beta=self.beta,
                                  scale=self.scale)
