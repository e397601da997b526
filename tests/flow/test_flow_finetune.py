"""Flow methods on the one trainer: tiny SD3/FLUX LoRA runs through ``scorealign finetune`` with
bit-identical resume after kill -9; model evaluations with gradient of Fast/Mix < Flow-GRPO;
DiffusionNFT trains through the same loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scorealign.config import load_config
from scorealign.rl.config import FinetuneConfig
from scorealign.rl.trainer import Finetuner
from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd3_tiny_flow_grpo_lora", "flux_tiny_flow_grpo_lora"])
def test_tiny_flow_pipeline_lora_run_resumes_bit_identically_after_kill_9(tmp_path, name,
                                                                          kill9_then_resume):
    # 2 epochs of 2 inner epochs (4 Adam steps), killed after epoch 1's checkpoint; 4x4 latents
    sets = ["train.epochs=2", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
            "train.minibatch_size=2", "train.sample_batch_size=4", "train.inner_epochs=2",
            "train.ckpt_every=1", "base.latent_size=4", "train.log_kl=false", "device=cpu"]
    config = CONFIGS / f"{name}.yaml"
    # the uninterrupted reference in process (its report is not under test; the resumed run's is)
    full = Finetuner(load_config(config, FinetuneConfig, sets), None)
    full.fit()
    args = ["--config", str(config), *[a for s in sets for a in ("--set", s)]]
    kill9_then_resume(tmp_path / "cut", args, epoch=1)
    states, extra = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints"))
    assert extra["epoch"] == full.epoch == 2
    want = full.state()
    assert want["model"] and all("lora" in k for k in want["model"])
    assert states["model"].keys() == want["model"].keys()
    for k, v in want["model"].items():
        assert torch.equal(v, states["model"][k]), k
    adam, adam_cut = want["optimizer"]["state"], states["optimizer"]["state"]
    assert len(adam) == len(want["model"]) and adam.keys() == adam_cut.keys()
    for i, st in adam.items():  # Adam's moments and step counts, bit for bit
        assert all(torch.equal(st[n], adam_cut[i][n]) for n in ("exp_avg", "exp_avg_sq", "step"))
    assert (tmp_path / "cut" / "report.html").is_file()


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
    # the authors' time subset: each row trains on int(6 · 0.99) = 5 of the 6 grid times
    assert m["cost/model_evals_grad"] == 4 * 5
    assert 0.0 <= m["nft/r_mean"] <= 1.0 and m["loss/policy"] > 0
    after = ft.setup.trainable_state()
    assert any(not torch.equal(before[k], after[k]) for k in before)
