"""Rewards passed as Python callables in this process (a notebook cell, a lambda, a function of
the calling script), which no import path can find again.

``scorealign.finetune(..., reward=fn)`` records an importable ``fn`` by its import path
(``my_rewards:brightness``); any other callable is registered here under a key and the run's
``config.yaml`` records ``{name: in_process, key: ..., note: ...}``. Building that config finds the
callable while this process holds it; in a new process (``scorealign finetune --resume RUN``,
``scorealign eval RUN``) it raises a :class:`~scorealign.rewards.base.RewardError` saying that the
same callable must be passed again (``scorealign.resume(RUN, reward=fn)``).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from scorealign.rewards.base import REWARDS, ImportedReward, RewardError

_CALLABLES: dict[str, Callable[..., Any]] = {}
NOTE = ("a Python callable passed in-process (scorealign.finetune(reward=fn)); no import path "
        "finds it: resume with scorealign.resume(RUN, reward=fn)")


def key_of(fn: Callable[..., Any]) -> str:
    """A readable key for ``fn``: its qualified name (``<lambda>`` → ``lambda``)."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return re.sub(r"[^A-Za-z0-9_.]+", "", name.replace("<locals>.", "")) or "reward"


def register_in_process(fn: Callable[..., Any], key: str | None = None) -> dict[str, str]:
    """Hold ``fn`` for this process under ``key`` (default :func:`key_of`); returns the reward
    config to record (``{"name": "in_process", "key": key, "note": NOTE}``).

    Raises:
        RewardError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise RewardError(f"reward {fn!r} is a {type(fn).__name__}, not callable")
    key = key or key_of(fn)
    _CALLABLES[key] = fn
    return {"name": "in_process", "key": key, "note": NOTE}


def is_in_process(cfg: Any) -> bool:
    """Whether a reward config is an in-process reward's record."""
    return isinstance(cfg, dict) and cfg.get("name") == "in_process"


class InProcessReward(ImportedReward):
    """An in-process callable, with the output handling of an imported one."""

    def __init__(self, key: str, fn: Callable[..., Any]):  # noqa: D107 (no import)
        self.fn, self.name = fn, f"in_process:{key}"
        self.differentiable = getattr(fn, "differentiable", None)


def _hint(key: str) -> str:
    name = key.split(".")[-1]
    return name if name.isidentifier() and name != "lambda" else "fn"


@REWARDS.register("in_process", paper="(user-supplied, in this process)",
                  equation="r = f(samples, prompts, meta)")
def in_process(key: str, note: str = NOTE) -> InProcessReward:
    """Registry factory: the callable registered under ``key`` in this process.

    Raises:
        RewardError: none is (a new process): pass the same callable again.
    """
    del note  # recorded in config.yaml for the reader
    if key not in _CALLABLES:
        raise RewardError(f"reward {key!r} was a Python callable passed in-process to "
                          f"scorealign.finetune(reward=...); a new process cannot find it: "
                          f"continue the run from Python with the same callable, "
                          f"scorealign.resume(RUN, reward={_hint(key)}) (its eval: "
                          f"scorealign.evaluate in the Python process that passed it)")
    return InProcessReward(key, _CALLABLES[key])


__all__ = ["InProcessReward", "NOTE", "in_process", "is_in_process", "key_of",
           "register_in_process"]
