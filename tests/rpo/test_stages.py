"""The RPO stages on digits: what each finds or does, and clear errors on malformed input."""

from __future__ import annotations

import pytest
import torch

from scorealign.data.digits import load_digits
from scorealign.preference.rpo.digits_critic import (DigitsCritic, ImageThresholds, centre_offset, contrast,
                                          fragment_fraction)
from scorealign.preference.rpo.editors import ImageOpsEditor, RoutingEditor, SDEditEditor, shift
from scorealign.preference.rpo.instructions import DigitsInstructionExtractor
from scorealign.preference.rpo.pipeline import build_rpo_pairs
from scorealign.preference.rpo.records import Critique, Finding, Instruction, StageError
from scorealign.preference.rpo.verifier import CritiqueVerifier


class FakeClassifier(torch.nn.Module):
    """Logits that always favour ``label`` (p ≈ 1): the critic's wrong-digit test in isolation."""

    def __init__(self, label: int):
        super().__init__()
        self.label = label

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 10)
        logits[:, self.label] = 20.0
        return logits


@pytest.fixture(scope="module")
def real():
    return load_digits("test")


@pytest.fixture(scope="module")
def thresholds():
    return ImageThresholds.calibrate(load_digits("train").images, 0.97)


def _clean(real, thresholds, label):
    """A real test digit ``label`` that trips no image statistic."""
    for x, y in zip(real.images, real.labels):
        if int(y) != label:
            continue
        x = x[None]
        if centre_offset(x).norm() < 0.5 * thresholds.max_offset and \
                float(fragment_fraction(x)) == 0.0 and float(contrast(x)) > 0.95:
            return x
    raise AssertionError("no clean digit found")


def test_thresholds_flag_few_real_digits(real, thresholds):
    x = real.images
    rates = [(centre_offset(x).norm(dim=-1) > thresholds.max_offset).float().mean(),
             (fragment_fraction(x) > thresholds.max_fragment).float().mean(),
             (contrast(x) < thresholds.min_contrast).float().mean()]
    assert all(float(r) < 0.08 for r in rates), rates  # calibrated at q = 0.97 on train


def test_critic_findings_and_the_fixes_that_remove_them(real, thresholds):
    x = _clean(real, thresholds, 7)
    critic = DigitsCritic(FakeClassifier(7), thresholds)
    off = shift(x, 0.0, 2.0)                                  # 2 px to the right
    faint = ((x + 1) / 2 * 0.4 + 0.05) * 2 - 1                # ink in [0.05, 0.45]
    blobs = torch.full((1, 1, 8, 8), -1.0)
    blobs[..., 1:3, 1:3] = 1.0
    blobs[..., 5:7, 5:7] = 1.0                                # two equal pieces: 50% outside
    imgs = torch.cat([x, off, faint, blobs])
    prompts = ["a handwritten 7", "a handwritten 7", "the digit seven", "a handwritten 3"]
    crit = critic.critique(imgs, prompts)
    assert crit[0].ok and "nothing to fix" in crit[0].text
    assert crit[1].codes == {"off_centre"} and "right" in crit[1].text
    assert crit[2].codes == {"low_contrast"}
    assert {"broken_stroke", "wrong_digit"} <= crit[3].codes
    wrong = next(f for f in crit[3].findings if f.code == "wrong_digit")
    assert wrong.evidence["predicted"] == 7 and "reads as a 7" in wrong.detail

    plans = DigitsInstructionExtractor().extract(crit)
    assert plans[0] == []
    assert [i.op for i in plans[1]] == ["recenter"] and plans[1][0].params["dx"] < 0
    assert [i.op for i in plans[2]] == ["contrast"]
    assert [i.op for i in plans[3]][0] == "redraw"            # a redraw supersedes a repair
    assert "repair" not in [i.op for i in plans[3]]
    assert plans[3][0].params["target_prompt"] == "a handwritten 3"

    ops = ImageOpsEditor()
    fixed = ops.edit(imgs[1:3], prompts[1:3], [plans[1][0], plans[2][0]])
    assert centre_offset(fixed[:1]).norm() < centre_offset(off).norm()
    assert float(contrast(fixed[1:2])) > 0.95
    verdicts = CritiqueVerifier(critic).verify(imgs[1:3], fixed, prompts[1:3], crit[1:3],
                                               plans[1:3])
    assert all(v.keep for v in verdicts), [v.reason for v in verdicts]


