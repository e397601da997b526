"""The real-model stages, offline with tiny random models built from configs and saved locally."""

from __future__ import annotations

import pytest
import torch

from scorealign.preference.rpo.hf_parts import (InstructPix2PixEditor, TextInstructionExtractor, VLMCritic,
                                     parse_findings)
from scorealign.preference.rpo.records import Critique, Finding, Instruction, StageError


def test_parse_findings_reads_codes_and_sentences():
    text = "The digit is off-centre. Strokes look faint and washed out. Not a 7 at all."
    f = {x.code: x for x in parse_findings(text)}
    assert set(f) == {"off_centre", "low_contrast", "wrong_digit"}
    assert f["off_centre"].detail == "The digit is off-centre"
    assert parse_findings("A clean, centred seven.") == ()
    with pytest.raises(StageError):
        parse_findings(None)


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration,
                              BlipProcessor)
    from transformers.models.blip import BlipImageProcessorPil

    from scorealign.nets.text import minilm_path

    tok = BertTokenizerFast.from_pretrained(str(minilm_path()))
    cfg = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, bos_token_id=tok.cls_token_id,
                         sep_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
                         max_position_embeddings=96),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8), projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(cfg)
    path = tmp_path_factory.mktemp("vlm") / "tiny_blip"
    model.save_pretrained(path)
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(path)
    return path


def test_vlm_critic_loads_locally_and_critiques(tiny_blip):
    critic = VLMCritic(tiny_blip, max_new_tokens=6)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = critic.critique(x, ["a handwritten 7", "a handwritten 1"])
    assert len(out) == 2 and all(isinstance(c, Critique) and isinstance(c.text, str) for c in out)
    assert all(c.findings == parse_findings(c.text) for c in out)
    again = critic.critique(x, ["a handwritten 7", "a handwritten 1"])
    assert [c.text for c in again] == [c.text for c in out]  # greedy decoding
    with pytest.raises(StageError, match="vlm_critic"):
        critic.critique(x, ["only one prompt"])
    with pytest.raises(FileNotFoundError, match="no hub downloads"):
        VLMCritic(tiny_blip / "missing")


def test_text_instructions_and_instruct_pix2pix_editor(tmp_path):
    from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

    sd = pytest.importorskip("scorealign.policy.sd")
    pipe = sd.build_tiny_sd_pipeline(seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        unet = UNet2DConditionModel(**{**pipe.unet.config, "in_channels": 8})
    p2p = StableDiffusionInstructPix2PixPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=unet,
        scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    p2p.save_pretrained(tmp_path / "p2p")
    crit = [Critique("a handwritten 7", "off-centre", (Finding("off_centre", 1.0, "it is off-centre"),))]
    plan = TextInstructionExtractor().extract(crit)
    assert plan[0][0].op == "text" and "off-centre" in plan[0][0].text
    editor = InstructPix2PixEditor(tmp_path / "p2p", steps=2)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = editor.edit(x, ["a handwritten 7"] * 2, [plan[0][0]] * 2)
    assert out.shape == x.shape and out.abs().max() <= 1.0 and torch.isfinite(out).all()
    with pytest.raises(StageError, match="instruct_pix2pix"):
        editor.edit(x, ["a handwritten 7"] * 2, [Instruction("text", "x")])
