"""The score-as-action view: a sampler bound to a model is a policy with exact step log-probs.

``Policy`` (rollout, log_prob, kl, path_kl_rate) and ``Trajectory`` live in ``policy.policy`` and
``policy.trajectory``; ``policy.sd`` builds a tiny offline SD pipeline and ``policy.diffusers_sd``
adapts SD-style pipelines (text encoder + UNet + VAE, LoRA through peft).

The three names below are imported on first use (PEP 562 ``__getattr__``), so that importing a
submodule (``scorealign.policy.trajectory``) does not import the sampler stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scorealign.lazy import lazy_exports

#: public name -> the submodule that defines it
_WHERE = {"Policy": "policy", "Trajectory": "trajectory", "index_cond": "trajectory"}

__all__ = ["Policy", "Trajectory", "index_cond"]

if TYPE_CHECKING:
    from scorealign.policy.policy import Policy
    from scorealign.policy.trajectory import Trajectory, index_cond


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
