"""An accelerate FSDP launch on CPU (gloo): what actually happens, pinned down.

accelerate (1.15) switches to ``DistributedType.FSDP`` only for multi-accelerator launches (CUDA,
XPU, NPU, …); with ``ACCELERATE_USE_FSDP=true`` on CPU processes it keeps ``MULTI_CPU`` and wraps
the model in DDP. docs/distributed.md states this; this test fails when accelerate changes it, and
checks that such a launch still gives the one-process update (the FSDP config passes through to
the trainer unchanged and is harmless on CPU).
"""

from __future__ import annotations

import pytest
import torch

from scorealign.rl.trainer import Finetuner

SETS = ["train.epochs=1", "algo.loss=loop", "algo.loss_kwargs={clip: 0.05}",
        "train.minibatch_size=4", "train.sample_batch_size=2"]
# what `accelerate launch --config_file fsdp.yaml` exports
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2",
            "FSDP_RESHARD_AFTER_FORWARD": "true", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}


@pytest.mark.slow
def test_fsdp_launch_on_cpu_runs_as_ddp_with_the_same_update(torchrun_finetune, make_setup,
                                                             make_config, one_thread):
    ft = Finetuner(make_config(*SETS), None, setup=make_setup())  # one process, in-process
    ft.fit()
    one = ft.setup.trainable_state()
    two = torchrun_finetune(SETS, 2, env=FSDP_ENV)
    assert two["type"] == "DistributedType.MULTI_CPU" and two["wrapper"] == \
        "DistributedDataParallel"
    assert one.keys() == two["state"].keys()
    for k in one:
        torch.testing.assert_close(two["state"][k], one[k], rtol=1e-4, atol=1e-5)
