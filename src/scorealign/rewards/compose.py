"""Reward composition: weighted sums, normalization, the optimized/gold reward set, async scoring.

* :class:`WeightedSum` r = Σ_i w_i r_i, with each component validated under its own name.
* :class:`Normalized` (r − μ)/(σ + eps), with fixed μ, σ or running moments (state dict).
* :class:`RewardSet` computes {optimized, gold, components} in one call: the *gold* reward is a
  held-out judge logged beside the optimized one (never optimized; computed without gradient), so
  that reward hacking shows as a gap between the two curves.
* :class:`AsyncReward` scores in a background thread (``submit -> Future``) so that slow rewards
  overlap with sampling, as ddpo-pytorch and TRL do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from scorealign.rewards.base import (REWARDS, Reward, build_reward, check_reward_output,
                                     is_differentiable, reward_name)


class WeightedSum:
    """r(x, c) = Σ_i w_i · r_i(x, c); component names default to the rewards' names.

    Args:
        terms: ``(weight, reward)`` pairs.
        names: optional component names (unique); duplicates of default names get ``#2``, ``#3``.
    """

    name = "weighted_sum"

    def __init__(self, terms: Sequence[tuple[float, Reward]], names: Sequence[str] | None = None):
        if not terms:
            raise ValueError("WeightedSum needs at least one (weight, reward) term")
        self.weights = [float(w) for w, _ in terms]
        self.rewards = [r for _, r in terms]
        self.names = list(names) if names is not None else _unique(map(reward_name, self.rewards))
        if len(set(self.names)) != len(self.names) or len(self.names) != len(self.rewards):
            raise ValueError(f"component names must be unique, one per term: {self.names}")
        # differentiable iff every component is (False if one is not, None if one is unknown)
        flags = [is_differentiable(r) for r in self.rewards]
        self.differentiable = False if False in flags else (None if None in flags else True)

    def components(self, samples: Tensor, prompts: list[str], meta: dict) -> dict[str, Tensor]:
        """Each component's validated values ``[B]``, by name."""
        b = samples.shape[0]
        return {n: check_reward_output(r(samples, prompts, meta), b, n)
                for n, r in zip(self.names, self.rewards)}

    def combine(self, components: Mapping[str, Tensor]) -> Tensor:
        """Σ_i w_i · components[name_i]."""
        return sum(w * components[n] for w, n in zip(self.weights, self.names))  # type: ignore

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        return self.combine(self.components(samples, prompts, meta))


def _unique(names: Any) -> list[str]:
    out: list[str] = []
    for n in names:
        k, i = n, 1
        while k in out:
            i += 1
            k = f"{n}#{i}"
        out.append(k)
    return out


@REWARDS.register("weighted_sum", paper="Black+23 (DDPO) / Liu+25 (Flow-GRPO) multi-reward "
                                        "weighting", equation="r = Σ_i w_i r_i")
def weighted_sum(terms: Sequence[Any]) -> WeightedSum:
    """Registry factory: ``terms`` = ``[{"weight": w, "reward": cfg, "label": opt}, …]`` or
    ``[[w, cfg], …]``; each ``cfg`` goes through ``build_reward``."""
    pairs, names = [], []
    for t in terms:
        if isinstance(t, Mapping):
            w, r = t["weight"], build_reward(t["reward"])
            names.append(t.get("label") or reward_name(r))
        else:
            w, r = t[0], build_reward(t[1])
            names.append(reward_name(r))
        pairs.append((float(w), r))
    return WeightedSum(pairs, _unique(names))


