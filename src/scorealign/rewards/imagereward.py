"""ImageReward [Xu+23, arXiv:2304.05977, §3.2]: BLIP image-grounded text encoder → MLP → score.

r(x, c) = (MLP(h_CLS(c | ViT(x))) − μ) / σ,   μ = 0.16717362830052426, σ = 1.0333394966054072

where h_CLS is the [CLS] state of BLIP's text encoder (BERT-base with cross-attention to the
ViT-L/16 image tokens at 224 px) on the prompt tokenized to 35 tokens, and the MLP has Linear
layers 768→1024→128→64→16→1 (no activations, dropouts between) — ``ImageReward/ImageReward.py``
(``score_gard``: ``txt_features = text_output.last_hidden_state[:, 0, :]``; ``mean``/``std``).

The ``image-reward`` package pins timm 0.6 and fairscale and imports torchvision (no PyPI wheel
for this CPU torch), so the architecture is built from ``transformers``' BLIP modules
(``BlipVisionModel``, ``BlipTextModel`` without pooler: the same layers) and the released
``ImageReward.pt`` state dict is renamed into them by :func:`imagereward_to_hf` (the renaming of
transformers' BLIP conversion script). Images are preprocessed in torch (differentiable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from scorealign.rewards.base import REWARDS, RewardError
from scorealign.rewards.hub import (CLIP_MEAN, CLIP_STD, ModelReward, from_pretrained,
                                    load_state, pixels, resolve_file)

MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward/ImageReward.py
MAX_TOKENS = 35  # ImageReward.score: tokenizer(..., max_length=35)
HOW = ("`hf download THUDM/ImageReward ImageReward.pt` and `hf download "
       "google-bert/bert-base-uncased` (tokenizer), or pass local paths as checkpoint= and "
       "tokenizer=")

# ImageReward's med_config.json (BERT-base with cross-attention to 1024-wide ViT-L tokens) and
# BLIP_Pretrain(image_size=224, vit='large'): ViT-L/16, timm LayerNorm eps 1e-6.
TEXT = dict(vocab_size=30524, hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072,
            num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512,
            layer_norm_eps=1e-12, hidden_act="gelu")
VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
              num_attention_heads=16, image_size=224, patch_size=16, layer_norm_eps=1e-6,
              hidden_act="gelu")


class ImageRewardModel(nn.Module):
    """ViT (``BlipVisionModel``) + image-grounded BERT (``BlipTextModel``) + MLP head."""

    def __init__(self, text: Mapping[str, Any] | None = None,
                 vision: Mapping[str, Any] | None = None):
        super().__init__()
        from transformers import BlipTextConfig, BlipVisionConfig, BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        tcfg = BlipTextConfig(**{**TEXT, **(text or {})})
        vcfg = BlipVisionConfig(**{**VISION, **(vision or {})})
        if tcfg.encoder_hidden_size != vcfg.hidden_size:
            raise RewardError(f"imagereward: text encoder_hidden_size {tcfg.encoder_hidden_size}"
                              f" != vision hidden_size {vcfg.hidden_size}")
        self.visual = BlipVisionModel(vcfg)
        self.text = BlipTextModel(tcfg, add_pooling_layer=False)
        h = tcfg.hidden_size
        self.mlp = nn.Sequential(nn.Linear(h, 1024), nn.Identity(), nn.Linear(1024, 128),
                                 nn.Identity(), nn.Linear(128, 64), nn.Identity(),
                                 nn.Linear(64, 16), nn.Linear(16, 1))
        self.image_size = vcfg.image_size

    def forward(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        img = self.visual(pixel_values=pixel_values).last_hidden_state
        att = torch.ones(img.shape[:-1], dtype=torch.long, device=img.device)
        h = self.text(input_ids=input_ids, attention_mask=attention_mask,
                      encoder_hidden_states=img, encoder_attention_mask=att).last_hidden_state
        return ((self.mlp(h[:, 0, :]) - MEAN) / STD).squeeze(-1)


def imagereward_to_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``ImageReward.pt`` keys → :class:`ImageRewardModel` keys.

    ``blip.visual_encoder.*`` (timm ViT) → ``visual.*``; ``blip.text_encoder.*`` (BLIP's
    ``med.py`` BERT, same names as ``BlipTextModel``) → ``text.*``; ``mlp.layers.*`` → ``mlp.*``.
    Other keys (``blip.vision_proj``, ``text_proj``, ``itm_head``; unused by the score) are
    dropped.
    """
    vis = {"cls_token": "embeddings.class_embedding",
           "pos_embed": "embeddings.position_embedding",
           "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
           "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
           "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
    blk = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
           "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.startswith("blip.visual_encoder."):
            k2 = k[len("blip.visual_encoder."):]
            if k2 in vis:
                out["visual." + vis[k2]] = v
            elif k2.startswith("blocks."):
                _, i, rest = k2.split(".", 2)
                name, kind = rest.rsplit(".", 1)
                if name not in blk:
                    raise RewardError(f"imagereward: unknown ViT key {k!r}")
                out[f"visual.encoder.layers.{i}.{blk[name]}.{kind}"] = v
            else:
                raise RewardError(f"imagereward: unknown ViT key {k!r}")
        elif k.startswith("blip.text_encoder."):
            out["text." + k[len("blip.text_encoder."):]] = v
        elif k.startswith("mlp.layers."):
            out["mlp." + k[len("mlp.layers."):]] = v
    return out


class ImageReward(ModelReward):
    """Batched ImageReward score of each image with its prompt."""

    name = "imagereward"
    differentiable = True  # torch preprocessing

    def __init__(self, model: ImageRewardModel, tokenizer: Any, device: str | None = None,
                 dtype: str = "float32", grad: bool = False):
        super().__init__(device, dtype, grad)
        self.model, self.tokenizer = model, tokenizer
        self.freeze()

    def score(self, samples: Tensor, prompts: list[str]) -> Tensor:
        tok = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
        px = pixels(samples, self.model.image_size, CLIP_MEAN, CLIP_STD)
        return self.model(px, tok.input_ids, tok.attention_mask)


def blip_tokenizer(source: Any) -> Any:
    """BLIP's tokenizer: BERT uncased plus ``[DEC]`` (bos) and ``[ENC]`` (``blip.init_tokenizer``)."""
    from transformers import BertTokenizer

    tok = source if not isinstance(source, (str, Path)) else \
        from_pretrained(BertTokenizer, source, "imagereward", HOW)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


@REWARDS.register("imagereward", paper="Xu+23 ImageReward, arXiv:2304.05977",
                  equation="§3.2: r = (MLP(BLIP_text_CLS(c | ViT(x))) − μ)/σ")
def imagereward(checkpoint: Any = "THUDM/ImageReward:ImageReward.pt",
                tokenizer: Any = "google-bert/bert-base-uncased",
                config: Mapping[str, Any] | None = None, device: str | None = None,
                dtype: str = "float32", grad: bool = False) -> ImageReward:
    """Registry factory: ImageReward v1.0 from its released checkpoint (local or cached hub).

    Args:
        checkpoint: ``ImageReward.pt`` path or ``"org/name:file"`` in the hub cache.
        tokenizer: BERT uncased tokenizer directory or hub id.
        config: ``{"text": {...}, "vision": {...}}`` overrides of the BLIP configs (tests build
            a tiny model this way; the defaults are ImageReward's).
    """
    path = resolve_file(checkpoint, "ImageReward.pt", "imagereward", HOW)
    cfg = dict(config or {})
    model = ImageRewardModel(cfg.get("text"), cfg.get("vision"))
    state = imagereward_to_hf(load_state(path))
    result = model.load_state_dict(state, strict=False)
    missing_keys = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing_keys or result.unexpected_keys:
        raise RewardError(f"imagereward: {path} does not match the model config: missing "
                          f"{missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}")
    return ImageReward(model, blip_tokenizer(tokenizer), device, dtype, grad)
