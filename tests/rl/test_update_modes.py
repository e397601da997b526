"""``train.mode``: lean (the default, TRL DDPOTrainer's schedule) and fast (keeps graphs) take
the same optimizer step; lean keeps no rollout graph and holds one trained step's activations
of one micro-batch at a time (measured structurally: the bytes autograd saves for backward)."""

from __future__ import annotations

import pytest
import torch

from scorealign.config import ConfigError
from scorealign.rl.config import UpdateLevers
from scorealign.rl.trainer import Finetuner, epoch_rows

ON_POLICY = ["train.minibatch_size=8", "train.sample_batch_size=8", "algo.loss=loop"]
OLD_DEFAULT = ["train.step_chunk=0", "train.fold_steps=false", "train.reuse_rollout_graph=false"]


class SavedBytes:
    """Live and peak bytes of the activations autograd saves for backward (parameters
    excluded), from ``saved_tensors_hooks``: a packed tensor counts until its graph is freed."""

    def __init__(self, params):
        self.params = {p.untyped_storage().data_ptr() for p in params}
        self.live = self.peak = 0

    def __enter__(self):
        meter = self

        class Held:
            def __init__(self, t):
                self.t = t
                self.n = 0 if t.untyped_storage().data_ptr() in meter.params else \
                    t.numel() * t.element_size()
                meter.live += self.n
                meter.peak = max(meter.peak, meter.live)

            def __del__(self):
                meter.live -= self.n

        self._ctx = torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def _epoch(make_setup, make_config, *sets):
    """One trainer epoch: Adam's first moment ((1 − β1)·gradient after one step), the peak of
    saved activation bytes, the rollout batch."""
    ft = Finetuner(make_config("train.grad_clip=0", *sets), None, setup=make_setup())
    with SavedBytes(ft.model.parameters()) as meter:
        ft.train_epoch()
    m1 = [ft.opt.state[p]["exp_avg"].clone() for p in ft.model.parameters() if p.requires_grad]
    return ft, m1, meter.peak


def _close(a, b):
    assert len(a) == len(b) and a and any(x.abs().max() > 0 for x in a)
    for x, y in zip(a, b):
        # Same gradient by construction, different fp32 summation order: lean backpropagates
        # each trained step on its own and the steps' parameter gradients add up in .grad,
        # the old default sums them inside one backward (fast: in the rollout's graphs, model
        # evaluated in another batching). Measured on the demo config: params after 2 epochs
        # differ by ≤ 1e-7 relative; a dropped or doubled step would be off by O(1/S).
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_lean_is_the_default_and_the_modes_resolve(make_config):
    assert make_config().levers() == UpdateLevers(False, 1, False)
    # on-policy (one optimizer step per epoch): the rollout's graphs, no training forward
    assert make_config(*ON_POLICY, "train.mode=fast").levers() == UpdateLevers(True, 0, True)
    # two optimizer steps per epoch: the rollout graphs cannot be reused, so fold the steps
    assert make_config("train.minibatch_size=4", "train.mode=fast").levers() == \
        UpdateLevers(False, 0, True)
    # several processes: no reuse (the update's rows are other processes' rollouts)
    assert not make_config(*ON_POLICY, "train.mode=fast").levers(world=2).reuse_rollout_graph
    # a differentiable KL needs model calls beyond the rollout: fast folds instead
    grpo = make_config(*ON_POLICY, "train.mode=fast", "algo.loss=grpo",
                       "algo.loss_kwargs={beta: 0.1}", "algo.advantage=group")
    assert grpo.levers() == UpdateLevers(False, 0, True)
    # explicit levers override the mode
    assert make_config(*ON_POLICY, "train.mode=fast", "train.step_chunk=2").levers() == \
        UpdateLevers(False, 2, True)
    assert make_config("train.step_chunk=0").levers() == UpdateLevers(False, 0, False)
    assert make_config(*ON_POLICY, "train.reuse_rollout_graph=true").levers() \
        .reuse_rollout_graph
    with pytest.raises((ConfigError, ValueError)) as e:
        make_config("train.mode=quick")
    assert "train.mode" in str(e.value) or "mode" in str(e.value)


def test_lean_fast_and_old_default_take_the_same_step(make_setup, make_config):
    """On-policy LOOP (the demo's update): lean, the old default (one backward over all steps
    of the micro-batch) and fast (the rollout's graphs reused) give the same Adam moment."""
    _, lean, _ = _epoch(make_setup, make_config, *ON_POLICY)
    ft, fast, _ = _epoch(make_setup, make_config, *ON_POLICY, "train.mode=fast")
    assert ft.levers.reuse_rollout_graph
    _, old, _ = _epoch(make_setup, make_config, *ON_POLICY, *OLD_DEFAULT)
    _close(lean, old)
    _close(fast, old)


def test_lean_keeps_no_rollout_graph(make_setup, make_config):
    ft = Finetuner(make_config(*ON_POLICY), None, setup=make_setup())
    prompts, ids, seeds = epoch_rows(ft.cfg, ft.setup.prompts, 0)
    with SavedBytes(ft.model.parameters()) as meter:
        _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    assert meter.peak == 0 and traj.logp_graph is None
    assert not traj.xs.requires_grad and not traj.log_probs.requires_grad
    fast = Finetuner(make_config(*ON_POLICY, "train.mode=fast"), None, setup=make_setup())
    with SavedBytes(fast.model.parameters()) as meter:
        _, traj, _ = fast.sample_and_score(prompts, ids, seeds)
    assert meter.peak > 0 and traj.logp_graph.requires_grad


def test_lean_peak_activations_are_one_step_of_one_micro_batch(make_setup, make_config):
    """Saved-activation peak: the old default holds all S trained steps of a micro-batch, lean
    one step (≈ 1/S of it), lean with grad_accum=2 one step of half the rows (≈ half again);
    fast holds every trained step of the whole batch (the rollout's graphs), ≥ the old one."""
    sets = ["policy.steps=4", "policy.action_steps=all", *ON_POLICY]
    steps = 4
    _, _, old = _epoch(make_setup, make_config, *sets, *OLD_DEFAULT)
    _, _, lean = _epoch(make_setup, make_config, *sets)
    _, _, half = _epoch(make_setup, make_config, *sets, "train.grad_accum=2")
    _, _, fast = _epoch(make_setup, make_config, *sets, "train.mode=fast")
    assert 0 < lean and lean * steps == pytest.approx(old, rel=0.05)
    assert half * 2 == pytest.approx(lean, rel=0.05)
    assert fast >= 0.95 * old
