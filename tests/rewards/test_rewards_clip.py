"""CLIPScore, PickScore and HPSv2 on tiny random CLIP models saved to tmp dirs (offline)."""

import pytest
import torch

from scorealign.rewards import AsyncReward, RewardError, build_reward
from scorealign.rewards.clip import hf_to_openclip, openclip_to_hf
from scorealign.rewards.hub import pixels

from tiny_models import tiny_clip

pytest.importorskip("transformers")
PROMPTS = ["a cat", "a red car", "hello"]


def _cos(model, tok, x, prompts):
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels(x, 16))
        img = getattr(img, "pooler_output", img)
        t = tok(prompts, padding="max_length", max_length=16, truncation=True,
                return_tensors="pt")
        txt = model.get_text_features(input_ids=t.input_ids, attention_mask=t.attention_mask)
        txt = getattr(txt, "pooler_output", txt)
    return torch.nn.functional.cosine_similarity(img, txt, dim=-1)


def test_clipscore_and_pickscore_from_local_dir(tmp_path):
    d, model, tok = tiny_clip(tmp_path)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cos = _cos(model, tok, x, PROMPTS)
    cs = build_reward({"name": "clipscore", "model": str(d)})
    r = cs(x, PROMPTS, {})
    assert r.shape == (3,) and r.dtype == torch.float32
    torch.testing.assert_close(r, 2.5 * cos.clamp_min(0), rtol=1e-5, atol=1e-6)
    ps = build_reward({"name": "pickscore", "model": str(d), "processor": str(d)})
    torch.testing.assert_close(ps(x, PROMPTS, {}), model.logit_scale.exp().detach() * cos,
                               rtol=1e-5, atol=1e-5)
    # batched = one by one; each image is scored against its own prompt
    one = torch.cat([ps(x[i:i + 1], PROMPTS[i:i + 1], {}) for i in range(3)])
    torch.testing.assert_close(one, ps(x, PROMPTS, {}), rtol=1e-5, atol=1e-5)
    swapped = ps(x, PROMPTS[::-1], {})
    assert not torch.allclose(swapped, ps(x, PROMPTS, {}))


def test_clip_reward_dtype_thread_and_gradient(tmp_path):
    d, _, _ = tiny_clip(tmp_path)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    full = build_reward({"name": "pickscore", "model": str(d), "processor": str(d)})
    bf = build_reward({"name": "pickscore", "model": str(d), "processor": str(d),
                       "dtype": "bfloat16"})
    r32, r16 = full(x, PROMPTS[:2], {}), bf(x, PROMPTS[:2], {})
    assert r16.dtype == torch.float32 and next(bf.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(r16, r32, atol=0.05 * float(r32.abs().max()) + 1e-3, rtol=0)
    with AsyncReward(full) as pool:  # the background-reward thread
        torch.testing.assert_close(pool.submit(x, PROMPTS[:2]).result(), r32)
    g = build_reward({"name": "pickscore", "model": str(d), "processor": str(d),
                      "grad": True})
    xg = x.clone().requires_grad_(True)
    g(xg, ["a", "b"], {}).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert all(p.grad is None for p in g.parameters())  # reward weights stay frozen


def test_hpsv2_from_openclip_checkpoint(tmp_path):
    d, model, tok = tiny_clip(tmp_path)
    oc = hf_to_openclip(model.state_dict())
    # open_clip's own names (open_clip.model.CLIP / VisionTransformer / ResidualAttentionBlock)
    assert {"visual.conv1.weight", "visual.class_embedding", "visual.proj", "text_projection",
            "token_embedding.weight", "ln_final.weight", "positional_embedding",
            "visual.transformer.resblocks.0.attn.in_proj_weight",
            "transformer.resblocks.0.attn.out_proj.weight", "transformer.resblocks.0.ln_1.bias",
            "visual.transformer.resblocks.0.mlp.c_fc.weight"} <= oc.keys()
    assert oc["visual.transformer.resblocks.0.attn.in_proj_weight"].shape[0] == \
        3 * oc["visual.transformer.resblocks.0.attn.out_proj.weight"].shape[0]
    assert openclip_to_hf(oc).keys() == {k for k in model.state_dict()
                                         if not k.endswith("position_ids")}
    torch.save({"state_dict": {f"module.{k}": v for k, v in oc.items()}}, tmp_path / "hps.pt")
    # the config dir holds random weights of another seed: only the checkpoint's may be used
    cfg_dir, _, _ = tiny_clip(tmp_path, "other", seed=5)
    r = build_reward({"name": "hpsv2", "checkpoint": str(tmp_path / "hps.pt"),
                      "clip": str(cfg_dir)})
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    torch.testing.assert_close(r(x, PROMPTS, {}), _cos(model, tok, x, PROMPTS),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(RewardError, match="no CLIPModel counterpart"):
        openclip_to_hf({"visual.trunk.stem.0.weight": torch.zeros(1)})


@pytest.mark.parametrize("cfg,needle", [
    ({"name": "clipscore", "model": "/nonexistent/clip"}, "/nonexistent/clip"),
    ({"name": "pickscore", "model": "nobody/not-a-model"}, "nobody/not-a-model"),
    ({"name": "hpsv2", "checkpoint": "/nonexistent/hps.pt"}, "/nonexistent/hps.pt"),
    ({"name": "hpsv2", "checkpoint": "nobody/hps:x.pt"}, "nobody/hps"),
])
def test_missing_weights_name_the_source_and_how_to_get_them(cfg, needle):
    with pytest.raises(RewardError) as e:
        build_reward(cfg)
    msg = str(e.value)
    assert needle in msg and "weights not found" in msg and "hf download" in msg
