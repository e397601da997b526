r"""Preference pairs on a testbed problem: base samples labelled by Bradley–Terry on r/τ.

Two samples x¹, x² of the base model are compared through the problem's exact reward,

    P(x¹ ≻ x²) = σ((r(x¹) − r(x²)) / τ)                      [Bradley & Terry 52]

and the winner is drawn from that probability. DPO's optimum on such labels is
p_ref e^{r/(τ β_DPO)} [Rafailov+23, arXiv:2305.18290, Eq. 4 with the BT reward r/τ], so
β_DPO = β/τ makes it the testbed's p*_β ∝ p₀ e^{r/β} (``scorealign dpo`` with ``base.type:
testbed``, :mod:`scorealign.commands.testbed_dpo_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from scorealign.testbed.problems import Problem

_F64 = torch.float64


@dataclass(frozen=True)
class Pairs:
    """Labelled pairs: ``chosen`` x_w and ``rejected`` x_l, [N, D] float64 each, their rewards
    ``reward_w``/``reward_l`` [N], and ``first`` [N] bool: whether the first sample of the pair
    won (the label's draw)."""

    chosen: Tensor
    rejected: Tensor
    reward_w: Tensor
    reward_l: Tensor
    first: Tensor

    def __len__(self) -> int:
        return self.chosen.shape[0]

    @staticmethod
    def cat(parts: list["Pairs"]) -> "Pairs":
        """The pairs of ``parts`` one after the other."""
        return Pairs(*(torch.cat([getattr(p, f) for p in parts]) for f in
                       ("chosen", "rejected", "reward_w", "reward_l", "first")))


def bt_label(x1: Tensor, x2: Tensor, r1: Tensor, r2: Tensor, tau: float,
             generator: torch.Generator) -> Pairs:
    r"""Label each pair (x¹_i, x²_i) by one Bradley–Terry draw on r/τ.

    first_i ~ Bernoulli(σ((r¹_i − r²_i)/τ)); the chosen sample is x¹_i where first_i, else x²_i.

    Args:
        x1, x2: [N, D] the pairs' samples; r1, r2: [N] their rewards.
        tau: τ > 0, the labels' temperature (τ → 0: the higher reward always wins).
        generator: draws the N uniforms of the labels.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    p = torch.sigmoid((r1.to(_F64) - r2.to(_F64)) / tau)
    first = torch.rand(p.shape, generator=generator, dtype=_F64) < p
    f = first[:, None]
    return Pairs(torch.where(f, x1, x2), torch.where(f, x2, x1), torch.where(first, r1, r2),
                 torch.where(first, r2, r1), first)


def draw_pairs(problem: Problem, sample: Callable[[int], Tensor], n: int, tau: float,
               generator: torch.Generator) -> Pairs:
    """``n`` pairs of base samples (``sample(2n)`` → [2n, D]: rows i and n + i form pair i),
    rewarded by ``problem.reward`` (2n queries) and labelled by :func:`bt_label`."""
    x = sample(2 * n).detach().to(_F64).cpu().reshape(2 * n, -1)
    r = problem.reward(x)
    return bt_label(x[:n], x[n:], r[:n], r[n:], tau, generator)


__all__ = ["Pairs", "bt_label", "draw_pairs"]
