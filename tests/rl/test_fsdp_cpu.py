"""An accelerate FSDP launch on CPU (gloo): what actually happens, pinned down.

accelerate (1.15) switches to ``DistributedType.FSDP`` only for multi-accelerator launches (CUDA,
XPU, NPU, …); with ``ACCELERATE_USE_FSDP=true`` on CPU processes it keeps ``MULTI_CPU`` and wraps
the model in DDP. docs/distributed.md states this; this test fails when accelerate changes it, and
checks that such a launch still gives the one-process update (the FSDP config passes through to
the trainer unchanged and is harmless on CPU).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

_WORKER = '''
import sys
import torch
sys.path.insert(0, {helpers_dir!r})
from tests_rl_helpers import tiny_config, tiny_setup
from scorealign.rl.trainer import Finetuner

cfg = tiny_config("train.epochs=1", "algo.loss=loop", "algo.loss_kwargs={{clip: 0.05}}",
                  "train.minibatch_size=4", "train.sample_batch_size=2")
ft = Finetuner(cfg, None, setup=tiny_setup())
ft.fit()
if ft.acc.is_main_process:
    state = ft.setup.trainable_state(ft.acc.unwrap_model(ft.model))
    torch.save({{"state": state, "type": str(ft.acc.distributed_type),
                "wrapper": type(ft.model).__name__}}, sys.argv[1])
'''


def _launch(tmp_path: Path, out: Path, n_proc: int, fsdp: bool) -> dict:
    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER.format(helpers_dir=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if fsdp:  # what `accelerate launch --config_file fsdp.yaml` exports
        env.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2",
                   FSDP_RESHARD_AFTER_FORWARD="true", FSDP_STATE_DICT_TYPE="FULL_STATE_DICT")
    torchrun = Path(sys.executable).with_name("torchrun")
    res = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(n_proc),
                          str(worker), str(out)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(out)


@pytest.mark.slow
def test_fsdp_launch_on_cpu_runs_as_ddp_with_the_same_update(tmp_path, monkeypatch):
    helpers = tmp_path / "tests_rl_helpers.py"
    helpers.write_text((Path(__file__).parent / "conftest.py").read_text())
    one = _launch(tmp_path, tmp_path / "one.pt", 1, fsdp=False)
    two = _launch(tmp_path, tmp_path / "two.pt", 2, fsdp=True)
    assert two["type"] == "DistributedType.MULTI_CPU" and two["wrapper"] == \
        "DistributedDataParallel"
    assert one["state"].keys() == two["state"].keys()
    for k in one["state"]:
        torch.testing.assert_close(two["state"][k], one["state"][k], rtol=1e-4, atol=1e-5)
