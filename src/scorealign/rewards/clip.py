"""CLIP-family prompt-image rewards through ``transformers.CLIPModel``: CLIPScore, PickScore, HPSv2.

All three embed the image and the prompt with a CLIP dual encoder and score the (normalized)
embedding similarity of each image with its own prompt:

* CLIPScore [Hessel+21, arXiv:2104.08718, Eq. 1]: ``2.5 · max(cos(E_I, E_T), 0)``.
* PickScore [Kirstain+23, arXiv:2305.01569, §4 "s(x, y) = E_txt(x) · E_img(y) · T"]:
  ``exp(logit_scale) · ⟨ê_I, ê_T⟩`` (the model card's inference code; T = exp(logit_scale)).
* HPSv2 [Wu+23, arXiv:2306.09341, §4.2]: ``⟨ê_I, ê_T⟩`` of an OpenCLIP ViT-H/14 fine-tuned on
  HPD v2 (``hpsv2/img_score.py``: ``diagonal(image_features @ text_features.T)``).

HPSv2 ships as an OpenCLIP checkpoint (``HPS_v2.1_compressed.pt``). ``open_clip`` cannot be used
here (it imports torchvision, which has no wheel for this CPU torch on PyPI), so
:func:`openclip_to_hf` converts the OpenCLIP state dict into ``CLIPModel`` keys (the two are the
same architecture: fused ``in_proj`` split into q/k/v, projections transposed); the CLIP config
and tokenizer come from ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, HPSv2's base model.

Images are preprocessed in torch (:func:`scorealign.rewards.hub.pixels`) so the scores are
differentiable for ``reward_backprop``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scorealign.rewards.base import REWARDS, RewardError
from scorealign.rewards.hub import ModelReward, from_pretrained, load_state, pixels, resolve_file

HOW_PICKSCORE = ("`hf download yuvalkirstain/PickScore_v1` and `hf download "
                 "laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (its processor), or pass local "
                 "directories as model= and processor=")
HOW_CLIP = "`hf download openai/clip-vit-large-patch14` (or any CLIP), or pass a local directory"
HOW_HPS = ("`hf download xswu/HPSv2 HPS_v2.1_compressed.pt` and `hf download "
           "laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (config and tokenizer), or pass local paths "
           "as checkpoint= and clip=")


class ClipPromptReward(ModelReward):
    """A ``CLIPModel`` + tokenizer; ``score`` returns the configured transform of ⟨ê_I, ê_T⟩."""

    name = "clip"
    differentiable = True  # torch preprocessing

    def __init__(self, model: Any, tokenizer: Any, kind: str, device: str | None = None,
                 dtype: str = "float32", grad: bool = False):
        super().__init__(device, dtype, grad)
        if kind not in ("clipscore", "pickscore", "hpsv2"):
            raise RewardError(f"unknown CLIP reward kind {kind!r}")
        self.model, self.tokenizer, self.kind, self.name = model, tokenizer, kind, kind
        self.size = int(model.config.vision_config.image_size)
        self.max_len = int(model.config.text_config.max_position_embeddings)
        self.freeze()

    def text_embeds(self, prompts: list[str]) -> Tensor:
        tok = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=min(self.max_len, self.tokenizer.model_max_length),
                             return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tok.input_ids,
                                           attention_mask=tok.attention_mask)
        return getattr(out, "pooler_output", out)

    def score(self, samples: Tensor, prompts: list[str]) -> Tensor:
        img = self.model.get_image_features(pixel_values=pixels(samples, self.size))
        img = getattr(img, "pooler_output", img)
        txt = self.text_embeds(prompts)
        cos = ((img / img.norm(dim=-1, keepdim=True)) *
               (txt / txt.norm(dim=-1, keepdim=True))).sum(-1).float()
        if self.kind == "clipscore":
            return 2.5 * cos.clamp_min(0.0)
        if self.kind == "pickscore":
            return self.model.logit_scale.float().exp() * cos
        return cos


def _clip_and_tokenizer(model: Any, processor: Any, reward: str, how: str) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, CLIPModel

    m = model if not isinstance(model, (str, Path)) else \
        from_pretrained(CLIPModel, model, reward, how)
    src = processor if processor is not None else model
    tok = src if not isinstance(src, (str, Path)) else \
        from_pretrained(AutoTokenizer, src, reward, how)
    return m, tok


@REWARDS.register("clipscore", paper="Hessel+21 CLIPScore, arXiv:2104.08718",
                  equation="Eq. 1: CLIP-S = 2.5 · max(cos(E_I, E_T), 0)")
def clipscore(model: Any = "openai/clip-vit-large-patch14", processor: Any = None,
              device: str | None = None, dtype: str = "float32",
              grad: bool = False) -> ClipPromptReward:
    """Registry factory: CLIPScore of each image with its prompt (``model`` dir or hub id)."""
    m, tok = _clip_and_tokenizer(model, processor, "clipscore", HOW_CLIP)
    return ClipPromptReward(m, tok, "clipscore", device, dtype, grad)


@REWARDS.register("pickscore", paper="Kirstain+23 Pick-a-Pic, arXiv:2305.01569",
                  equation="§4: s = exp(logit_scale) · ⟨E_img/‖·‖, E_txt/‖·‖⟩")
def pickscore(model: Any = "yuvalkirstain/PickScore_v1",
              processor: Any = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
              device: str | None = None, dtype: str = "float32",
              grad: bool = False) -> ClipPromptReward:
    """Registry factory: PickScore (``model`` and its ``processor``: dirs or cached hub ids)."""
    m, tok = _clip_and_tokenizer(model, processor, "pickscore", HOW_PICKSCORE)
    return ClipPromptReward(m, tok, "pickscore", device, dtype, grad)


# open_clip ``CLIP.state_dict()`` key → ``transformers.CLIPModel`` key, for the keys outside the
# residual blocks, and the renames inside a block (``transformer.resblocks.{i}.`` ↔
# ``encoder.layers.{i}.``); the q/k/v split of ``attn.in_proj_*`` and the transposed projections
# are handled in code. One table serves both directions.
_OPENCLIP_FIXED = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale"}
_OPENCLIP_PROJ = {"visual.proj": "visual_projection.weight",
                  "text_projection": "text_projection.weight"}  # stored transposed
_BLOCK_RENAMES = (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                  ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))


def _rename(rest: str, to_hf: bool) -> str:
    for oc, hf in _BLOCK_RENAMES:
        a, b = (oc, hf) if to_hf else (hf, oc)
        if rest.startswith(a):
            return b + rest[len(a):]
    return rest


def openclip_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """OpenCLIP (``open_clip.CLIP``, ViT towers) state dict → ``transformers.CLIPModel`` keys.

    Raises:
        RewardError: on a key the mapping does not know (another tower type, e.g. ConvNeXt).
    """
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k in ("attn_mask", "visual.attn_mask"):
            continue
        pre, k2 = ("vision_model.", k[len("visual."):]) if k.startswith("visual.") else \
            ("text_model.", k)
        if k2.startswith("transformer.resblocks."):
            _, _, i, rest = k2.split(".", 3)
            base = f"{pre}encoder.layers.{i}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]  # weight | bias
                for name, part in zip(("q", "k", "v"), v.chunk(3, dim=0)):
                    out[f"{base}self_attn.{name}_proj.{kind}"] = part.clone()
                continue
            out[base + _rename(rest, True)] = v
        elif k in _OPENCLIP_FIXED:
            out[_OPENCLIP_FIXED[k]] = v
        elif k in _OPENCLIP_PROJ:
            out[_OPENCLIP_PROJ[k]] = v.t().contiguous()
        else:
            raise RewardError(f"hpsv2: OpenCLIP key {k!r} has no CLIPModel counterpart (only "
                              f"ViT towers are supported)")
    return out


def hf_to_openclip(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`openclip_to_hf`: ``CLIPModel`` weights in open_clip's layout
    (q/k/v re-fused into ``attn.in_proj_*``; ``position_ids`` buffers dropped)."""
    fixed = {hf: oc for oc, hf in _OPENCLIP_FIXED.items()}
    proj = {hf: oc for oc, hf in _OPENCLIP_PROJ.items()}
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.endswith("position_ids"):
            continue
        if k in fixed:
            out[fixed[k]] = v
        elif k in proj:
            out[proj[k]] = v.t().contiguous()
        elif ".encoder.layers." in k:
            tower, _, _, i, rest = k.split(".", 4)
            base = ("visual." if tower == "vision_model" else "") + f"transformer.resblocks.{i}."
            name = rest.split(".")[1] if rest.startswith("self_attn.") else ""
            if name in ("q_proj", "k_proj", "v_proj"):
                kind = rest.rsplit(".", 1)[1]
                p = k.rsplit(".", 2)[0]
                out[f"{base}attn.in_proj_{kind}"] = torch.cat(
                    [state[f"{p}.{n}_proj.{kind}"] for n in "qkv"])
            else:
                out[base + _rename(rest, False)] = v
        else:
            raise RewardError(f"CLIPModel key {k!r} has no OpenCLIP counterpart")
    return out


