"""The values that flow between the RPO stages: findings, critiques, instructions, verdicts.

RPO [Zhao+25, arXiv:2503.11720, Fig. 1 and §3] curates a preference pair from one generated image
in four moves: a critic writes a detailed critique, actionable edit instructions are extracted
from it, an editor applies them, and the refined image is preferred over the original. These
frozen dataclasses are the messages of that pipeline; each validates itself on construction so
that a stage handed malformed input fails with a :class:`StageError` that names the stage and the
field, never later and elsewhere.
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

FINDING_CODES = ("wrong_digit", "broken_stroke", "off_centre", "low_contrast")


class StageError(ScorealignError, ValueError):
    """Malformed input to (or output of) a pipeline stage; the message names the stage."""


def check_images(images: Any, stage: str, n: int | None = None) -> Tensor:
    """Images ``[B, C, H, W]`` float in [-1, 1] with finite values; else a StageError.

    Args:
        images: the candidate batch.
        stage: the stage's name, for the message.
        n: the batch size it must have, when known.
    Returns:
        ``images`` unchanged.
    """
    if not isinstance(images, Tensor):
        raise StageError(f"{stage}: images must be a torch.Tensor [B, C, H, W], got "
                         f"{type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise StageError(f"{stage}: images must have shape [B, C, H, W] with C in (1, 3), got "
                         f"{tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise StageError(f"{stage}: images must be floating point in [-1, 1], got {images.dtype}")
    if n is not None and images.shape[0] != n:
        raise StageError(f"{stage}: expected {n} images, got {images.shape[0]}")
    if not bool(torch.isfinite(images).all()):
        raise StageError(f"{stage}: images contain NaN or inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise StageError(f"{stage}: images must lie in [-1, 1], got range [{lo:.3g}, {hi:.3g}]")
    return images


def check_prompts(prompts: Any, stage: str, n: int) -> list[str]:
    """``n`` non-empty strings; else a StageError naming the first bad entry."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise StageError(f"{stage}: prompts must be a list of {n} strings, got "
                         f"{type(prompts).__name__}")
    if len(prompts) != n:
        raise StageError(f"{stage}: expected {n} prompts (one per image), got {len(prompts)}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise StageError(f"{stage}: prompt {i} must be a non-empty string, got {p!r}")
    return list(prompts)


@dataclass(frozen=True)
class Finding:
    """One structured problem a critic found.

    Attributes:
        code: what is wrong (digits: one of :data:`FINDING_CODES`; other critics may add codes).
        severity: in [0, 1], how far the image is from acceptable.
        detail: one sentence a person can read.
        evidence: the measured numbers behind it (JSON-serializable).
    """

    code: str
    severity: float
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code:
            raise StageError(f"Finding.code must be a non-empty string, got {self.code!r}")
        if not isinstance(self.severity, (int, float)) or not 0.0 <= self.severity <= 1.0 \
                or math.isnan(self.severity):
            raise StageError(f"Finding {self.code!r}: severity must be in [0, 1], got "
                             f"{self.severity!r}")
        if not isinstance(self.detail, str):
            raise StageError(f"Finding {self.code!r}: detail must be a string")

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": float(self.severity), "detail": self.detail,
                "evidence": self.evidence}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(d["code"], float(d["severity"]), d["detail"], dict(d.get("evidence", {})))


@dataclass(frozen=True)
class Critique:
    """A critic's verdict on one (image, prompt): free text plus structured findings."""

    prompt: str
    text: str
    findings: tuple[Finding, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise StageError(f"Critique.text must be a string, got {type(self.text).__name__}")
        if not all(isinstance(f, Finding) for f in self.findings):
            raise StageError("Critique.findings must be Finding objects")
        object.__setattr__(self, "findings", tuple(self.findings))

    @property
    def codes(self) -> set[str]:
        """The finding codes."""
        return {f.code for f in self.findings}

    @property
    def ok(self) -> bool:
        """True when the critic found nothing to fix."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text,
                "findings": [f.to_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Critique":
        return cls(d["prompt"], d["text"], tuple(Finding.from_dict(f) for f in d["findings"]))


@dataclass(frozen=True)
class Instruction:
    """One actionable edit.

    Attributes:
        op: what kind of edit (``redraw``, ``repair``, ``recenter``, ``contrast``, or ``text``
            for a free-form instruction an instruction-following editor executes).
        text: the instruction as a person (or an instruction-based editor) reads it.
        params: the numbers the editor needs (target prompt, strength, shift, ...).
        addresses: the finding codes this edit is meant to fix (what the verifier checks).
    """

    op: str
    text: str
    params: dict[str, Any] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.op, str) or not self.op:
            raise StageError(f"Instruction.op must be a non-empty string, got {self.op!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise StageError(f"Instruction {self.op!r}: text must be a non-empty string")
        if not isinstance(self.params, dict):
            raise StageError(f"Instruction {self.op!r}: params must be a dict")
        object.__setattr__(self, "addresses", tuple(self.addresses))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "text": self.text, "params": self.params,
                "addresses": list(self.addresses)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Instruction":
        return cls(d["op"], d["text"], dict(d.get("params", {})), tuple(d.get("addresses", ())))


@dataclass(frozen=True)
class Verdict:
    """The verifier's decision on one (original, edited) pair."""

    keep: bool
    reason: str
    after: Critique | None = None
