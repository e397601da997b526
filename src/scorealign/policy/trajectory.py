"""The record of a batch of rollouts: states, times, step kernels, log-probs, prompts, seeds."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor


def index_cond(cond: Any, idx: Tensor | slice) -> Any:
    """Rows ``idx`` of a condition: None, a Tensor, or an object with ``.index(idx)`` (``Cond``)."""
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        return cond[idx]
    return cond.index(idx)


@dataclass(frozen=True)
class Trajectory:
    """B sampler trajectories of S steps from t_0 = t_max down to t_S = t_min.

    Attributes:
        xs: states ``[B, S + 1, *D]``; ``xs[:, k]`` is the state step k starts from.
        ts: time grid ``[S + 1]``, float64, decreasing.
        means, stds: kernel of step k, ``[B, S, *D]`` and ``[B, S]`` (std 0: deterministic).
        log_probs: log-density of the policy's random choice at step k (transition or score
            action), summed over dimensions, ``[B, S]`` fp32; 0 at steps that are not random
            (outside ``stochastic``: a deterministic choice has probability 1).
        prompts: B prompt strings (repeated K times for K rollouts per prompt).
        prompt_ids: ``[B]`` int64; rows with equal ids share a prompt (a LOO/GRPO group).
        seeds: ``[B]`` int64; every random draw of row b comes from generators seeded by it, so a
            row's trajectory does not depend on the batch it was sampled in.
        cond: the model condition for the B rows (``Cond``, a Tensor, or None).
        actions: ε-space score actions ``[B, S, *D]`` of an exploratory policy, or None.
        action_log_probs: log π(action_k | t_k, x_k) ``[B, S]`` fp32, or None.
        stochastic: ``[B, S]`` bool, the steps sampled at random (the policy's action steps
            this epoch, ``policy.actions``); None: every step with a positive kernel std.
        action_mask: ``[B, S]`` bool, the steps trained and KL-penalized (⊆ ``stochastic``;
            DDPO's timestep fraction trains a per-row subset); None: ``stochastic``.
        logp_graph: ``log_probs`` at the steps any row trains (0 elsewhere) with the autograd
            graph of the rollout's model calls (``Policy.rollout(keep_graph=True)``), or None.
            Valid only while the weights are those of the rollout (an on-policy update).
    """

    xs: Tensor
    ts: Tensor
    means: Tensor
    stds: Tensor
    log_probs: Tensor
    prompts: list[str]
    prompt_ids: Tensor
    seeds: Tensor
    cond: Any = None
    actions: Tensor | None = None
    action_log_probs: Tensor | None = None
    stochastic: Tensor | None = None
    action_mask: Tensor | None = None
    logp_graph: Tensor | None = None

    @property
    def random_steps(self) -> Tensor:
        """``[B, S]`` bool: :attr:`stochastic`, or the steps with a positive kernel std."""
        return self.stochastic if self.stochastic is not None else self.stds > 0

    @property
    def trained(self) -> Tensor:
        """``[B, S]`` bool: :attr:`action_mask`, or :attr:`random_steps`."""
        return self.action_mask if self.action_mask is not None else self.random_steps

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.xs.shape[0])

    @property
    def num_steps(self) -> int:
        """S."""
        return int(self.ts.shape[0] - 1)

    @property
    def x0(self) -> Tensor:
        """Final samples ``[B, *D]``."""
        return self.xs[:, -1]

    @property
    def dt(self) -> Tensor:
        """Step lengths |t_{k+1} − t_k| ``[S]``, float64."""
        return (self.ts[:-1] - self.ts[1:]).abs()

    def index(self, idx: Tensor | slice | list[int]) -> "Trajectory":
        """The rows ``idx`` (grid shared)."""
        if isinstance(idx, list):
            idx = torch.tensor(idx, dtype=torch.int64)
        rows = range(self.batch_size)[idx] if isinstance(idx, slice) else idx.tolist()
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "ts":
                out[f.name] = v
            elif f.name == "prompts":
                out[f.name] = [v[i] for i in rows]
            elif f.name == "cond":
                out[f.name] = index_cond(v, idx)
            else:
                out[f.name] = None if v is None else v[idx]
        return Trajectory(**out)

    def to(self, device: torch.device | str) -> "Trajectory":
        """Every tensor on ``device`` (the grid stays float64)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), Tensor)}
        cond = self.cond.to(device) if self.cond is not None else None
        return replace(self, **moved, cond=cond)
