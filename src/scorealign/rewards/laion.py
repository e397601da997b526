"""LAION-style aesthetic score: CLIP image embedding → small MLP head, loaded from local files.

score(x) = MLP(e / ‖e‖),  e = CLIP_vision_projection(preprocess(x))

as in the LAION "improved aesthetic predictor" (ViT-L/14 + ``sac+logos+ava1-l14-linearMSE.pth``)
that DDPO, TRL and AlignProp use [Black+23 DDPO, §5.1 aesthetic quality; Schuhmann, LAION
improved-aesthetic-predictor]. Nothing is downloaded: ``clip`` is a local directory or cached hub
id readable by ``transformers.CLIPVisionModelWithProjection.from_pretrained`` (or a model object)
and ``head`` a ``.safetensors``/``.pth`` (path or cached ``"org/name:file"``) with the LAION key layout ``layers.{i}.weight/bias`` (Linear layers
at indices 0, 2, 4, 6, 7 between dropouts; hidden sizes are read from the file).

Deviation: preprocessing is done in torch (bilinear resize with antialiasing to the model's
``image_size``, CLIP mean/std) instead of ``CLIPProcessor``'s PIL bicubic resize + center crop,
so that the score stays differentiable; for square inputs the crop is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scorealign.rewards.base import REWARDS, RewardError, image_batch
from scorealign.rewards.hub import (CLIP_MEAN, CLIP_STD, ModelReward, from_pretrained, is_local,
                                    pixels, resolve_file)


def mlp_from_state_dict(state: dict[str, Tensor]) -> nn.Sequential:
    """Build the LAION head from its weights: Linear at each stored ``layers.{i}``, identity
    (eval-mode dropout) in the gaps, so that the keys load as they are."""
    idx = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.")})
    if not idx or any(f"layers.{i}.weight" not in state for i in idx):
        raise RewardError(f"aesthetic head: expected keys 'layers.<i>.weight/bias', got "
                          f"{sorted(state)[:6]}")
    mods: list[nn.Module] = []
    for i in range(idx[-1] + 1):
        if i in idx:
            out_f, in_f = state[f"layers.{i}.weight"].shape
            mods.append(nn.Linear(in_f, out_f, bias=f"layers.{i}.bias" in state))
        else:
            mods.append(nn.Identity())
    return nn.Sequential(*mods)


def load_head(path: str | Path) -> nn.Sequential:
    """Load a LAION MLP head from ``.safetensors`` or ``.pth``/``.pt`` (a state dict)."""
    path = Path(path)
    if not path.is_file():
        raise RewardError(f"aesthetic head weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    wrapper = nn.Module()
    wrapper.layers = mlp_from_state_dict(state)
    wrapper.load_state_dict(state)
    return wrapper.layers


class LaionAesthetic(ModelReward):
    """CLIP vision tower + projection, L2-normalized embedding, MLP head → score ``[B]``.

    Args:
        clip: a ``CLIPVisionModelWithProjection`` (or any module whose output has
            ``image_embeds``), already loaded.
        head: the MLP head (see :func:`load_head`); its input size must be the projection size.
        device, dtype, grad: see :class:`~scorealign.rewards.hub.ModelReward`.
    """

    name = "laion_aesthetic"
    differentiable = True  # torch preprocessing

    def __init__(self, clip: nn.Module, head: nn.Module, device: str | None = None,
                 dtype: str = "float32", grad: bool = False):
        super().__init__(device, dtype, grad)
        self.clip, self.head = clip, head
        self.image_size = int(clip.config.image_size)
        self.freeze()

    def preprocess(self, samples: Tensor) -> Tensor:
        """[-1, 1] images ``[B, 1|3, H, W]`` → CLIP pixel values ``[B, 3, S, S]``."""
        return pixels(samples, self.image_size, CLIP_MEAN, CLIP_STD)

    def score(self, samples: Tensor, prompts: list[str]) -> Tensor:
        x = image_batch(samples, self.name)
        if x.shape[1] not in (1, 3):
            raise RewardError(f"reward {self.name!r} needs 1 or 3 channels, got {x.shape[1]}")
        e = self.clip(pixel_values=self.preprocess(x)).image_embeds
        e = e / e.norm(dim=-1, keepdim=True)
        return self.head(e).squeeze(-1).float()


HOW = ("`hf download openai/clip-vit-large-patch14` and `hf download "
       "trl-lib/ddpo-aesthetic-predictor aesthetic-model.pth` (the LAION head TRL uses), or pass "
       "local paths as clip= and head=")


@REWARDS.register("laion_aesthetic", paper="Black+23 (DDPO), arXiv:2305.13301 (aesthetic reward); "
                                           "LAION improved-aesthetic-predictor",
                  equation="r(x) = MLP(e/‖e‖), e = CLIP image embedding (no eq. number)")
def laion_aesthetic(clip: Any = "openai/clip-vit-large-patch14",
                    head: Any = "trl-lib/ddpo-aesthetic-predictor:aesthetic-model.pth",
                    device: str | None = None, dtype: str = "float32",
                    grad: bool = False) -> LaionAesthetic:
    """Registry factory through the shared offline loader (no downloads).

    Args:
        clip: local directory or cached hub id of a CLIP model
            (``CLIPVisionModelWithProjection``), or a model object.
        head: path to the head weights (``.safetensors``/``.pth``), ``"org/name:file"`` in the
            hub cache, or a module.
    """
    if isinstance(clip, (str, Path)):
        if is_local(clip) and not Path(str(clip)).expanduser().is_dir():
            raise RewardError(f"reward 'laion_aesthetic': weights not found: CLIP directory not "
                              f"found: {clip}. To get them: {HOW}")
        from transformers import CLIPVisionModelWithProjection

        clip = from_pretrained(CLIPVisionModelWithProjection, clip, "laion_aesthetic", HOW)
    if isinstance(head, (str, Path)):
        head = load_head(resolve_file(head, "aesthetic-model.pth", "laion_aesthetic", HOW))
    return LaionAesthetic(clip, head, device, dtype, grad)
