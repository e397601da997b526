"""LAION aesthetic through the shared loader: head from 'org/name:file' in a (tmp) hub cache,
dtype and placement, the missing-weights messages."""

import pytest
import torch
from torch import nn

from scorealign.rewards import RewardError, build_reward

transformers = pytest.importorskip("transformers")


def test_laion_head_from_hub_cache_and_bf16(tmp_path, monkeypatch):
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, image_size=16, patch_size=8,
                                        projection_dim=12)
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    head = nn.Sequential(nn.Linear(12, 16), nn.Dropout(0.2), nn.Linear(16, 8), nn.Dropout(0.2),
                         nn.Linear(8, 4), nn.Dropout(0.1), nn.Linear(4, 3), nn.Linear(3, 1))
    # a hub cache laid out as huggingface_hub writes it: models--org--name/snapshots/<rev>/file
    cache = tmp_path / "hub"
    snap = cache / "models--org--aesthetic" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (cache / "models--org--aesthetic" / "refs").mkdir()
    (cache / "models--org--aesthetic" / "refs" / "main").write_text("0" * 40)
    torch.save({f"layers.{k}": v for k, v in head.state_dict().items()}, snap / "head.pth")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    r = build_reward({"name": "laion_aesthetic", "clip": str(tmp_path / "clip"),
                      "head": "org/aesthetic:head.pth"})
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    full = r(x, ["", ""], {})
    bf = build_reward({"name": "laion_aesthetic", "clip": str(tmp_path / "clip"),
                       "head": str(snap / "head.pth"), "dtype": "bfloat16"})
    half = bf(x, ["", ""], {})
    assert half.dtype == torch.float32 and next(bf.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(half, full, atol=0.05 * float(full.abs().max()) + 1e-2, rtol=0)
    with pytest.raises(RewardError) as e:
        build_reward({"name": "laion_aesthetic", "clip": str(tmp_path / "clip"),
                      "head": "org/aesthetic:missing.pth"})
    assert "org/aesthetic" in str(e.value) and "hf download" in str(e.value)


def test_laion_missing_clip_names_path_and_how():
    with pytest.raises(RewardError) as e:
        build_reward({"name": "laion_aesthetic", "clip": "/nonexistent/clip-l14"})
    assert "/nonexistent/clip-l14" in str(e.value) and "hf download" in str(e.value)
    with pytest.raises(RewardError) as e:
        build_reward({"name": "laion_aesthetic", "clip": "nobody/no-clip"})
    assert "nobody/no-clip" in str(e.value) and "not in the local Hugging Face cache" in str(e.value)
