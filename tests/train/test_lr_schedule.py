"""``run.loop.lr_at`` is the one learning-rate schedule: it reproduces, bit for bit, each
schedule the loops had before (copied below verbatim from the previous release)."""

import pytest
import torch

from scorealign.run.loop import lr_at


def old_pretrain(step, lr, steps, warmup, decay):  # train/pretrain.py (DSM, CD/CT)
    if step < warmup:
        return lr * (step + 1) / warmup
    if decay == "constant":
        return lr
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * frac)).item()))


def old_dpo(step, lr, steps, warmup, schedule):  # preference/trainer.py (LM-DPO)
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "linear":
        return lr * max(0.0, (steps - step) / max(1, steps - warmup))
    return lr


def old_diffusion_dpo(step, lr, warmup):  # preference/diffusion_dpo.py
    return lr * min(1.0, (step + 1) / warmup) if warmup else lr


LRS = [2e-3, 1e-4, 3e-4, 1e-5, 0.1, 7e-6]


@pytest.mark.parametrize("lr", LRS)
@pytest.mark.parametrize("warmup", [0, 1, 3, 7, 100])
def test_lr_at_equals_every_old_schedule_bit_for_bit(lr, warmup):
    steps = 250
    for step in range(steps + 2):
        for decay in ("constant", "cosine"):
            assert lr_at(step, lr, steps, warmup, decay, floor=0.1) == \
                old_pretrain(step, lr, steps, warmup, decay)
        for schedule in ("constant", "linear"):
            assert lr_at(step, lr, steps, warmup, schedule) == old_dpo(step, lr, steps, warmup,
                                                                        schedule)
        assert lr_at(step, lr, steps, warmup, ratio_first=True) == \
            old_diffusion_dpo(step, lr, warmup)


def test_the_two_warmup_orders_differ_so_both_are_kept():
    """``lr·(i+1)/w`` and ``lr·((i+1)/w)`` round differently for some steps: one order could
    not serve both old schedules."""
    diffs = [(lr, w, i) for lr in LRS for w in (3, 7, 100) for i in range(w)
             if lr * (i + 1) / w != lr * ((i + 1) / w)]
    assert diffs


def test_the_loops_take_their_lr_from_run_loop():
    from scorealign.preference import trainer
    from scorealign.preference.config import TrainConfig as DPOTrain
    from scorealign.train.pretrain import TrainConfig, lr_at as pretrain_lr

    t = DPOTrain(lr=1e-4, steps=50, warmup_steps=7, decay="linear")
    assert [trainer.lr_at(i, t) for i in range(52)] == [old_dpo(i, 1e-4, 50, 7, "linear")
                                                       for i in range(52)]
    tc = TrainConfig(steps=60, warmup_steps=9, lr=3e-3)
    assert [pretrain_lr(i, tc) for i in range(62)] == [old_pretrain(i, 3e-3, 60, 9, "cosine")
                                                      for i in range(62)]
