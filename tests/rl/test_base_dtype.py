"""``base.dtype`` for the flow-transformer pipelines (as for SD): the denoiser, VAE and text
encoders in bf16/fp16, LoRA adapters fp32, everything the policy returns fp32; a LoRA epoch trains
on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scorealign.config import load_config
from scorealign.rl.config import FinetuneConfig
from scorealign.rl.setup import build_setup
from scorealign.rl.trainer import Finetuner

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"
SETS = ["train.epochs=1", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
        "train.minibatch_size=4", "train.sample_batch_size=4", "base.latent_size=4",
        "train.log_kl=true", "device=cpu"]


def _cfg(name: str, *sets: str) -> FinetuneConfig:
    return load_config(CONFIGS / f"{name}.yaml", FinetuneConfig, [*SETS, *sets])


@pytest.mark.parametrize("name", ["sd3_tiny_flow_grpo_lora", "flux_tiny_flow_grpo_lora"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flow_pipeline_weights_in_base_dtype_with_fp32_adapters_and_outputs(name, dtype):
    half = build_setup(_cfg(name, f"base.dtype={str(dtype).split('.')[1]}"))
    full = build_setup(_cfg(name))
    pipe = half.model.transformer
    base = [p for n, p in pipe.named_parameters() if "lora_" not in n]
    lora = [p for n, p in pipe.named_parameters() if "lora_" in n]
    assert base and all(p.dtype == dtype and not p.requires_grad for p in base)
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)
    assert all(p.dtype == torch.float32 for p in full.model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *half.shape, generator=g)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        cond_h, cond_f = half.encode(["a cat", "a dog"]), full.encode(["a cat", "a dog"])
        v_h, v_f = half.model(x, t, cond_h), full.model(x, t, cond_f)
        ref_h = half.ref(x, t, cond_h)
        img = half.decode(x)
    assert v_h.dtype == ref_h.dtype == img.dtype == torch.float32
    assert torch.equal(v_h, ref_h)  # LoRA B = 0 at init: the adapted model is its base
    # the same network in fewer bits: close to fp32, not equal (bf16: 8 mantissa bits)
    err = (v_h - v_f).norm() / v_f.norm()
    assert 0 < err < (0.05 if dtype == torch.bfloat16 else 0.01)


def test_a_bf16_lora_epoch_trains_on_cpu():
    cfg = _cfg("sd3_tiny_flow_grpo_lora", "base.dtype=bfloat16")
    ft = Finetuner(cfg, None)
    before = ft.setup.trainable_state()
    m = ft.train_epoch()
    after = ft.setup.trainable_state()
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values() if isinstance(v, float))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype == torch.float32 for v in after.values())
