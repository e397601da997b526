"""Adjoint matching with LoRA on the tiny SD, SD3 and FLUX pipelines (issue 23 item 4): one epoch
of the shipped configs on CPU.

At θ = base (LoRA's B matrices start at zero) the control is exactly zero, so the regression
loss equals the target's norm E‖σ_k ã_{k+1}‖² (the adjoint is non-zero: the reward has a
gradient); after the optimizer step only LoRA tensors exist as trainable weights and they moved.
The cost counter is rows × (K trained steps + S base VJPs).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scorealign.config import load_config
from scorealign.rl.config import FinetuneConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"
TINY = ["device=cpu", "policy.steps=4", "prompts.per_epoch=2", "prompts.k=2",
        "train.sample_batch_size=4", "train.minibatch_size=4", "train.log_kl=false",
        "reward.gold=null"]


@pytest.mark.parametrize("name", ["sd_tiny", "sd3_tiny", "flux_tiny"])
def test_one_epoch_regresses_the_control_and_moves_lora(name):
    from scorealign.rl.trainer import Finetuner
    from scorealign.rl.update_kinds import AdjointMatchingUpdate

    # SD: a 4-step trailing grid from T (the config's 10-step one has the wrong length)
    grid = ["policy.timesteps=[999, 749, 499, 249]"] if name == "sd_tiny" else []
    cfg = load_config(CONFIGS / f"{name}_adjoint_matching_lora.yaml", FinetuneConfig,
                      [*TINY, *grid, "algo.loss_kwargs={lam: 0.01, times: 2, memory_tol: 0.1}"])
    assert cfg.algo.loss == "adjoint_matching" and cfg.lora.rank > 0
    assert cfg.policy.sampler == "ddpm" and cfg.policy.guidance == 1.0
    torch.manual_seed(0)
    ft = Finetuner(cfg, None)
    assert isinstance(ft.kind, AdjointMatchingUpdate)
    before = ft.setup.trainable_state()
    assert before and all("lora" in k for k in before)
    m = ft.train_epoch()
    loss, target = m["loss/am"], m["am/target_norm"]
    assert math.isfinite(loss) and target > 0
    assert m["am/control_norm"] == 0.0  # θ = base before the first step
    assert loss == pytest.approx(target, rel=1e-5)
    assert m["cost/model_evals_grad"] == 4 * (2 + 4)
    after = ft.setup.trainable_state()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all("lora_B" in k or "lora_A" in k for k in moved)
    assert any("lora_B" in k for k in moved)


def test_trained_steps_skip_only_a_deterministic_final_step():
    """A flow pipeline's grid ends at t = 0, where the DDPM step has std 0 on every row: adjoint
    matching regresses on the other steps only; any other zero std is not skipped."""
    from scorealign.rl.adjoint_matching import trained_steps

    stds = torch.rand(3, 5) + 0.1
    assert trained_steps(stds) == 5
    stds[:, -1] = 0.0
    assert trained_steps(stds) == 4
    stds[0, -1] = 0.2  # not zero on every row: not the data-end step
    assert trained_steps(stds) == 5
