"""CLIPScore, PickScore and HPSv2 on tiny random CLIP models saved to tmp dirs (offline)."""

import pytest
import torch

from scorealign.rewards import AsyncReward, RewardError, build_reward
from scorealign.rewards.clip import openclip_to_hf
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


def _hf_to_openclip(model):
    """The inverse layout: what open_clip's ``CLIP.state_dict()`` holds for the same weights."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids"):
            continue
        tower = "visual." if k.startswith("vision_model.") else ""
        k2 = k.split(".", 1)[1] if k.startswith(("vision_model.", "text_model.")) else k
        if ".encoder.layers." in "." + k2:
            i, rest = k2.split(".")[2], k2.split(".", 3)[3]
            base = f"{tower}transformer.resblocks.{i}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj",
                                                                       "v_proj"):
                kind = rest.rsplit(".", 1)[1]
                key = base + f"attn.in_proj_{kind}"
                if key not in out:
                    p = k.rsplit(".", 2)[0]
                    sd = model.state_dict()
                    out[key] = torch.cat([sd[f"{p}.{n}_proj.{kind}"] for n in "qkv"])
                continue
            rest = (rest.replace("self_attn.out_proj", "attn.out_proj")
                    .replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                    .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
            out[base + rest] = v
            continue
        table = {"embeddings.class_embedding": "class_embedding",
                 "embeddings.position_embedding.weight": "positional_embedding",
                 "embeddings.patch_embedding.weight": "conv1.weight",
                 "pre_layrnorm.weight": "ln_pre.weight", "pre_layrnorm.bias": "ln_pre.bias",
                 "post_layernorm.weight": "ln_post.weight", "post_layernorm.bias": "ln_post.bias",
                 "embeddings.token_embedding.weight": "token_embedding.weight",
                 "final_layer_norm.weight": "ln_final.weight",
                 "final_layer_norm.bias": "ln_final.bias"}
        if k == "visual_projection.weight":
            out["visual.proj"] = v.t()
        elif k == "text_projection.weight":
            out["text_projection"] = v.t()
        elif k == "logit_scale":
            out[k] = v
        else:
            out[tower + table[k2]] = v
    return out


def test_hpsv2_from_openclip_checkpoint(tmp_path):
    d, model, tok = tiny_clip(tmp_path)
    oc = _hf_to_openclip(model)
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