@REWARDS.register("hpsv2", paper="Wu+23 HPSv2, arXiv:2306.09341",
                  equation="§4.2: s = ⟨E_img/‖·‖, E_txt/‖·‖⟩ (OpenCLIP ViT-H/14 on HPD v2)")
def hpsv2(checkpoint: Any = "xswu/HPSv2:HPS_v2.1_compressed.pt",
          clip: Any = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", device: str | None = None,
          dtype: str = "float32", grad: bool = False) -> ClipPromptReward:
    """Registry factory: HPSv2(.1) from its OpenCLIP checkpoint, converted to ``CLIPModel``.

    Args:
        checkpoint: the ``.pt`` file (path, or ``"org/name:file"`` in the hub cache); None when
            ``clip`` already holds HPSv2 weights in ``CLIPModel`` format.
        clip: directory or hub id with the ViT-H/14 ``CLIPModel`` config and tokenizer.
    """
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    if checkpoint is None:
        m, tok = _clip_and_tokenizer(clip, None, "hpsv2", HOW_HPS)
        return ClipPromptReward(m, tok, "hpsv2", device, dtype, grad)
    state = openclip_to_hf(load_state(resolve_file(checkpoint, "HPS_v2.1_compressed.pt",
                                                   "hpsv2", HOW_HPS)))
    cfg = from_pretrained(CLIPConfig, clip, "hpsv2", HOW_HPS)
    tok = from_pretrained(AutoTokenizer, clip, "hpsv2", HOW_HPS)
    model = CLIPModel(cfg)
    missing_keys, unexpected = model.load_state_dict(state, strict=False)
    missing_keys = [k for k in missing_keys if not k.endswith("position_ids")]
    if missing_keys or unexpected:
        raise RewardError(f"hpsv2: checkpoint {checkpoint!r} does not match the CLIP config of "
                          f"{clip!r}: missing {missing_keys[:4]}, unexpected {unexpected[:4]}")
    return ClipPromptReward(model, tok, "hpsv2", device, dtype, grad)
