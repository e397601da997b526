"""Keep a pair only when the edit fixes what the critique found.

RPO relabels the refined images before training [Zhao+25, arXiv:2503.11720, §3.3: edited images
are filtered so that the refined image is indeed better]. Here the verifier re-runs the critic on
the edited image and keeps the pair when (1) every finding the instructions addressed is gone,
(2) the edit introduced no new finding, and (3) the edit changed the image at all.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from scorealign.preference.rpo.records import Critique, Instruction, StageError, Verdict, check_images, \
    check_prompts
from scorealign.preference.rpo.stages import Critic, check_critiques


class CritiqueVerifier:
    """Verify edits by critiquing the edited image again.

    Args:
        critic: the critic that found the problems (any :class:`~scorealign.preference.rpo.stages.Critic`).
        min_change: smallest max-abs pixel change that counts as an edit.
    """

    name = "critique_verifier"

    def __init__(self, critic: Critic, min_change: float = 1e-3):
        self.critic, self.min_change = critic, min_change

    def verify(self, originals: Tensor, edited: Tensor, prompts: Sequence[str],
               critiques: Sequence[Critique],
               instructions: Sequence[Sequence[Instruction]]) -> list[Verdict]:
        """One :class:`Verdict` per (original, edited) pair."""
        originals = check_images(originals, self.name)
        n = originals.shape[0]
        edited = check_images(edited, self.name, n)
        if edited.shape != originals.shape:
            raise StageError(f"{self.name}: edited images {tuple(edited.shape)} do not match the "
                             f"originals {tuple(originals.shape)}")
        prompts = check_prompts(prompts, self.name, n)
        critiques = check_critiques(critiques, n, self.name)
        if not isinstance(instructions, (list, tuple)) or len(instructions) != n:
            raise StageError(f"{self.name}: expected {n} instruction lists")
        after = check_critiques(self.critic.critique(edited, prompts), n,
                                getattr(self.critic, "name", "critic"))
        change = (edited - originals).flatten(1).abs().amax(1)
        return [self._one(critiques[i], after[i], instructions[i], float(change[i]))
                for i in range(n)]

    def _one(self, before: Critique, after: Critique, ins: Sequence[Instruction],
             change: float) -> Verdict:
        addressed = {c for x in ins for c in x.addresses}
        if not ins:
            return Verdict(False, "no instruction: nothing to fix", after)
        if change < self.min_change:
            return Verdict(False, "the edit changed nothing", after)
        left = sorted(addressed & after.codes)
        if left:
            return Verdict(False, f"not fixed: {', '.join(left)}", after)
        new = sorted(after.codes - before.codes)
        if new:
            return Verdict(False, f"edit introduced: {', '.join(new)}", after)
        return Verdict(True, f"fixed: {', '.join(sorted(addressed))}", after)
