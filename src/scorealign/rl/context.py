"""The small frozen context an RL update kind works on (what it sees of a fine-tuning run).

The trainer (``rl.trainer.Finetuner.context()``) builds an :class:`UpdateContext` from its state at
the start of each epoch (and once to choose and build the update kind from the loss's registry
entry, ``rl.update_kinds``) and passes it to every call of the kind. The
micro-batch losses of ``rl.updates`` and ``rl.flow_methods`` take this context, not the trainer,
so they import nothing above themselves. Everything that changes during a run (the epoch, the
optimizer's step count) is passed to them as an argument.

The losses read only the fields they need; :func:`~scorealign.rl.updates.policy_loss`,
:func:`~scorealign.rl.updates.chunked_policy_loss` and :func:`~scorealign.rl.updates.step_kl` use
``policy``, ``ref_policy``, ``entry``, ``data_args`` and ``algo``, which a ``Finetuner`` exposes
under the same names as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from torch import Tensor, nn

from scorealign.policy.policy import Policy
from scorealign.registry import Entry

if TYPE_CHECKING:
    from scorealign.rl.config import AlgoConfig


@dataclass(frozen=True)
class UpdateContext:
    """What an update kind needs of a run, fixed when the run starts.

    Attributes:
        policy: θ's policy around the trainable (accelerate-prepared) model.
        ref_policy: the frozen reference's policy (KL terms).
        model: the trainable model as prepared by accelerate (called with gradients).
        ref_model: the frozen reference model.
        unwrap: ``unwrap(model)``: the bare module under accelerate's wrapper (named parameters).
        make_policy: ``make_policy(model)``: the run's policy (``cfg.policy``) around ``model``.
        entry: the registered loss (``rl.losses.RL_LOSSES``).
        data_args: the loss's data arguments (``split_signature(entry.fn)[0]``).
        algo: ``cfg.algo`` (loss name and kwargs, ratio units, KL kind, DRaFT's K).
        rewards: the run's reward set (``rewards.compose.RewardSet``).
        decode: samples → images (the setup's decoder).
        steps_per_epoch: optimizer steps per epoch (inner epochs × minibatches).
    """

    policy: Policy
    ref_policy: Policy
    model: nn.Module
    ref_model: nn.Module
    unwrap: Callable[[nn.Module], nn.Module]
    make_policy: Callable[[Any], Policy]
    entry: Entry
    data_args: tuple[str, ...]
    algo: "AlgoConfig"
    rewards: Any
    decode: Callable[[Tensor], Tensor]
    steps_per_epoch: int


__all__ = ["UpdateContext"]
