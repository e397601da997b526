"""Prompt alignment on digits: the classifier's (log-)probability of the digit the prompt names.

r(x, c) = log p_φ(y(c) | x)   (``mode="log_prob"``)   or   p_φ(y(c) | x)   (``mode="prob"``),

where p_φ is a digits classifier and y(c) the digit read from the prompt. Both collaborators are
injected (a fake classifier in tests); when they are not, they are imported lazily from
``scorealign.eval.classifier.load_classifier`` and ``scorealign.data.digits.label_from_prompt``.
Differentiable in x when the classifier is, so it also serves reward backpropagation.
The analogue of DDPO's prompt-alignment reward (there: a VLM + BERTScore) on a closed vocabulary
[Black+23 DDPO, §5.3].
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import Tensor

from scorealign.rewards.base import REWARDS, RewardError, image_batch

Mode = Literal["log_prob", "prob"]


class DigitAlignment:
    """Classifier (log-)probability of the prompted digit.

    Args:
        classifier: ``classifier(x) -> logits [B, 10]`` (``output="logits"``) or an object with
            ``predict_proba(x) -> probabilities [B, 10]`` (``output="probs"``).
        label_from_prompt: ``str -> int`` in 0..9.
        mode: ``"log_prob"`` or ``"prob"``.
        output: what the classifier gives (see ``classifier``).
        min_prob: floor on the probability before the log when ``output="probs"``.
    """

    name = "digit_alignment"
    differentiable = True  # when the classifier is (the project's CNN is)

    def __init__(self, classifier: Any, label_from_prompt: Callable[[str], int],
                 mode: Mode = "log_prob", output: Literal["logits", "probs"] = "logits",
                 min_prob: float = 1e-12):
        if mode not in ("log_prob", "prob") or output not in ("logits", "probs"):
            raise ValueError(f"mode must be log_prob|prob and output logits|probs, got "
                             f"{mode!r}, {output!r}")
        self.classifier, self.label_from_prompt = classifier, label_from_prompt
        self.mode, self.output, self.min_prob = mode, output, min_prob

    def labels(self, prompts: list[str], device: torch.device) -> Tensor:
        """Digits named by the prompts, int64 ``[B]``; an unreadable prompt is a RewardError."""
        try:
            ys = [int(self.label_from_prompt(p)) for p in prompts]
        except ValueError as e:  # data.digits.PromptError is a ValueError
            raise RewardError(f"reward {self.name!r}: {e}") from e
        return torch.tensor(ys, dtype=torch.int64, device=device)

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        x = image_batch(samples, self.name)
        y = self.labels(prompts, x.device)
        if self.output == "logits":
            logp = torch.log_softmax(self.classifier(x).float(), dim=-1)
        else:
            logp = self.classifier.predict_proba(x).float().clamp_min(self.min_prob).log()
        if logp.shape != (x.shape[0], 10):
            raise RewardError(f"reward {self.name!r}: classifier gave shape {tuple(logp.shape)}, "
                              f"expected [{x.shape[0]}, 10]")
        chosen = logp.gather(1, y[:, None]).squeeze(1)
        return chosen if self.mode == "log_prob" else chosen.exp()


@REWARDS.register("digit_alignment", paper="Black+23 (DDPO), arXiv:2305.13301 (prompt-alignment "
                                           "reward, §5.3; here a digits classifier)",
                  equation="r(x, c) = log p_φ(y(c) | x)  or  p_φ(y(c) | x)")
def digit_alignment(mode: Mode = "log_prob", classifier: Any = None, size: int = 8,
                    seed: int = 0, label_from_prompt: Callable[[str], int] | None = None,
                    output: Literal["logits", "probs"] = "logits") -> DigitAlignment:
    """Registry factory: :class:`DigitAlignment` with lazily imported defaults.

    Args:
        mode: ``"log_prob"`` or ``"prob"``.
        classifier: a classifier object; None loads the project's cached digits CNN
            (``eval.classifier.load_classifier(size, seed)``).
        size: image side of the default classifier.
        seed: training seed of the default classifier.
        label_from_prompt: None uses ``data.digits.label_from_prompt``.
        output: ``"logits"`` (``classifier(x)``) or ``"probs"`` (``classifier.predict_proba``).
    """
    if classifier is None:
        from scorealign.eval.classifier import load_classifier

        classifier = load_classifier(size=size, seed=seed)
    if label_from_prompt is None:
        from scorealign.data.digits import label_from_prompt as _label_from_prompt

        label_from_prompt = _label_from_prompt
    return DigitAlignment(classifier, label_from_prompt, mode, output)
