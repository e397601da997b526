"""The Reward protocol, the ``REWARDS`` registry, output validation and the config builder.

A reward maps a batch of samples to one float32 number per sample:
``reward(samples, prompts, meta) -> Tensor[B]``, with ``samples`` images ``[B, C, H, W]`` in
[-1, 1] or 2-D points ``[B, D]``, ``prompts`` B strings and ``meta`` a free dict (labels, step, …).
``build_reward(cfg)`` turns a config (a name, a ``{"name": …, **kwargs}`` mapping, an import path
``"package.module:function"`` or a ready object) into a reward; unknown names and arguments are
errors that list the valid ones. :func:`check_reward_output` is the one validation, used by every
composite so that a bad value names the reward that produced it.
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from scorealign.registry import Registry

REWARDS = Registry("reward")


class RewardError(ScorealignError, ValueError):
    """A reward that cannot be built or returned an invalid value; the message names it."""


@runtime_checkable
class Reward(Protocol):
    """``(samples [B, …], prompts: list[str], meta: dict) -> Tensor[B]`` float32."""

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor: ...


def reward_name(reward: Any) -> str:
    """The reward's ``name`` attribute, else its function or class name."""
    return getattr(reward, "name", None) or getattr(reward, "__name__", type(reward).__name__)


def is_differentiable(reward: Any) -> bool | None:
    """Whether ``reward`` declares a gradient in its samples: its ``differentiable`` attribute
    (True: a torch expression of the samples, usable by reward backprop and adjoint matching;
    False: e.g. JPEG size, OCR, a VLM's yes/no); None when it declares nothing (an imported
    function without the attribute)."""
    d = getattr(reward, "differentiable", None)
    return None if d is None else bool(d)


def require_differentiable(reward: Any, method: str) -> None:
    """Refuse a reward that declares no gradient, before any rollout (issue 23 item 3).

    Raises:
        RewardError: one line naming the reward and ``method``. An undeclared reward (None) is
            accepted here; the update checks at its first call that the value has a graph.
    """
    if is_differentiable(reward) is False:
        raise RewardError(f"reward {reward_name(reward)!r} is not differentiable; {method} "
                          f"needs a reward with a gradient (e.g. aesthetic_proxy, "
                          f"digit_alignment)")


def check_reward_output(r: Any, batch: int, name: str) -> Tensor:
    """Validate one reward output: a finite float32 tensor of shape ``[batch]``.

    Returns:
        ``r`` unchanged.
    Raises:
        RewardError: naming the reward and what is wrong (type, shape, dtype, NaN/inf entries).
    """
    if not isinstance(r, Tensor):
        raise RewardError(f"reward {name!r} returned {type(r).__name__}; expected a float32 "
                          f"Tensor of shape [{batch}]")
    if tuple(r.shape) != (batch,):
        raise RewardError(f"reward {name!r} returned shape {tuple(r.shape)}; expected [{batch}] "
                          f"(one value per sample)")
    if r.dtype != torch.float32:
        raise RewardError(f"reward {name!r} returned dtype {r.dtype}; expected torch.float32")
    bad = ~torch.isfinite(r.detach())
    if bool(bad.any()):
        idx = bad.nonzero().flatten()[:5].tolist()
        raise RewardError(f"reward {name!r} returned {int(bad.sum())} non-finite value(s) (NaN or "
                          f"inf) of {batch}, first at sample(s) {idx}")
    return r


def image_batch(samples: Tensor, name: str) -> Tensor:
    """Check that ``samples`` are images ``[B, C, H, W]``; raise a RewardError naming the reward."""
    if samples.dim() != 4:
        raise RewardError(f"reward {name!r} needs images [B, C, H, W] in [-1, 1]; got samples of "
                          f"shape {tuple(samples.shape)}")
    return samples


def to_uint8(samples: Tensor) -> np.ndarray:
    """Images in [-1, 1] ``[B, C, H, W]`` → uint8 ``[B, H, W, C]`` (u = (x+1)/2, round(255·u))."""
    u = (samples.detach().float().cpu() + 1.0) / 2.0
    return (u * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def load_callable(path: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"``; a RewardError says which part failed and why."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise RewardError(f"reward import path {path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RewardError(f"reward {path!r}: cannot import module {module_name!r} ({e}); is the "
                          f"package installed or on PYTHONPATH?") from e
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RewardError(f"reward {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardError(f"reward {path!r}: {attr!r} is a {type(obj).__name__}, not callable")
    return obj


class ImportedReward:
    """A user reward given by import path; numpy/list outputs become float32 tensors.

    A ``(values, info)`` tuple (the ddpo-pytorch reward convention) keeps ``values``.
    """

    def __init__(self, path: str, kwargs: Mapping[str, Any] | None = None):
        fn = load_callable(path)
        # With kwargs the attribute is a factory: call it once to get the reward.
        self.fn = fn(**kwargs) if kwargs else fn
        self.name = path
        # declared by the function (``fn.differentiable = True/False``), else unknown (None)
        self.differentiable = getattr(self.fn, "differentiable", None)

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        r = self.fn(samples, prompts, meta)
        if isinstance(r, tuple):
            r = r[0]
        if isinstance(r, (np.ndarray, list)):
            r = torch.as_tensor(np.asarray(r, dtype=np.float32), device=samples.device)
        return check_reward_output(r, samples.shape[0], self.name)


@REWARDS.register("import", paper="(user-supplied)", equation="r = f(samples, prompts, meta)")
def imported(path: str, kwargs: Mapping[str, Any] | None = None) -> ImportedReward:
    """Registry factory: :class:`ImportedReward` (``{"name": "import", "path": "pkg.mod:fn"}``)."""
    return ImportedReward(path, kwargs)


def build_reward(cfg: Any) -> Reward:
    """Build a reward from a config.

    Args:
        cfg: a registered name (``"jpeg_compressibility"``); an import path (``"pkg.mod:fn"``); a
            mapping ``{"name": <registered>, **kwargs}`` (nested reward configs inside composites
            are built recursively by their factories); or an already built reward, returned as is.
    Raises:
        RewardError: unknown name (listing the registered ones) or invalid arguments (listing the
            factory's parameters).
    """
    if isinstance(cfg, str):
        cfg = {"name": "import", "path": cfg} if ":" in cfg else {"name": cfg}
    elif not isinstance(cfg, Mapping):
        if callable(cfg):
            return cfg
        raise RewardError(f"cannot build a reward from {type(cfg).__name__} {cfg!r}")
    kwargs = dict(cfg)
    name = kwargs.pop("name", None)
    if name not in REWARDS:
        raise RewardError(f"unknown reward {name!r}; choose one of {sorted(REWARDS)} or give an "
                          f"import path 'package.module:function'")
    factory = REWARDS.get(name).fn
    params = inspect.signature(factory).parameters
    unknown = set(kwargs) - set(params)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise RewardError(f"reward {name!r}: unknown argument(s) {sorted(unknown)}; valid: "
                          f"{sorted(params)}")
    return factory(**kwargs)
