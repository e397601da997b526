"""Loading learned reward models from a local directory or a hub id, offline; placement; pixels.

Every learned reward takes its weights as ``source``: a local directory (or file), or a hub id
(``"org/name"``) that is already in the local Hugging Face cache. Nothing is downloaded at run
time (``local_files_only=True``); when the weights are not there, :class:`RewardError` names the
path or id and says how to get them (``hf download <id>`` / the package to install).

:class:`ModelReward` is the shared base of the learned rewards: it scores under ``no_grad`` unless
gradients are wanted, runs on the policy's device (``device=None`` follows the samples) in the
configured dtype, and returns float32 ``[B]`` on the samples' device, so the same object serves
the trainer, ``reward_backprop`` and the background-reward thread.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorealign.rewards.base import RewardError, image_batch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def is_local(source: str | Path) -> bool:
    """A path (exists, absolute, starts with ``.``/``~``, or has more than one ``/``), not an id."""
    s = str(source)
    return Path(s).expanduser().exists() or s.startswith(("/", ".", "~")) or s.count("/") != 1


def missing(reward: str, source: Any, how: str, err: Exception | None = None) -> RewardError:
    """The one 'weights not found' error: names the path or id and how to get the weights."""
    where = (f"local path {str(source)!r} does not exist" if is_local(source) else
             f"hub id {str(source)!r} is not in the local Hugging Face cache (nothing is "
             f"downloaded at run time)")
    why = f" ({type(err).__name__}: {str(err).splitlines()[0][:160]})" if err else ""
    return RewardError(f"reward {reward!r}: weights not found: {where}{why}. To get them: {how}")


def from_pretrained(cls: Any, source: str | Path, reward: str, how: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(source, local_files_only=True)`` or a :func:`missing` error."""
    if is_local(source) and not Path(str(source)).expanduser().exists():
        raise missing(reward, source, how)
    try:
        return cls.from_pretrained(str(Path(str(source)).expanduser()) if is_local(source)
                                   else str(source), local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise missing(reward, source, how, e) from e


def resolve_file(source: str | Path, filename: str, reward: str, how: str) -> Path:
    """A weights file: ``source`` itself, ``source/filename``, or ``filename`` of a cached hub id.

    A hub id may name the file after a colon: ``"org/name:file.pt"``.
    """
    s = str(source)
    if not is_local(s):
        repo, _, fname = s.partition(":")
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo, fname or filename, local_files_only=True))
        except Exception as e:  # noqa: BLE001 (LocalEntryNotFoundError, RepositoryNotFound, …)
            raise missing(reward, repo, how, e) from e
    p = Path(s).expanduser()
    if p.is_dir():
        p = p / filename
    if not p.is_file():
        raise missing(reward, p, how)
    return p


def load_state(path: Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch pickle (``state_dict``/``module.`` unwrapped)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def pixels(samples: Tensor, size: int | tuple[int, int], mean: tuple[float, ...] = CLIP_MEAN,
           std: tuple[float, ...] = CLIP_STD) -> Tensor:
    """[-1, 1] images ``[B, 1|3, H, W]`` → normalized pixel values ``[B, 3, S, S]``, in torch.

    Bilinear resize with antialiasing to ``size`` then (u − mean)/std. Deviation from the
    processors' PIL bicubic resize + center crop: kept in torch so the score is differentiable
    (for square inputs the crop is a no-op).
    """
    x = image_batch(samples, "image reward")
    if x.shape[1] not in (1, 3):
        raise RewardError(f"image reward needs 1 or 3 channels, got {x.shape[1]}")
    u = (x + 1.0) / 2.0
    if u.shape[1] == 1:
        u = u.expand(-1, 3, -1, -1)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(u.shape[-2:]) != hw:
        u = F.interpolate(u, size=hw, mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean, device=u.device, dtype=u.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=u.device, dtype=u.dtype).view(1, -1, 1, 1)
    return (u - m) / s


def dtype_of(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` → ``torch.bfloat16`` (config strings or dtypes)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise RewardError(f"reward dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


class ModelReward(nn.Module):
    """Base of the learned rewards: frozen, eval mode, placed on first use.

    Subclasses implement ``score(samples, prompts) -> Tensor[B]`` on ``self.device`` in
    ``self.dtype``. ``device=None`` follows the samples' device (the policy's); ``grad=True``
    keeps the graph for ``reward_backprop`` (the weights stay frozen either way).
    """

    name = "model_reward"

    def __init__(self, device: str | None = None, dtype: str | torch.dtype = "float32",
                 grad: bool = False):
        super().__init__()
        self.want_device = torch.device(device) if device else None
        self.dtype = dtype_of(dtype)
        self.grad = grad
        self._lock = threading.Lock()  # the background-reward thread and the trainer share it
        self._placed: torch.device | None = None

    def freeze(self) -> None:
        self.eval()
        self.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self._placed or torch.device("cpu")

    def place(self, device: torch.device) -> None:
        if self._placed != device:
            self.to(device=device, dtype=self.dtype)
            self._placed = device

    def score(self, samples: Tensor, prompts: list[str]) -> Tensor:
        raise NotImplementedError

    def forward(self, samples: Tensor, prompts: list[str] | None = None,
                meta: dict | None = None) -> Tensor:
        prompts = list(prompts) if prompts is not None else [""] * samples.shape[0]
        if len(prompts) != samples.shape[0]:
            raise RewardError(f"reward {self.name!r}: {samples.shape[0]} samples but "
                              f"{len(prompts)} prompts")
        with self._lock:
            self.place(self.want_device or samples.device)
            x = samples.to(self.device, self.dtype)
            with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
                r = self.score(x, prompts)
        return r.float().to(samples.device)
