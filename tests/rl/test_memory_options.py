"""The SD memory/speed options as config fields (``base.dtype``, ``base.gradient_checkpointing``,
``base.cache_prompts``, ``base.compile``, ``base.size``), through ``build_setup`` and one trainer
rollout; the option semantics themselves are asserted in tests/policy/test_sd_memory.py."""

from __future__ import annotations

import pytest
import torch

from scorealign.config import ConfigError, load_config
from scorealign.rl.config import FinetuneConfig
from scorealign.rl.setup import build_setup
from scorealign.rl.trainer import Finetuner

SETS = ["base.type=sd_tiny", "policy.steps=3", "policy.guidance=5.0", "prompts.per_epoch=2",
        "prompts.k=2", "train.sample_batch_size=4", "train.minibatch_size=4", "lora.rank=4",
        "reward.optimized=jpeg_compressibility", "reward.gold=null", "algo.loss=ppo_clip",
        "algo.advantage=per_prompt", "algo.advantage_kwargs={buffer_size: 4, min_count: 2}",
        "train.log_kl=false", "device=cpu", "train.epochs=1"]


def _cfg(*extra: str) -> FinetuneConfig:
    return load_config(None, FinetuneConfig, [*SETS, *extra])


def test_bf16_config_trains_with_fp32_log_probs_and_ratio_one():
    ft = Finetuner(_cfg("base.dtype=bfloat16"), None)
    unet = ft.setup.model.unet
    assert unet.conv_in.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in unet.parameters() if p.requires_grad)
    from scorealign.rl.trainer import epoch_rows
    prompts, ids, seeds = epoch_rows(ft.cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    logp = ft.policy.log_prob(traj)
    assert logp.dtype == torch.float32
    # bit-exact by construction: one rollout chunk (train.sample_batch_size = B = 4), so the
    # recompute runs the network on the rollout's batch (tests/README.md)
    assert traj.batch_size == ft.cfg.train.sample_batch_size
    assert torch.equal(torch.exp(logp - traj.log_probs).detach(), torch.ones_like(logp))
    metrics = ft.train_epoch()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_memory_fields_reach_the_pipeline():
    s = build_setup(_cfg("base.gradient_checkpointing=true", "base.cache_prompts=true",
                         "base.compile=false"))
    assert s.model.unet.is_gradient_checkpointing
    s.encode(["a cat", "a cat", "a dog"])
    s.encode(["a dog"])
    parts = s.encode.__self__
    assert parts.cache is not None and set(parts.cache) >= {"a cat", "a dog"}
    off = build_setup(_cfg("base.cache_prompts=false"))
    assert off.encode.__self__.cache is None and not off.model.unet.is_gradient_checkpointing
    big = build_setup(_cfg("base.size=compute", "lora.rank=0"))
    assert big.shape == (4, 32, 32)


def test_bad_memory_fields_are_config_errors():
    with pytest.raises((ConfigError, SystemExit, ValueError)) as e:
        _cfg("base.dtype=int8")
    assert "base.dtype" in str(e.value) or "dtype" in str(e.value)