class RunningMoments:
    """Streaming mean and population variance (Chan et al. parallel update), float64."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: Tensor) -> None:
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        mean = float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), \
            float(state["m2"])


class Normalized:
    """(r − μ)/(σ + eps), optionally clamped to ±clip.

    With ``mean`` and ``std`` given the affine map is fixed; otherwise running moments over all
    rewards seen so far (including the current batch) are used and updated on every call — save
    ``state_dict()`` with the trainer state for an exact resume.
    """

    def __init__(self, reward: Reward, mean: float | None = None, std: float | None = None,
                 eps: float = 1e-8, clip: float | None = None):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (fixed) or neither (running)")
        self.reward = reward
        self.fixed = (mean, std) if mean is not None else None
        self.eps, self.clip = eps, clip
        self.moments = RunningMoments()
        self.name = f"normalized({reward_name(reward)})"
        self.differentiable = is_differentiable(reward)

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        r = check_reward_output(self.reward(samples, prompts, meta), samples.shape[0],
                                reward_name(self.reward))
        if self.fixed is None:
            self.moments.update(r)
            mean, std = self.moments.mean, self.moments.std
        else:
            mean, std = self.fixed
        z = (r - mean) / (std + self.eps)
        return z if self.clip is None else z.clamp(-self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        return self.moments.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.moments.load_state_dict(state)


@REWARDS.register("normalized", paper="(reward scaling; standard practice)",
                  equation="r' = clip((r − μ)/(σ + eps), ±c)")
def normalized(reward: Any, mean: float | None = None, std: float | None = None,
               eps: float = 1e-8, clip: float | None = None) -> Normalized:
    """Registry factory: :class:`Normalized` around ``build_reward(reward)``."""
    return Normalized(build_reward(reward), mean, std, eps, clip)


@dataclass(frozen=True)
class RewardOutput:
    """One batch's rewards: ``optimized [B]``, ``gold [B]`` or None, ``components`` by name."""

    optimized: Tensor
    gold: Tensor | None = None
    components: dict[str, Tensor] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """``reward/mean``, ``reward/std``, ``reward/gold_mean``, ``reward/<component>_mean``."""
        out = {"reward/mean": float(self.optimized.detach().mean()),
               "reward/std": float(self.optimized.detach().std(unbiased=False))}
        if self.gold is not None:
            out["reward/gold_mean"] = float(self.gold.mean())
            out["reward/gold_std"] = float(self.gold.std(unbiased=False))
        for n, v in self.components.items():
            out[f"reward/{n}_mean"] = float(v.detach().mean())
        return out


class RewardSet:
    """The optimized reward, an optional held-out gold reward, and the components, in one call.

    A :class:`WeightedSum` optimized reward is evaluated once per component and combined, so the
    components cost nothing extra. The gold reward runs under ``torch.no_grad`` on detached
    samples. Every value is validated under its own name. Before any reward, samples are
    clamped to the data range ``clamp`` (default [−1, 1]): rewards see what a saved image shows,
    so a sample outside the range gets exactly the reward of its clamped version.
    """

    def __init__(self, optimized: Reward, gold: Reward | None = None,
                 clamp: Sequence[float] | None = (-1.0, 1.0)):
        self.optimized, self.gold = optimized, gold
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))

    def prepare(self, samples: Tensor) -> Tensor:
        """The samples a reward sees: clamped to the data range ``clamp`` (a saved image's
        values), unchanged when ``clamp`` is None. Differentiable inside the range."""
        return samples if self.clamp is None else samples.clamp(*self.clamp)

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict | None = None
                 ) -> RewardOutput:
        meta, b = meta or {}, samples.shape[0]
        samples = self.prepare(samples)
        if isinstance(self.optimized, WeightedSum):
            comps = self.optimized.components(samples, prompts, meta)
            r = self.optimized.combine(comps)
        else:
            comps, r = {}, self.optimized(samples, prompts, meta)
        r = check_reward_output(r, b, reward_name(self.optimized))
        gold = None
        if self.gold is not None:
            with torch.no_grad():
                gold = check_reward_output(self.gold(samples.detach(), prompts, meta), b,
                                           f"gold:{reward_name(self.gold)}")
        return RewardOutput(r, gold, comps)


def build_reward_set(reward: Any, gold: Any = None,
                     clamp: Sequence[float] | None = (-1.0, 1.0)) -> RewardSet:
    """``RewardSet(build_reward(reward), build_reward(gold) if gold else None, clamp)``."""
    return RewardSet(build_reward(reward), build_reward(gold) if gold is not None else None,
                     clamp)


class AsyncReward:
    """Score batches in a background thread pool.

    ``submit(samples, prompts, meta)`` returns a ``concurrent.futures.Future`` whose ``result()``
    is the validated ``[B]`` tensor (or raises the reward's error). Samples are detached and
    cloned first, so the caller may reuse its buffers. Use as a context manager, or ``close()``.
    """

    def __init__(self, reward: Reward, max_workers: int = 1):
        self.reward, self.name = reward, reward_name(reward)
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="reward")

    def _score(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        with torch.no_grad():
            return check_reward_output(self.reward(samples, prompts, meta), samples.shape[0],
                                       self.name)

    def submit(self, samples: Tensor, prompts: list[str], meta: dict | None = None
               ) -> Future[Tensor]:
        return self.pool.submit(self._score, samples.detach().clone(), list(prompts),
                                dict(meta or {}))

    def __call__(self, samples: Tensor, prompts: list[str], meta: dict) -> Tensor:
        return self.submit(samples, prompts, meta).result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> "AsyncReward":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
