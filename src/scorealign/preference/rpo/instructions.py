"""From a critique to actionable edit instructions (the digits extractor).

RPO prompts a VLM a second time to turn its critique into "reliable and actionable image editing
instructions" [Zhao+25, arXiv:2503.11720, §3.2]. On digits the structured findings already carry
the measurements, so the extractor is a table: each finding becomes one instruction whose text
says what to do and whose ``params`` give the editor the numbers (target prompt and SDEdit
strength, pixel shift, contrast stretch). Order matters: a redraw goes first and makes a stroke
repair redundant; geometric and tonal fixes follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from scorealign.data.digits import NUMBER_WORDS, label_from_prompt, prompt_for
from scorealign.preference.rpo.records import Critique, Instruction, StageError

_ORDER = ("wrong_digit", "broken_stroke", "off_centre", "low_contrast")


@dataclass(frozen=True)
class DigitsInstructionExtractor:
    """Findings → instructions.

    Args:
        redraw_strength: SDEdit strength (fraction of T) for a wrong digit.
        repair_strength: SDEdit strength for a broken stroke (a lighter touch).
    """

    redraw_strength: float = 0.6
    repair_strength: float = 0.35
    name: str = "digits_instructions"

    def __post_init__(self) -> None:
        for k in ("redraw_strength", "repair_strength"):
            v = getattr(self, k)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{k} must be in (0, 1], got {v}")

    def extract(self, critiques: Sequence[Critique]) -> list[list[Instruction]]:
        """Per critique, the ordered edits that address its findings (empty when it is ok)."""
        if isinstance(critiques, Critique) or not isinstance(critiques, (list, tuple)):
            raise StageError(f"{self.name}: expects a list of Critique, got "
                             f"{type(critiques).__name__}")
        return [self._one(i, c) for i, c in enumerate(critiques)]

    def _one(self, i: int, c: Critique) -> list[Instruction]:
        if not isinstance(c, Critique):
            raise StageError(f"{self.name}: item {i} is {type(c).__name__}, expected Critique")
        try:
            y = label_from_prompt(c.prompt)
        except ValueError as e:
            raise StageError(f"{self.name}: item {i}: {e}") from None
        target = prompt_for(y)
        by_code = {f.code: f for f in c.findings}
        out: list[Instruction] = []
        for code in _ORDER:
            f = by_code.get(code)
            if f is None or (code == "broken_stroke" and "wrong_digit" in by_code):
                continue
            if code == "wrong_digit":
                out.append(Instruction(
                    "redraw", f"Redraw the digit as a {y} ({NUMBER_WORDS[y]}), keeping its place "
                    f"and stroke width.", {"target_prompt": target,
                                           "strength": self.redraw_strength},
                    ("wrong_digit",)))
            elif code == "broken_stroke":
                out.append(Instruction(
                    "repair", f"Reconnect the broken stroke of the {y} so it is one continuous "
                    f"line.", {"target_prompt": target, "strength": self.repair_strength},
                    ("broken_stroke",)))
            elif code == "off_centre":
                dy, dx = -float(f.evidence["dy"]), -float(f.evidence["dx"])
                out.append(Instruction(
                    "recenter", f"Move the digit {_move(dy, dx)} to centre it.",
                    {"dy": dy, "dx": dx}, ("off_centre",)))
            elif code == "low_contrast":
                out.append(Instruction(
                    "contrast", "Raise the contrast: make the strokes full white on a black "
                    "background.", {}, ("low_contrast",)))
        for code in sorted(set(by_code) - set(_ORDER)):
            raise StageError(f"{self.name}: item {i}: no instruction for finding code {code!r}; "
                             f"known codes: {list(_ORDER)}")
        return out


def _move(dy: float, dx: float) -> str:
    parts = []
    if abs(dx) >= 0.25:
        parts.append(f"{abs(dx):.1f} px {'right' if dx > 0 else 'left'}")
    if abs(dy) >= 0.25:
        parts.append(f"{abs(dy):.1f} px {'down' if dy > 0 else 'up'}")
    return " and ".join(parts) or "slightly"
