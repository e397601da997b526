"""ImageReward on a tiny random BLIP of the same architecture: a state dict in the released
``ImageReward.pt`` layout is written to a tmp dir and loaded through the registry (offline)."""

import pytest
import torch

from scorealign.rewards import AsyncReward, RewardError, build_reward
from scorealign.rewards.hub import pixels
from scorealign.rewards.imagereward import MEAN, STD, ImageRewardModel, imagereward_to_hf

from tiny_models import TINY_IR, tiny_bert_tokenizer

pytest.importorskip("transformers")
PROMPTS = ["a photo of a cat", "a red car", "hello tree"]


def _released_layout(model):
    """ImageReward.pt's key names for the same weights (inverse of the conversion)."""
    vis = {"embeddings.class_embedding": "cls_token", "embeddings.position_embedding": "pos_embed",
           "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
           "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
           "post_layernorm.weight": "norm.weight", "post_layernorm.bias": "norm.bias"}
    blk = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.qkv": "attn.qkv",
           "self_attn.projection": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    out = {"blip.vision_proj.weight": torch.zeros(3, 24), "blip.itm_head.bias": torch.zeros(2)}
    for k, v in model.state_dict().items():
        if k.startswith("visual."):
            k2 = k[len("visual."):]
            if k2 in vis:
                out["blip.visual_encoder." + vis[k2]] = v
            else:
                _, _, i, rest = k2.split(".", 3)
                name, kind = rest.rsplit(".", 1)
                out[f"blip.visual_encoder.blocks.{i}.{blk[name]}.{kind}"] = v
        elif k.startswith("text."):
            if not k.endswith("position_ids"):
                out["blip.text_encoder." + k[5:]] = v
        else:
            out["mlp.layers." + k[4:]] = v
    return out


def test_imagereward_loads_released_layout_and_scores(tmp_path):
    tok_dir, n = tiny_bert_tokenizer(tmp_path)
    assert TINY_IR["text"]["vocab_size"] == n + 2  # + [DEC], [ENC]
    torch.manual_seed(0)
    ref = ImageRewardModel(TINY_IR["text"], TINY_IR["vision"]).eval()
    state = _released_layout(ref)
    assert set(imagereward_to_hf(state)) == {k for k in ref.state_dict()
                                             if not k.endswith("position_ids")}
    torch.save(state, tmp_path / "ImageReward.pt")
    r = build_reward({"name": "imagereward", "checkpoint": str(tmp_path), "tokenizer": str(tok_dir),
                      "config": TINY_IR})
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = r(x, PROMPTS, {})
    assert out.shape == (3,) and out.dtype == torch.float32
    # by hand: [CLS] state of the image-grounded text encoder through the MLP, standardized
    tok = r.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35,
                      return_tensors="pt")
    assert tok.input_ids.shape == (3, 35) and (tok.input_ids[:, 0] == r.tokenizer.cls_token_id).all()
    with torch.no_grad():
        img = ref.visual(pixel_values=pixels(x, 16)).last_hidden_state
        h = ref.text(input_ids=tok.input_ids, attention_mask=tok.attention_mask,
                     encoder_hidden_states=img).last_hidden_state[:, 0]
        expected = ((ref.mlp(h) - MEAN) / STD).squeeze(-1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with AsyncReward(r) as pool:
        torch.testing.assert_close(pool.submit(x, PROMPTS).result(), out)
    bf = build_reward({"name": "imagereward", "checkpoint": str(tmp_path / "ImageReward.pt"),
                       "tokenizer": str(tok_dir), "config": TINY_IR, "dtype": "bfloat16"})
    assert bf(x, PROMPTS, {}).dtype == torch.float32


def test_imagereward_missing_weights_and_wrong_config(tmp_path):
    with pytest.raises(RewardError) as e:
        build_reward({"name": "imagereward", "checkpoint": str(tmp_path / "ImageReward.pt")})
    assert str(tmp_path / "ImageReward.pt") in str(e.value) and "THUDM/ImageReward" in str(e.value)
    with pytest.raises(RewardError, match="THUDM/ImageReward.*not in the local Hugging Face"):
        build_reward({"name": "imagereward"})
    tok_dir, _ = tiny_bert_tokenizer(tmp_path)
    torch.save({"mlp.layers.0.weight": torch.zeros(1024, 32)}, tmp_path / "bad.pt")
    with pytest.raises(RewardError, match="does not match"):
        build_reward({"name": "imagereward", "checkpoint": str(tmp_path / "bad.pt"),
                      "tokenizer": str(tok_dir), "config": TINY_IR})
