"""The conditioning of an exported scorealign digits UNet: prompt tokens or class labels →
``encoder_hidden_states`` and mask, with the learned null embedding of classifier-free guidance.

The same computation as scorealign's ``TextConditioner`` / ``LabelConditioner`` (parameters
under the same names): text rows pass the encoder's token states through, a null row becomes one
learned null token (mask True at position 0 only); labels map to one learned token each, index
``num_classes`` being the null label [Ho & Salimans 22, CFG].

This file imports only torch and diffusers (it is shipped inside exported pipelines).
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class DigitsConditioner(ModelMixin, ConfigMixin):
    """``mode="text"``: a learned null token ``[dim]``; ``mode="label"``: ``nn.Embedding(
    num_classes + 1, dim)``."""

    @register_to_config
    def __init__(self, mode: str = "text", dim: int = 384, num_classes: int = 10):
        super().__init__()
        if mode not in ("text", "label"):
            raise ValueError(f"mode must be 'text' or 'label', got {mode!r}")
        if mode == "text":
            self.null_token = nn.Parameter(torch.zeros(dim))
        else:
            self.embed = nn.Embedding(num_classes + 1, dim)

    def forward(self, null: torch.Tensor, text_emb: Optional[torch.Tensor] = None,
                text_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[B, L, dim]`` and mask ``[B, L]`` for rows with ``null`` [B] bool.

        text: ``text_emb`` [B, L, dim] (zero-padded) with ``text_mask`` [B, L]; label:
        ``labels`` [B] int64.
        """
        if self.config.mode == "label":
            idx = torch.where(null, torch.full_like(labels, self.config.num_classes), labels)
            tokens = self.embed(idx)[:, None]
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        emb = text_emb.to(dtype=self.null_token.dtype)
        null_tokens = torch.zeros_like(emb)
        null_tokens[:, 0] = self.null_token
        null_mask = torch.zeros_like(text_mask)
        null_mask[:, 0] = True
        tokens = torch.where(null[:, None, None], null_tokens, emb)
        return tokens, torch.where(null[:, None], null_mask, text_mask)
