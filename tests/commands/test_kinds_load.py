"""``scorealign.load`` of an SD, SD3 or FLUX LoRA finetune run returns the run's own pipeline class
(built as the run's setup builds it) with the trained LoRA loaded from ``final/``, and its samples
equal the run's own sampler's (the trainer's setup with the checkpoint's adapters) from the same
seeds: both roll out the same policy over the same weights, so they agree bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"
RUNS = [("sd_tiny_ddpo_lora", "StableDiffusionPipeline", "unet"),
        ("sd3_tiny_flow_grpo_lora", "StableDiffusion3Pipeline", "transformer"),
        ("flux_tiny_flow_grpo_lora", "FluxPipeline", "transformer")]
SETS = ["train.epochs=1", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
        "train.minibatch_size=4", "train.sample_batch_size=4", "train.inner_epochs=1",
        "train.ckpt_every=1", "base.latent_size=4", "train.log_kl=false", "train.lr=3e-2",
        "device=cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("name,pipeline,denoiser", RUNS)
def test_load_of_a_lora_run_is_its_pipeline_with_the_lora(tmp_path, name, pipeline, denoiser):
    from scorealign.cli.app import app
    from scorealign.commands.kind_finetune import finetune_setup
    from scorealign.commands.load import load

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["finetune", "--config", str(CONFIGS / f"{name}.yaml"),
                                   "--out", str(out), *[a for s in SETS for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    assert (out / "final" / "pytorch_lora_weights.safetensors").is_file()

    loaded = load(out)
    assert type(loaded.model).__name__ == pipeline
    assert any("lora" in n for n, _ in getattr(loaded.model, denoiser).named_parameters())
    prompts, n, seed = ["a cat", "a red car"], 2, 7
    got = loaded.sample(prompts, n, seed=seed)

    cfg, setup = finetune_setup(out)  # the run's own sampler: trainer setup + checkpoint
    with torch.no_grad():
        traj = setup.policy(cfg).rollout(prompts, n, seeds=torch.arange(len(prompts) * n) + seed)
        want = setup.decode(traj.x0).cpu()
        base = loaded.sample(prompts, n, seed=seed, base=True)
    assert got.shape == want.shape == (len(prompts) * n, *want.shape[1:])
    assert torch.equal(got, want)
    assert not torch.equal(got, base)  # the LoRA is applied: not the base model's samples
