"""Prompt alignment and sample quality of a digits policy, judged by a held-out classifier.

Prompt alignment: the share of samples the judge reads as the prompted digit (``eval/accuracy``)
and its mean probability (``eval/label_prob``). Sample quality: the Fréchet distance of judge
features to the real test split (``eval/fd``), diversity, and the rate of each critic finding
(``eval/rate_<code>``; ``eval/flagged``: any finding) with the image-statistic thresholds
calibrated on real digits. The judge is trained with a different seed from the classifier the
critic and the reward use, so neither pair builder is scored by the model it optimized against.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from scorealign.data.digits import load_digits, prompt_for
from scorealign.preference.rpo.base import Base, generate
from scorealign.preference.rpo.config import DiffusionEvalConfig
from scorealign.preference.rpo.records import FINDING_CODES


@lru_cache(maxsize=4)
def _judge(size: int, seed: int):
    from scorealign.eval.classifier import load_classifier
    from scorealign.preference.rpo.digits_critic import DigitsCritic

    clf = load_classifier(size=size, seed=seed)
    return clf, DigitsCritic.calibrated(size=size, classifier=clf)


def evaluate_policy(base: Base, model: nn.Module, cfg: DiffusionEvalConfig,
                    device: str | torch.device = "cpu") -> tuple[dict[str, float], torch.Tensor]:
    """Metrics of ``cfg.num_samples`` balanced samples of ``model``; returns (metrics, samples)."""
    from scorealign.eval.metrics import digits_metrics

    size = base.task.model_cfg.sample_size
    labels = torch.arange(cfg.num_samples) % 10
    prompts = [prompt_for(int(y)) for y in labels]
    g = cfg.generation
    was = model.training
    model.eval()
    x = generate(base, model, prompts, steps=g.steps, guidance=g.guidance, sampler=g.sampler,
                 eta=g.eta, seed=cfg.seed, batch_size=g.batch_size).cpu()
    model.train(was)
    judge, critic = _judge(size, cfg.judge_seed)
    real = load_digits("test", size=size).images
    metrics = digits_metrics(judge, x, labels, real)
    crit = critic.critique(x, prompts)
    for code in FINDING_CODES:
        metrics[f"eval/rate_{code}"] = sum(code in c.codes for c in crit) / len(crit)
    metrics["eval/flagged"] = sum(not c.ok for c in crit) / len(crit)
    return metrics, x
