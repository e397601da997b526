"""RPO pair building: critic → instructions → editor → verifier, and the reward-labelled baseline.

:func:`build_rpo_pairs` runs the four stages over a batch of generated images and returns the
kept pairs (edited ≻ original) [Zhao+25 RPO, arXiv:2503.11720, Fig. 1]; every stage's output is
validated at its boundary. :func:`build_reward_pairs` is the baseline RPO improves on: two samples
per prompt, the one with the higher reward wins [as in Diffusion-DPO's AI-feedback variant,
Wallace+23, §5.3, and the reward-labelled pairs of Zhao+25, §4].
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from scorealign.preference.rpo.records import StageError, check_images, check_prompts
from scorealign.preference.rpo.stages import (Critic, Editor, InstructionExtractor, Verifier, check_critiques,
                                   check_instruction_lists, check_verdicts)


@dataclass(frozen=True)
class PairItem:
    """One preference pair in memory: ``chosen`` ≻ ``rejected`` for ``prompt``."""

    prompt: str
    chosen: Tensor
    rejected: Tensor
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildStats:
    """What happened to the images: how many were flagged, edited, kept, and why not."""

    images: int = 0
    flagged: int = 0
    kept: int = 0
    findings: Counter = field(default_factory=Counter)
    fixed: Counter = field(default_factory=Counter)
    rejections: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "flagged": self.flagged, "kept": self.kept,
                "findings": dict(self.findings), "fixed": dict(self.fixed),
                "rejections": dict(self.rejections)}


def _name(stage: object) -> str:
    return str(getattr(stage, "name", type(stage).__name__))


def build_rpo_pairs(images: Tensor, prompts: Sequence[str], critic: Critic,
                    extractor: InstructionExtractor, editor: Editor, verifier: Verifier,
                    attempts: int = 1) -> tuple[list[PairItem], BuildStats]:
    """Critique, extract instructions, edit, verify; return the kept (edited ≻ original) pairs.

    Args:
        images: generated images ``[N, C, H, W]`` in [-1, 1].
        prompts: their N prompts.
        critic, extractor, editor, verifier: the stages (see ``stages.py``).
        attempts: edits that fail verification are retried (fresh editor noise) this many times
            in total.
    Returns:
        (pairs in the order of ``images``, statistics).
    """
    images = check_images(images, "build_rpo_pairs")
    n = images.shape[0]
    prompts = check_prompts(prompts, "build_rpo_pairs", n)
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    critiques = check_critiques(critic.critique(images, prompts), n, _name(critic))
    plans = check_instruction_lists(extractor.extract(critiques), n, _name(extractor))
    stats = BuildStats(images=n)
    for c in critiques:
        stats.findings.update(c.codes)
    todo = [i for i in range(n) if plans[i]]
    stats.flagged = len(todo)
    kept: dict[int, tuple[Tensor, Any, int]] = {}
    for attempt in range(attempts):
        if not todo:
            break
        edited = images[todo].clone()
        for k in range(max(len(plans[i]) for i in todo)):
            rows = [j for j, i in enumerate(todo) if len(plans[i]) > k]
            out = editor.edit(edited[rows], [prompts[todo[j]] for j in rows],
                              [plans[todo[j]][k] for j in rows])
            edited[rows] = check_images(out, _name(editor), len(rows))
        verdicts = check_verdicts(
            verifier.verify(images[todo], edited, [prompts[i] for i in todo],
                            [critiques[i] for i in todo], [plans[i] for i in todo]),
            len(todo), _name(verifier))
        still = []
        for j, i in enumerate(todo):
            if verdicts[j].keep:
                kept[i] = (edited[j], verdicts[j], attempt)
            else:
                still.append(i)
                if attempt == attempts - 1:
                    stats.rejections[verdicts[j].reason] += 1
        todo = still
    pairs = []
    for i in sorted(kept):
        x, verdict, attempt = kept[i]
        codes = sorted({c for ins in plans[i] for c in ins.addresses})
        stats.fixed.update(codes)
        pairs.append(PairItem(prompts[i], x, images[i].clone(), "rpo", {
            "critique": critiques[i].to_dict(),
            "instructions": [ins.to_dict() for ins in plans[i]],
            "verdict": verdict.reason, "after": verdict.after.to_dict() if verdict.after else None,
            "attempt": attempt, "index": i}))
    stats.kept = len(pairs)
    return pairs, stats


def build_reward_pairs(images_a: Tensor, images_b: Tensor, prompts: Sequence[str],
                       reward: Callable[[Tensor, list[str], dict], Tensor]
                       ) -> tuple[list[PairItem], BuildStats]:
    """Two samples per prompt; the higher reward wins (exact ties give no pair).

    Args:
        images_a, images_b: the two samples of each prompt, ``[N, C, H, W]`` each.
        prompts: N prompts.
        reward: ``reward(images, prompts, meta) -> [N]`` (``rewards.REWARDS``).
    Returns:
        (pairs, statistics).
    """
    images_a = check_images(images_a, "build_reward_pairs")
    n = images_a.shape[0]
    images_b = check_images(images_b, "build_reward_pairs", n)
    prompts = check_prompts(prompts, "build_reward_pairs", n)
    with torch.no_grad():
        r_a = reward(images_a, prompts, {}).float().cpu()
        r_b = reward(images_b, prompts, {}).float().cpu()
    if r_a.shape != (n,) or r_b.shape != (n,):
        raise StageError(f"reward returned shapes {tuple(r_a.shape)}, {tuple(r_b.shape)}; "
                         f"expected [{n}]")
    stats = BuildStats(images=2 * n, flagged=n)
    pairs = []
    for i in range(n):
        if float(r_a[i]) == float(r_b[i]):
            stats.rejections["tie"] += 1
            continue
        a_wins = float(r_a[i]) > float(r_b[i])
        w, l = (images_a[i], images_b[i]) if a_wins else (images_b[i], images_a[i])
        rw, rl = (r_a[i], r_b[i]) if a_wins else (r_b[i], r_a[i])
        pairs.append(PairItem(prompts[i], w.clone(), l.clone(), "reward",
                              {"reward_chosen": float(rw), "reward_rejected": float(rl)}))
    stats.kept = len(pairs)
    return pairs, stats
