"""Killing a pretraining run and resuming it gives bit-identical weights (CPU, fp32).

The killed run is a real ``scorealign pretrain`` subprocess that SIGKILLs itself right after
the checkpoint of step K is on disk (``SCOREALIGN_KILL_AFTER_CHECKPOINT``, i.e. ``kill -9`` at a
deterministic point); it is then resumed with ``scorealign pretrain --resume`` and compared tensor by tensor with an
uninterrupted run of the same config.
"""

import pytest
import torch
from safetensors.torch import load_file

from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
from scorealign.run.rundir import RunDir

SETS = ["train.steps=12", "train.ckpt_every=5", "train.batch_size=64", "train.log_every=2",
        "model.hidden=32", "model.depth=2", "data.num_train=512", "sample.num_eval=64",
        "sample.steps=4", "train.warmup_steps=3", "device=cpu"]


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(pretrain_killed_and_resumed):
    killed, ref = pretrain_killed_and_resumed("configs/pretrain/gaussians.yaml", SETS, 10)

    a, b = load_file(str(killed / "final" / "model.safetensors")), \
        load_file(str(ref / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, _ = load_checkpoint(latest_checkpoint(killed / "checkpoints"))
    sb, _ = load_checkpoint(latest_checkpoint(ref / "checkpoints"))
    for name in ("model", "ema"):
        assert all(torch.equal(sa[name][k], sb[name][k]) for k in sa[name]), name
    # The metrics log holds each step once, as the uninterrupted run's does.
    ra, rb = RunDir(killed).read_metrics(), RunDir(ref).read_metrics()
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == list(range(2, 13, 2))
    mem = lambda rows: [{k: v for k, v in r.items() if k != "mem/peak_gb"}  # noqa: E731
                        for r in rows]
    assert mem(ra) == mem(rb)  # every row equal but the process's peak memory
    assert all(r["mem/peak_gb"] > 0 for r in ra)
