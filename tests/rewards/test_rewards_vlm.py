"""VLM yes/no reward on a tiny random LLaVA saved to a tmp dir (offline)."""

import pytest
import torch

from scorealign.rewards import AsyncReward, RewardError, build_reward

from tiny_models import tiny_llava

pytest.importorskip("transformers")
PROMPTS = ["a cat", "a photo of the red car", "tree"]


def test_vlm_yes_probability_batched_and_swapped_answers(tmp_path):
    d, model, vocab = tiny_llava(tmp_path)
    r = build_reward({"name": "vlm_yes_no", "model": str(d)})
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    p = r(x, PROMPTS, {})
    assert p.shape == (3,) and p.dtype == torch.float32 and ((p > 0) & (p < 1)).all()
    # prompts of different lengths: left padding makes each row equal to its own batch of one
    one = torch.cat([r(x[i:i + 1], PROMPTS[i:i + 1], {}) for i in range(3)])
    torch.testing.assert_close(p, one, rtol=1e-4, atol=1e-5)
    # by hand from the model's next-token logits
    inputs = r.processor(images=[__import__("PIL.Image").Image.fromarray(a) for a in
                                 __import__("scorealign.rewards", fromlist=["to_uint8"])
                                 .to_uint8(x[:1])],
                         text=[r.text(PROMPTS[0])], return_tensors="pt")
    assert int((inputs.input_ids == vocab["<image>"]).sum()) == 4  # (16/8)² patch tokens
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    by_hand = logits[[vocab["yes"], vocab["no"]]].softmax(-1)[0]
    torch.testing.assert_close(p[0], by_hand, rtol=1e-4, atol=1e-6)
    # asking for ("no", "yes") gives 1 − p
    flipped = build_reward({"name": "vlm_yes_no", "model": str(d), "answers": ["no", "yes"]})
    torch.testing.assert_close(flipped(x, PROMPTS, {}), 1 - p, rtol=1e-4, atol=1e-5)
    with AsyncReward(r) as pool:
        torch.testing.assert_close(pool.submit(x, PROMPTS).result(), p)


def test_vlm_errors(tmp_path):
    with pytest.raises(RewardError) as e:
        build_reward({"name": "vlm_yes_no", "model": str(tmp_path / "no-vlm")})
    assert str(tmp_path / "no-vlm") in str(e.value) and "hf download" in str(e.value)
    d, _, _ = tiny_llava(tmp_path)
    with pytest.raises(RewardError, match="different tokens"):
        build_reward({"name": "vlm_yes_no", "model": str(d), "answers": ["yes", "yes"]})
