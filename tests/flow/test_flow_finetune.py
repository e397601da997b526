"""Flow methods on the one trainer: tiny SD3/FLUX LoRA runs through ``scorealign finetune`` with
bit-identical resume after kill -9; model evaluations with gradient of Fast/Mix < Flow-GRPO;
DiffusionNFT trains through the same loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scorealign.cli import app
from scorealign.config import load_config
from scorealign.rl.config import FinetuneConfig
from scorealign.rl.trainer import Finetuner
from scorealign.train.checkpoint import latest_checkpoint, load_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"
runner = CliRunner()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd3_tiny_flow_grpo_lora", "flux_tiny_flow_grpo_lora"])
def test_tiny_flow_pipeline_lora_run_resumes_bit_identically_after_kill_9(tmp_path, name):
    sets = ["train.epochs=3", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
            "train.minibatch_size=2", "train.sample_batch_size=4", "train.inner_epochs=2",
            "train.ckpt_every=1", "device=cpu"]
    args = ["--config", str(CONFIGS / f"{name}.yaml"), *[a for s in sets for a in ("--set", s)]]
    full = runner.invoke(app, ["finetune", "--out", str(tmp_path / "full"), *args])
    assert full.exit_code == 0, full.output
    env = {**os.environ, "SCOREALIGN_KILL_AFTER_CHECKPOINT": "2",
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = subprocess.run([sys.executable, "-m", "scorealign.cli", "finetune", "--out",
                             str(tmp_path / "cut"), *args], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    res = runner.invoke(app, ["finetune", "--resume", str(tmp_path / "cut")])
    assert res.exit_code == 0 and "from epoch 2" in res.output, res.output
    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints"))
    assert a[1]["epoch"] == b[1]["epoch"] == 3
    assert a[0]["model"] and all("lora" in k for k in a[0]["model"])
    for k, v in a[0]["model"].items():
        assert torch.equal(v, b[0]["model"][k]), k
    assert (tmp_path / "full" / "report.html").is_file()


BASE = ["policy.sampler=flow_sde", "policy.eta=0.7", "policy.steps=6", "policy.guidance=1.5",
        "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=4",
        "train.sample_batch_size=4", "train.epochs=1", "train.lr=1e-3",
        "reward.optimized=aesthetic_proxy", "device=cpu"]


def _run(setup, *sets: str) -> dict[str, float]:
    cfg = load_config(None, FinetuneConfig, [*BASE, *sets])
    return Finetuner(cfg, None, setup=setup()).fit()


def test_fast_and_mix_make_fewer_gradient_evaluations_than_flow_grpo(flow_setup):
    full = _run(flow_setup, "algo.loss=flow_grpo")
    fast = _run(flow_setup, "algo.loss=flow_grpo_fast", "policy.action_steps=branch:1")
    mix = _run(flow_setup, "algo.loss=mixgrpo", "policy.action_steps=window:2")
    # 4 rows × 5 auto steps (the last one is the deterministic denoising step) × 2 (β > 0: KL)
    assert full["cost/model_evals_grad"] == 4 * 5 * 2
    assert fast["cost/model_evals_grad"] == 4 * 1 * 2
    assert mix["cost/model_evals_grad"] == 4 * 2 * 2
    for m in (full, fast, mix):
        assert m["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # first step on-policy


def test_diffusion_nft_trains_through_the_trainer_and_moves_the_weights(flow_setup):
    cfg = load_config(None, FinetuneConfig, [*BASE, "algo.loss=diffusion_nft",
                                             "train.epochs=2"])
    ft = Finetuner(cfg, None, setup=flow_setup())
    before = {k: v.clone() for k, v in ft.setup.trainable_state().items()}
    m = ft.fit()
    assert m["cost/model_evals_grad"] == 4 * 6
    assert 0.0 <= m["nft/r_mean"] <= 1.0 and m["loss/policy"] > 0
    after = ft.setup.trainable_state()
    assert any(not torch.equal(before[k], after[k]) for k in before)
