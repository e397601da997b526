"""``ScorealignDigitsPipeline``: sample an exported scorealign digits model with diffusers alone.

Components: ``unet`` (diffusers ``UNet2DConditionModel``, or ``UNet2DModel`` for class-label
models), ``scheduler`` (``AffineStepScheduler``: the run's sampler, grid and steps),
``conditioner`` (``DigitsConditioner``: the learned null token / label embedding) and, for text
models, ``text_encoder`` + ``tokenizer`` (all-MiniLM-L6-v2, token states per prompt, no padding
across prompts). The loop is scorealign's: at step i the network sees x and the timestep
``t_i · time_scale``; classifier-free guidance runs the conditional and null rows in one batch,
pred = p_∅ + w (p_c − p_∅) [Ho & Salimans 22, Eq. 6] (w = 1: the conditional prediction only),
and the scheduler applies x ← A_i x + B_i pred + σ_i z.

Load::

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(DIR, custom_pipeline=f"{DIR}/pipeline.py",
                                             trust_remote_code=True)
    images = pipe(["a handwritten digit 3"], num_images_per_prompt=4, generator=g).images

This file imports only torch, diffusers and transformers (it is shipped inside exported pipelines).
"""

from __future__ import annotations

from typing import List, Optional, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel


class ScorealignDigitsPipeline(DiffusionPipeline):
    """An exported scorealign digits model (module docstring)."""

    model_cpu_offload_seq = "text_encoder->unet"
    _optional_components = ["text_encoder", "tokenizer", "conditioner"]

    def __init__(self, unet, scheduler, conditioner=None, text_encoder=None, tokenizer=None,
                 guidance_scale: float = 1.0, max_length: int = 64):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, conditioner=conditioner,
                              text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(guidance_scale=guidance_scale, max_length=max_length)

    @torch.no_grad()
    def encode_text(self, prompts: List[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``[B, L, E]`` (each prompt encoded alone, zero-padded to the longest)
        and mask ``[B, L]``."""
        dev = self.text_encoder.device
        rows = []
        for p in prompts:
            batch = self.tokenizer([p], truncation=True, max_length=self.config.max_length,
                                   return_tensors="pt").to(dev)
            rows.append(self.text_encoder(**batch).last_hidden_state[0].float())
        length = max(h.shape[0] for h in rows)
        hidden = torch.zeros(len(rows), length, rows[0].shape[-1], device=dev)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=dev)
        for i, h in enumerate(rows):
            hidden[i, : h.shape[0]] = h
            mask[i, : h.shape[0]] = True
        return hidden, mask

    def _predict(self, x, t, null, text_emb, text_mask, labels):
        """The network's prediction at (x, t) for rows marked ``null`` or conditional."""
        ts = t.float().expand(x.shape[0]) * self.scheduler.config.time_scale
        if isinstance(self.unet, UNet2DModel):
            num = self.unet.config.num_class_embeds
            if num is None:
                return self.unet(x, ts).sample
            cls = torch.where(null, torch.full_like(labels, num - 1), labels)
            return self.unet(x, ts, class_labels=cls).sample
        tokens, mask = self.conditioner(null, text_emb, text_mask, labels)
        return self.unet(x, ts, encoder_hidden_states=tokens.to(x.dtype),
                         encoder_attention_mask=mask).sample

    @torch.no_grad()
    def __call__(self, prompt: Union[str, List[str], None] = None,
                 class_labels: Optional[List[int]] = None, num_images_per_prompt: int = 1,
                 guidance_scale: Optional[float] = None,
                 generator: Optional[torch.Generator] = None,
                 latents: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
                 output_type: str = "pil", return_dict: bool = True):
        """Sample ``num_images_per_prompt`` images per prompt (text models) or per label.

        Args:
            prompt: text prompts (text-conditional models).
            class_labels: digit labels (label-conditional models).
            guidance_scale: CFG weight w (diffusers' convention; default: the run's).
            generator: draws the latents (and each stochastic step's z) when not given.
            latents: x_T ``[B, C, H, W]``; noise: z ``[S, B, C, H, W]`` for stochastic samplers.
            output_type: ``"latent"`` (x_0 in the model's [-1, 1] scale), ``"pt"`` / ``"np"``
                ([0, 1]) or ``"pil"``.
        """
        w = self.config.guidance_scale if guidance_scale is None else float(guidance_scale)
        text = self.text_encoder is not None
        if isinstance(prompt, str):
            prompt = [prompt]
        conditional = not (isinstance(self.unet, UNet2DModel)
                           and self.unet.config.num_class_embeds is None)
        if text:
            if not prompt:
                raise ValueError("this model is text-conditional: pass prompt=[...]")
            prompts = [p for p in prompt for _ in range(num_images_per_prompt)]
            rows = len(prompts)
        elif conditional:
            if class_labels is None:
                raise ValueError("this model is label-conditional: pass class_labels=[...]")
            rows = len(class_labels) * num_images_per_prompt
        else:
            rows = num_images_per_prompt
        cfg = self.unet.config
        shape = (rows, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        dev = self.unet.device
        if latents is None:
            gdev = generator.device if generator is not None else dev
            latents = torch.randn(shape, generator=generator, dtype=torch.float32, device=gdev)
            latents = latents * self.scheduler.init_noise_sigma
        x = latents.to(dev)
        text_emb = text_mask = labels = None
        if text:
            text_emb, text_mask = self.encode_text(prompts)
            text_emb, text_mask = text_emb.to(dev), text_mask.to(dev)
        elif conditional:
            labels = torch.tensor([int(y) for y in class_labels for _ in
                                   range(num_images_per_prompt)], dtype=torch.long, device=dev)
        cond_null = torch.zeros(rows, dtype=torch.bool, device=dev)
        times = self.scheduler.model_times(torch.float32)
        for i in range(len(times)):
            t = times[i].to(dev)
            if not conditional or w == 1.0:
                pred = self._predict(x, t, cond_null, text_emb, text_mask, labels)
            else:
                both = self._predict(
                    torch.cat([x, x]), t, torch.cat([cond_null, ~cond_null]),
                    None if text_emb is None else torch.cat([text_emb, text_emb]),
                    None if text_mask is None else torch.cat([text_mask, text_mask]),
                    None if labels is None else torch.cat([labels, labels]))
                p_c, p_u = both.chunk(2)
                pred = p_u + w * (p_c - p_u)
            z = None if noise is None else noise[i].to(dev)
            x = self.scheduler.step(pred, i, x, noise=z, generator=generator).prev_sample
        if output_type == "latent":
            images = x
        else:
            images = (x / 2 + 0.5).clamp(0, 1)
            if output_type in ("np", "pil"):
                images = images.cpu().permute(0, 2, 3, 1).float().numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images if images.shape[-1] != 1
                                               else np.repeat(images, 3, axis=-1))
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