def test_verifier_rejects_unfixed_new_and_null_edits(real, thresholds):
    x = _clean(real, thresholds, 7)
    critic = DigitsCritic(FakeClassifier(7), thresholds)
    off = shift(x, 0.0, 2.0)
    before = critic.critique(torch.cat([off, off, x]), ["a handwritten 7"] * 3)
    plan = [[Instruction("recenter", "centre it", {"dy": 0, "dx": -2}, ("off_centre",))],
            [Instruction("recenter", "centre it", {"dy": 0, "dx": -2}, ("off_centre",))],
            [Instruction("contrast", "more contrast", {}, ("low_contrast",))]]
    edited = torch.cat([off, shift(x, 0.0, -2.5), x])  # unchanged / overshoot / unchanged
    v = CritiqueVerifier(critic).verify(torch.cat([off, off, x]), edited, ["a handwritten 7"] * 3,
                                        before, plan)
    assert not v[0].keep and "changed nothing" in v[0].reason
    assert not v[1].keep and "off_centre" in v[1].reason
    assert not v[2].keep


def test_project_classifier_critic_reads_real_digits(real):
    """The real critic (project classifier, calibrated): a real 4 asked to be a 4 vs a 9."""
    critic = DigitsCritic.calibrated()
    x = real.images[real.labels == 4][:20]
    ok = critic.critique(x, ["a handwritten 4"] * len(x))
    bad = critic.critique(x, ["a handwritten 9"] * len(x))
    assert sum("wrong_digit" in c.codes for c in ok) <= 2
    assert sum("wrong_digit" in c.codes for c in bad) >= 18


def test_sdedit_editor_follows_strength_and_target(tiny_base):
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ins = [Instruction("redraw", "redraw as 3", {"target_prompt": "a handwritten 3",
                                                 "strength": s}) for s in (0.05, 0.05, 0.9, 0.9)]
    out = SDEditEditor(tiny_base, steps=10, seed=0).edit(x, ["a handwritten 1"] * 4, ins)
    assert out.shape == x.shape and out.abs().max() <= 1.0
    small, large = (out[:2] - x[:2]).abs().mean(), (out[2:] - x[2:]).abs().mean()
    assert small < large  # a light touch stays closer to the original
    again = SDEditEditor(tiny_base, steps=10, seed=0).edit(x, ["a handwritten 1"] * 4, ins)
    assert torch.equal(out, again)  # seeded


def test_stages_reject_malformed_input(thresholds, tiny_base):
    critic = DigitsCritic(FakeClassifier(1), thresholds)
    x = torch.zeros(2, 1, 8, 8)
    bad = {"shape": torch.zeros(2, 8, 8), "nan": torch.full((2, 1, 8, 8), float("nan")),
           "range": torch.full((2, 1, 8, 8), 3.0), "dtype": torch.zeros(2, 1, 8, 8, dtype=torch.int64)}
    for what, img in bad.items():
        with pytest.raises(StageError, match="digits_critic"):
            critic.critique(img, ["a handwritten 1"] * 2)
    with pytest.raises(StageError, match="expected 2 prompts"):
        critic.critique(x, ["a handwritten 1"])
    with pytest.raises(StageError, match="names no digit"):
        critic.critique(x, ["a cat", "a dog"])
    ex = DigitsInstructionExtractor()
    with pytest.raises(StageError, match="list of Critique"):
        ex.extract("not a list")
    with pytest.raises(StageError, match="item 0 is str"):
        ex.extract(["text"])
    with pytest.raises(StageError, match="no instruction for finding code 'blurry'"):
        ex.extract([Critique("a handwritten 1", "blurry", (Finding("blurry", 0.5, "blurry"),))])
    with pytest.raises(StageError, match="severity"):
        Finding("off_centre", 2.0, "x")
    with pytest.raises(StageError, match="needs params.strength"):
        SDEditEditor(tiny_base).edit(x, ["a handwritten 1"] * 2,
                                     [Instruction("redraw", "redraw", {})] * 2)
    with pytest.raises(StageError, match="expected 2 instructions"):
        ImageOpsEditor().edit(x, ["a handwritten 1"] * 2, [Instruction("contrast", "c")])
    with pytest.raises(StageError, match="cannot perform op 'redraw'"):
        ImageOpsEditor().edit(x, ["a handwritten 1"] * 2, [Instruction("redraw", "r")] * 2)
    with pytest.raises(StageError, match="no editor for op 'paint'"):
        RoutingEditor({"contrast": ImageOpsEditor()}).edit(
            x, ["a handwritten 1"] * 2, [Instruction("paint", "paint it")] * 2)
    with pytest.raises(StageError, match="do not match"):
        CritiqueVerifier(critic).verify(x, torch.zeros(2, 1, 16, 16), ["a handwritten 1"] * 2,
                                        critic.critique(x, ["a handwritten 1"] * 2), [[], []])


def test_pipeline_names_a_faulty_custom_stage(thresholds):
    class BadCritic:
        name = "my_vlm_critic"

        def critique(self, images, prompts):
            return ["looks fine"] * len(prompts)

    with pytest.raises(StageError, match="my_vlm_critic: item 0 is str"):
        build_rpo_pairs(torch.zeros(2, 1, 8, 8), ["a handwritten 1"] * 2, BadCritic(),
                        DigitsInstructionExtractor(), ImageOpsEditor(), None)
