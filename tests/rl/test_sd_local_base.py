"""``base.type: sd``: a real Stable-Diffusion-1.x-style pipeline (UNet) fine-tuned from a local
directory, here the tiny SD pipeline of ``policy/sd.py`` saved with ``save_pretrained`` (built
from its configs in code, nothing downloaded). The run records the directory as its base (no copy
of the weights in the run), its setup's denoiser is the saved pipeline's bit for bit, and
``export --with-base`` writes a pipeline that ``DiffusionPipeline.from_pretrained`` loads alone
with the trained UNet (LoRA fused)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "finetune" / "sd_tiny_ddpo_lora.yaml"
PROMPTS = 'prompts.prompts=["a cat", "a red car"]'


@pytest.fixture(scope="module")
def local_base(tmp_path_factory):
    from scorealign.policy.sd import build_tiny_sd_pipeline
    d = tmp_path_factory.mktemp("sd_local") / "my-sd-base"
    build_tiny_sd_pipeline(0).save_pretrained(str(d))
    return d


def _denoise(cfg, pipe):
    """The pipeline's denoiser in the trainer's interface at a fixed (x, t, prompts)."""
    from scorealign.rl.setup import build_setup, pipeline_model

    model = pipeline_model(cfg, pipe)
    setup = build_setup(cfg)
    x = torch.randn(2, *setup.shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 0.6)
    with torch.no_grad():
        return model(x, t, setup.encode(["a cat", "a red car"]))


def test_sd_base_loads_the_directory_in_base_dtype(local_base):
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig
    from scorealign.rl.setup import base_pipeline, build_setup
    from scorealign.policy.sd import build_tiny_sd_pipeline

    cfg = load_config(CONFIG, FinetuneConfig, ["base.type=sd", f"base.path={local_base}",
                                               "base.dtype=bfloat16"])
    pipe = base_pipeline(cfg)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.safety_checker is None
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    setup = build_setup(cfg)
    lora = [n for n, p in setup.model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    assert all(p.dtype == torch.float32 for p in setup.model.parameters() if p.requires_grad)
    # fp32: the directory's weights are the built-in pipeline's (what was saved), bit for bit
    cfg32 = load_config(CONFIG, FinetuneConfig, ["base.type=sd", f"base.path={local_base}"])
    tiny = load_config(CONFIG, FinetuneConfig, ["base.type=sd_tiny"])
    torch.testing.assert_close(_denoise(cfg32, base_pipeline(cfg32)),
                               _denoise(tiny, build_tiny_sd_pipeline(0)), atol=0, rtol=0)


@pytest.mark.slow  # a CLI run (rollouts, before/after grids) and two exports: ~10 s on 1 thread
def test_sd_local_run_records_its_base_and_exports_a_pipeline(local_base, tmp_path, run_cli,
                                                               tiny_lora_sets):
    from diffusers import DiffusionPipeline

    from scorealign.commands.kind_finetune import finetune_setup, trained_pipeline
    from scorealign.rl.setup import base_pipeline
    from scorealign.run.rundir import RunDir

    run = tmp_path / "run"
    run_cli("finetune", "--config", CONFIG, "--out", run, "--set", "base.type=sd", "--set",
            f"base.path={local_base}", sets=(*tiny_lora_sets, PROMPTS))
    rec = RunDir(run).base
    assert rec == {"type": "sd", "source": "local", "path": str(local_base.resolve())}
    assert not (run / "base").exists()  # the user's directory is the base: no copy
    assert (run / "final" / "pytorch_lora_weights.safetensors").is_file()

    run_cli("export", run, "--to", tmp_path / "fused", "--with-base")
    run_cli("export", run, "--to", tmp_path / "adapter", "--with-base", "--adapter")
    cfg, setup = finetune_setup(run)
    want = _denoise(cfg, trained_pipeline(cfg, run, setup))
    fused = DiffusionPipeline.from_pretrained(str(tmp_path / "fused"))
    assert type(fused).__name__ == "StableDiffusionPipeline"
    assert not any("lora" in n for n, _ in fused.unet.named_parameters())
    torch.testing.assert_close(_denoise(cfg, fused), want, atol=1e-5, rtol=1e-5)
    adapted = DiffusionPipeline.from_pretrained(str(tmp_path / "adapter"))
    adapted.load_lora_weights(str(tmp_path / "adapter"))
    torch.testing.assert_close(_denoise(cfg, adapted), want, atol=1e-5, rtol=1e-5)
    assert (_denoise(cfg, base_pipeline(cfg)) - want).abs().max() > 1e-3  # it trained
    # the exported pipeline samples with diffusers alone
    img = fused(["a cat"], num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 16, 16, 3)
