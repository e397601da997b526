"""Rich preference optimization (RPO) pair building and Diffusion-DPO training.

Pair building [Zhao+25, arXiv:2503.11720]: a critic writes a critique with structured findings,
an extractor turns it into edit instructions, an editor applies them, a verifier keeps the pair
only when the edit fixed what was found, and a writer seals the dataset on disk (``stages.py``,
``pipeline.py``, ``dataset.py``). Training: Diffusion-DPO [Wallace+23, arXiv:2311.12908] on those
pairs through the shared pairwise links (``dpo_train.py``; the log-ratio surrogate lives in
``scorealign.preference.diffusion_logratio``).
"""

from scorealign.preference.rpo.records import (FINDING_CODES, Critique, Finding, Instruction, StageError,
                                    Verdict)
from scorealign.preference.rpo.stages import Critic, Editor, InstructionExtractor, Verifier

__all__ = ["FINDING_CODES", "Critic", "Critique", "Editor", "Finding", "Instruction",
           "InstructionExtractor", "StageError", "Verdict", "Verifier"]
