"""RL update kinds (rl/update_kinds.py): chosen from the loss's registry entry, over a frozen
context; the loss helpers do not import the trainer."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from scorealign.rl.context import UpdateContext
from scorealign.rl.losses import RL_LOSSES
from scorealign.rl.update_kinds import UPDATE_KINDS, update_kind_for


def test_every_registered_loss_declares_its_update_kind():
    kinds = {name: update_kind_for(entry) for name, entry in RL_LOSSES.items()}
    assert kinds.pop("reward_backprop") == "reward_backprop"
    assert kinds.pop("diffusion_nft") == "forward_process"
    assert kinds.pop("adjoint_matching") == "adjoint_matching"
    assert set(kinds.values()) == {"log_prob"}
    assert set(UPDATE_KINDS) == {"log_prob", "reward_backprop", "forward_process",
                                 "adjoint_matching"}


def test_the_context_is_frozen():
    ctx = UpdateContext(*[None] * len(dataclasses.fields(UpdateContext)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.policy = None  # type: ignore[misc]


def test_the_loss_helpers_do_not_import_the_trainer():
    code = ("import sys; import scorealign.rl.update_kinds, scorealign.rl.updates, "
            "scorealign.rl.flow_methods; print('scorealign.rl.trainer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
