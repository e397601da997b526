"""scikit-learn's handwritten digits as tensors in [-1, 1], with a seeded split and text prompts.

The data set (1,797 grey-level 8×8 images, labels 0–9) ships with scikit-learn, so it loads
offline. Pixel values 0..16 map to [-1, 1] by ``x / 8 − 1``. A 16×16 version is made by
upsampling the 8×8 images (bilinear by default; bicubic is clamped back into [-1, 1] because it
overshoots). Prompts are a small template set around one canonical template, and
:func:`label_from_prompt` reads the digit back from free text.

Reference: Alpaydin & Kaynak 1998, UCI "Optical Recognition of Handwritten Digits" (test part).
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import re
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scorealign.data.toys import DATASETS
from scorealign.rng import generator as _derived_generator

NUM_CLASSES = 10
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Index 0 is canonical (prompt_for); the others vary the wording for text conditioning.
PROMPT_TEMPLATES = ("a handwritten {digit}", "the digit {word}", "a picture of the number {digit}")

Split = Literal["train", "test", "all"]
Upsample = Literal["bilinear", "bicubic", "nearest"]


class PromptError(ScorealignError, ValueError):
    """A prompt from which no single digit 0–9 can be read."""


@dataclass(frozen=True)
class Digits:
    """Images and labels of one split.

    Attributes:
        images: float32 ``[N, 1, S, S]`` in [-1, 1] (S = 8 or 16).
        labels: int64 ``[N]`` in 0..9.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def size(self) -> int:
        """Image side length S."""
        return int(self.images.shape[-1])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``n`` images uniformly with replacement; ``[n, 1, S, S]``."""
        return self.sample_labeled(n, generator)[0]

    def sample_labeled(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` (image, label) pairs uniformly with replacement.

        Returns:
            images ``[n, 1, S, S]`` and labels ``[n]``.
        """
        idx = torch.randint(len(self), (n,), generator=generator)
        return self.images[idx], self.labels[idx]


def _to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """Map sklearn's 0..16 pixel counts to [-1, 1]; ``[N, 64] -> [N, 1, 8, 8]``."""
    x = torch.as_tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return x / 8.0 - 1.0


def upsample(images: torch.Tensor, size: int, mode: Upsample = "bilinear") -> torch.Tensor:
    """Resize ``[N, C, H, W]`` images in [-1, 1] to ``size``×``size``.

    Notes:
        ``align_corners=False`` (pixel centres); bicubic output is clamped to [-1, 1].
    """
    if images.shape[-1] == size:
        return images
    kw = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(images, size=(size, size), mode=mode, **kw)
    return out.clamp(-1.0, 1.0)


def split_indices(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor,
                                                                                  torch.Tensor]:
    """Stratified train/test index split, a pure function of (labels, fraction, seed).

    Returns:
        sorted train indices and sorted test indices (int64).
    """
    g = _derived_generator(seed, "digits/split")
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_digits(split: Split = "train", *, size: int = 8, seed: int = 0,
                test_fraction: float = 0.2, mode: Upsample = "bilinear") -> Digits:
    """Load one split of the digits as tensors.

    Args:
        split: "train", "test" or "all".
        size: 8 (native) or 16 (upsampled with ``mode``).
        seed: seed of the stratified split (the same seed always gives the same split).
        test_fraction: share of each class held out for "test".
        mode: upsampling interpolation for size 16.

    Returns:
        :class:`Digits` with images ``[N, 1, size, size]`` in [-1, 1] and labels ``[N]``.
    """
    if size not in (8, 16):
        raise ValueError(f"digits size must be 8 or 16, got {size}")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    # imported here: sklearn (with joblib, narwhals, scipy.io) adds ~75 MB of RSS to every
    # process that only needs the prompts (e.g. an SD fine-tune; docs/memory.md)
    from sklearn.datasets import load_digits as _sk_load_digits

    raw = _sk_load_digits()
    images = upsample(_to_unit_range(raw.data), size, mode)
    labels = torch.as_tensor(raw.target, dtype=torch.int64)
    if split != "all":
        train_idx, test_idx = split_indices(labels, test_fraction, seed)
        idx = train_idx if split == "train" else test_idx
        images, labels = images[idx], labels[idx]
    return Digits(images=images.contiguous(), labels=labels)


@DATASETS.register("digits", paper="Alpaydin & Kaynak 1998 (UCI optdigits), via scikit-learn",
                   equation="x = pixels / 8 − 1 ∈ [-1, 1]^(1×S×S)")
def digits(split: Split = "train", size: int = 8, seed: int = 0) -> Digits:
    """Registry factory: :func:`load_digits` with its defaults."""
    return load_digits(split, size=size, seed=seed)


def prompt_for(label: int, template: int = 0) -> str:
    """The prompt for digit ``label`` (canonical template: ``"a handwritten 7"``)."""
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must be in 0..9, got {label}")
    return PROMPT_TEMPLATES[template].format(digit=int(label), word=NUMBER_WORDS[int(label)])


def prompts_for(labels: torch.Tensor | Sequence[int],
                generator: torch.Generator | None = None) -> list[str]:
    """Prompts for a batch of labels.

    Args:
        labels: ``[B]`` digits.
        generator: when given, each prompt uses a template drawn uniformly from
            :data:`PROMPT_TEMPLATES`; when None, the canonical template.

    Returns:
        B prompt strings.
    """
    labels = [int(y) for y in labels]
    if generator is None:
        return [prompt_for(y) for y in labels]
    which = torch.randint(len(PROMPT_TEMPLATES), (len(labels),), generator=generator)
    return [prompt_for(y, int(k)) for y, k in zip(labels, which)]


_DIGIT_RE = re.compile(r"\d+")
_WORD_RE = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


def label_from_prompt(text: str) -> int:
    """Read the digit a prompt asks for: a numeral 0–9 or a number word ("seven").

    Raises:
        PromptError: when the prompt names no digit, a number outside 0–9, or two different digits.
    """
    found = {int(m) for m in _DIGIT_RE.findall(text)}
    found |= {NUMBER_WORDS.index(w.lower()) for w in _WORD_RE.findall(text)}
    if not found:
        raise PromptError(f"prompt {text!r} names no digit 0-9 (e.g. 'a handwritten 7')")
    if len(found) > 1 or max(found) >= NUM_CLASSES:
        raise PromptError(f"prompt {text!r} must name exactly one digit 0-9, found {sorted(found)}")
    return found.pop()


def labels_from_prompts(prompts: Sequence[str]) -> torch.Tensor:
    """:func:`label_from_prompt` over a batch; int64 ``[B]``."""
    return torch.tensor([label_from_prompt(p) for p in prompts], dtype=torch.int64)
