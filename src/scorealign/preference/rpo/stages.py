"""The five replaceable parts of RPO pair building, each a small protocol.

critic (images, prompts) → critiques; instruction extractor (critiques) → instructions;
editor (images, prompts, instructions) → edited images; verifier (originals, edited, prompts,
critiques, instructions) → verdicts; writer (pairs) → a preference dataset on disk
[Zhao+25 RPO, arXiv:2503.11720, Fig. 1: critique → instructions → editing → refined ≻ original].

Stages are batched (one call per batch of images) because the digits editor runs the diffusion
model; any object with the method below is a stage, and :func:`scorealign.preference.rpo.pipeline.build_rpo_pairs`
validates what each returns, so a faulty custom stage fails at its boundary with a StageError.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from torch import Tensor

from scorealign.preference.rpo.records import Critique, Instruction, StageError, Verdict


@runtime_checkable
class Critic(Protocol):
    """``critique(images [B, C, H, W] in [-1, 1], prompts) -> B critiques``."""

    def critique(self, images: Tensor, prompts: Sequence[str]) -> list[Critique]: ...


@runtime_checkable
class InstructionExtractor(Protocol):
    """``extract(critiques) -> per critique, the edits to apply in order (may be empty)``."""

    def extract(self, critiques: Sequence[Critique]) -> list[list[Instruction]]: ...


@runtime_checkable
class Editor(Protocol):
    """``edit(images, prompts, instructions) -> edited images``, one instruction per image."""

    def edit(self, images: Tensor, prompts: Sequence[str],
             instructions: Sequence[Instruction]) -> Tensor: ...


@runtime_checkable
class Verifier(Protocol):
    """``verify(...) -> one Verdict per pair``: keep only edits that fix what was found."""

    def verify(self, originals: Tensor, edited: Tensor, prompts: Sequence[str],
               critiques: Sequence[Critique],
               instructions: Sequence[Sequence[Instruction]]) -> list[Verdict]: ...


def check_critiques(out: object, n: int, stage: str) -> list[Critique]:
    """A list of ``n`` Critique objects, else a StageError naming ``stage``."""
    if not isinstance(out, (list, tuple)) or len(out) != n:
        raise StageError(f"{stage}: must return a list of {n} Critique, got "
                         f"{type(out).__name__} of length {len(out) if hasattr(out, '__len__') else '?'}")
    for i, c in enumerate(out):
        if not isinstance(c, Critique):
            raise StageError(f"{stage}: item {i} is {type(c).__name__}, expected Critique")
    return list(out)


def check_instruction_lists(out: object, n: int, stage: str) -> list[list[Instruction]]:
    """A list of ``n`` lists of Instruction, else a StageError naming ``stage``."""
    if not isinstance(out, (list, tuple)) or len(out) != n:
        raise StageError(f"{stage}: must return {n} lists of Instruction (one per critique)")
    for i, lst in enumerate(out):
        if not isinstance(lst, (list, tuple)) or not all(isinstance(x, Instruction) for x in lst):
            raise StageError(f"{stage}: entry {i} must be a list of Instruction, got {lst!r}")
    return [list(x) for x in out]


def check_verdicts(out: object, n: int, stage: str) -> list[Verdict]:
    """A list of ``n`` Verdict objects, else a StageError naming ``stage``."""
    if not isinstance(out, (list, tuple)) or len(out) != n or \
            not all(isinstance(v, Verdict) for v in out):
        raise StageError(f"{stage}: must return a list of {n} Verdict")
    return list(out)
