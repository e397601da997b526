"""``build-pairs`` end to end: config → base samples → RPO (or reward) pairs → dataset on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from scorealign.config import to_dict
from scorealign.data.digits import PROMPT_TEMPLATES, prompt_for
from scorealign.rng import generator
from scorealign.preference.rpo.base import Base, generate, load_base
from scorealign.preference.rpo.config import BuildPairsConfig
from scorealign.preference.rpo.dataset import PairWriter
from scorealign.preference.rpo.pipeline import BuildStats, PairItem, build_reward_pairs, build_rpo_pairs


def make_prompts(cfg: BuildPairsConfig) -> list[str]:
    """``prompts.n`` prompts cycling through ``prompts.digits`` (wording per ``templates``)."""
    p = cfg.prompts
    digits = [p.digits[i % len(p.digits)] for i in range(p.n)]
    if p.templates == "canonical":
        return [prompt_for(d) for d in digits]
    which = torch.randint(len(PROMPT_TEMPLATES), (p.n,), generator=generator(cfg.seed, "prompts"))
    return [prompt_for(d, int(k)) for d, k in zip(digits, which)]


def _gen(cfg: BuildPairsConfig, base: Base, prompts: list[str], tag: str) -> torch.Tensor:
    g = cfg.generation
    from scorealign.preference.rpo.base import hash_seed
    return generate(base, base.model, prompts, steps=g.steps, guidance=g.guidance,
                    sampler=g.sampler, eta=g.eta, seed=hash_seed(cfg.seed, tag),
                    batch_size=g.batch_size)


def rpo_stages(cfg: BuildPairsConfig, base: Base):
    """The digits stages named by ``cfg``: (critic, extractor, editor, verifier)."""
    from scorealign.preference.rpo.digits_critic import DigitsCritic
    from scorealign.preference.rpo.editors import digits_editor
    from scorealign.preference.rpo.instructions import DigitsInstructionExtractor
    from scorealign.preference.rpo.verifier import CritiqueVerifier

    c = cfg.critic
    critic = DigitsCritic.calibrated(size=base.task.model_cfg.sample_size,
                                     classifier_seed=c.classifier_seed, quantile=c.quantile,
                                     min_label_prob=c.min_label_prob)
    extractor = DigitsInstructionExtractor(cfg.edit.redraw_strength, cfg.edit.repair_strength)
    editor = digits_editor(base, steps=cfg.edit.steps, guidance=cfg.edit.guidance, seed=cfg.seed)
    return critic, extractor, editor, CritiqueVerifier(critic)


def build_pairs(cfg: BuildPairsConfig, out: str | Path, base: Base | None = None,
                overwrite: bool = False) -> tuple[Path, BuildStats]:
    """Build the dataset ``cfg`` describes into ``out``; returns (path, statistics)."""
    base = base or load_base(cfg.base.path, cfg.base.sde)
    prompts = make_prompts(cfg)
    if cfg.method == "rpo":
        images = _gen(cfg, base, prompts, "rpo")
        pairs, stats = build_rpo_pairs(images, prompts, *rpo_stages(cfg, base),
                                       attempts=cfg.edit.attempts)
    else:
        from scorealign.rewards import build_reward

        reward = build_reward({"name": cfg.reward.name, "seed": cfg.reward.classifier_seed,
                               "size": base.task.model_cfg.sample_size})
        pairs, stats = build_reward_pairs(_gen(cfg, base, prompts, "a"),
                                          _gen(cfg, base, prompts, "b"), prompts, reward)
    if cfg.max_pairs is not None:
        pairs = pairs[: cfg.max_pairs]
    path = write_dataset(out, pairs, {"config": to_dict(cfg), "stats": stats.to_dict()}, overwrite)
    return path, stats


def write_dataset(out: str | Path, pairs: list[PairItem], info: dict[str, Any],
                  overwrite: bool = False) -> Path:
    """Write ``pairs`` as a sealed dataset plus a preview grid (``preview.png``)."""
    with PairWriter(out, info=info, overwrite=overwrite) as w:
        for p in pairs:
            w.add(p.prompt, p.chosen, p.rejected, p.source, p.meta)
    if pairs:
        from scorealign.report.figures import save_image_grid

        k = min(20, len(pairs))
        grid = torch.cat([torch.stack([p.rejected for p in pairs[:k]]),
                          torch.stack([p.chosen for p in pairs[:k]])])
        save_image_grid(grid, Path(out) / "preview.png", nrow=k)
    tmp = Path(out) / f".stats.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(info.get("stats", {}), indent=2))
    os.replace(tmp, Path(out) / "stats.json")
    return Path(out)
