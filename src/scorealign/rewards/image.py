"""Closed-form rewards: JPEG (in)compressibility, a brightness/contrast proxy, a 2-D target.

JPEG rewards follow DDPO: the image is quantized to uint8, encoded with Pillow at a fixed quality,
and the file size in kilobytes (bytes / 1000) is the incompressibility; its negative is the
compressibility [Black+23 DDPO, §5.1 "compressibility"; ddpo-pytorch ``rewards.py``]. They are not
differentiable. The aesthetic proxy and the 2-D target are differentiable torch expressions, so
they also serve reward backpropagation.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

from scorealign.rewards.base import REWARDS, image_batch, to_uint8


def jpeg_size_kb(samples: Tensor, quality: int = 95) -> Tensor:
    """JPEG file size in kB of each image ``[B, C, H, W]`` in [-1, 1] (C = 1 grey or 3 RGB).

    Returns:
        float32 ``[B]`` on the samples' device.
    """
    if samples.shape[1] not in (1, 3):
        raise ValueError(f"JPEG needs 1 (grey) or 3 (RGB) channels, got {samples.shape[1]}")
    sizes = []
    for arr in to_uint8(samples):
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1000.0)
    return torch.tensor(sizes, dtype=torch.float32, device=samples.device)


class JpegReward:
    """±JPEG size in kB: ``sign = -1`` compressibility, ``+1`` incompressibility."""

    differentiable = False  # Pillow encodes uint8 images

    def __init__(self, sign: float, quality: int, name: str):
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be in 1..95 (Pillow), got {quality}")
        self.sign, self.quality, self.name = sign, quality, name

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        image_batch(samples, self.name)
        return self.sign * jpeg_size_kb(samples, self.quality)


@REWARDS.register("jpeg_compressibility", paper="Black+23 (DDPO), arXiv:2305.13301",
                  equation="r(x) = −(JPEG size of x in kB), quality 95 (§5.1; no eq. number)",
                  properties=frozenset({"not_differentiable"}))
def jpeg_compressibility(quality: int = 95) -> JpegReward:
    """Registry factory: minus the JPEG size in kB (higher = more compressible)."""
    return JpegReward(-1.0, quality, "jpeg_compressibility")


@REWARDS.register("jpeg_incompressibility", paper="Black+23 (DDPO), arXiv:2305.13301",
                  equation="r(x) = JPEG size of x in kB, quality 95 (§5.1; no eq. number)",
                  properties=frozenset({"not_differentiable"}))
def jpeg_incompressibility(quality: int = 95) -> JpegReward:
    """Registry factory: the JPEG size in kB (higher = less compressible)."""
    return JpegReward(1.0, quality, "jpeg_incompressibility")


class BrightnessContrast:
    """Aesthetic proxy: reward contrast, penalize brightness away from a target.

    With u = (x + 1)/2 ∈ [0, 1] and, per image over all C·H·W values, μ = mean(u) and
    σ = population std(u):

        r(x) = w_c · σ − w_b · |μ − μ*|

    Defaults w_c = w_b = 1, μ* = 0.5: a flat image scores −|μ − 0.5| ≤ 0, a half-black half-white
    image scores 0.5 (the maximum). A stand-in for a learned aesthetic score on tiny images, not a
    model of taste; differentiable almost everywhere.
    """

    name = "aesthetic_proxy"
    differentiable = True

    def __init__(self, contrast_weight: float = 1.0, brightness_weight: float = 1.0,
                 target_brightness: float = 0.5):
        self.w_c, self.w_b, self.mu_star = contrast_weight, brightness_weight, target_brightness

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        u = (image_batch(samples, self.name).float().flatten(1) + 1.0) / 2.0
        mu, sigma = u.mean(dim=1), u.std(dim=1, unbiased=False)
        return self.w_c * sigma - self.w_b * (mu - self.mu_star).abs()


@REWARDS.register("aesthetic_proxy", paper="(scorealign proxy; stands in for the LAION aesthetic "
                                           "score of Black+23 DDPO on tiny images)",
                  equation="r = w_c·std(u) − w_b·|mean(u) − μ*|, u = (x+1)/2")
def aesthetic_proxy(contrast_weight: float = 1.0, brightness_weight: float = 1.0,
                    target_brightness: float = 0.5) -> BrightnessContrast:
    """Registry factory: :class:`BrightnessContrast`."""
    return BrightnessContrast(contrast_weight, brightness_weight, target_brightness)


class TargetDistance:
    """2-D (any [B, D]) toy reward r(x) = −scale · ‖x − c‖², differentiable."""

    name = "target_distance"
    differentiable = True

    def __init__(self, target: Sequence[float], scale: float = 1.0):
        self.target, self.scale = torch.as_tensor(target, dtype=torch.float32), scale

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        x = samples.float().flatten(1)
        c = self.target.to(x.device)
        if c.shape != x.shape[1:]:
            raise ValueError(f"target has {c.numel()} coordinates, samples {x.shape[1]}")
        return -self.scale * ((x - c) ** 2).sum(dim=1)


@REWARDS.register("target_distance", paper="(synthetic toy reward for 2-D data; no paper)",
                  equation="r(x) = −scale·‖x − c‖²")
def target_distance(target: Sequence[float] = (0.0, 0.0), scale: float = 1.0) -> TargetDistance:
    """Registry factory: :class:`TargetDistance`."""
    return TargetDistance(target, scale)
