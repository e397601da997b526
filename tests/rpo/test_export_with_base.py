"""``scorealign export RUN --with-base`` of a Diffusion-DPO LoRA run: the diffusers pipeline
(label-conditional UNet, LoRA merged) samples as the run's loaded model does with the sampler its
``sample``/``eval`` use (the default ``SamplingConfig``), from the same latents."""

from __future__ import annotations

import pytest
import torch
import yaml
from diffusers import DiffusionPipeline
from typer.testing import CliRunner

from scorealign.cli.app import app

runner = CliRunner()


@pytest.mark.slow
def test_diffusion_dpo_lora_run_exports_a_pipeline(tiny_model_dir, tmp_path):
    from scorealign.commands.load import load
    from scorealign.samplers.loop import sample
    from scorealign.train.task import SamplingConfig

    pairs = tmp_path / "pairs"
    res = runner.invoke(app, ["rpo", "build-pairs", "--config", "configs/rpo/digits_reward.yaml",
                              "--set", f"base.path={tiny_model_dir}", "--set", "prompts.n=8",
                              "--set", "generation.steps=3", "--out", str(pairs)])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(open("configs/dpo/digits_rpo.yaml"))
    cfg.update(device="cpu", eval={"enabled": False}, base={"path": str(tiny_model_dir)},
               reference={"mode": "lora_disabled"}, lora={"enabled": True, "r": 2})
    cfg["data"]["path"] = str(pairs)
    cfg["train"].update(steps=2, batch_size=6, log_every=1, ckpt_every=2, progress=False,
                        lr=0.05)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    res = runner.invoke(app, ["dpo", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", str(run), "--to", str(tmp_path / "pipe"), "--with-base"])
    assert res.exit_code == 0, res.output

    pipe = DiffusionPipeline.from_pretrained(str(tmp_path / "pipe"),
                                             custom_pipeline=str(tmp_path / "pipe/pipeline.py"),
                                             trust_remote_code=True)
    loaded = load(run)
    task, scfg = loaded.task, SamplingConfig()
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = task.cond_for(torch.tensor([2, 5]))
    with torch.no_grad():
        want = sample(task.pred_fn(loaded.model, cond, scfg.guidance), task.kind, task.sde, x_T,
                      sampler=scfg.sampler, steps=scfg.steps, eta=scfg.eta, grid=scfg.grid).x0
        base = sample(task.pred_fn(loaded.base, cond, scfg.guidance), task.kind, task.sde, x_T,
                      sampler=scfg.sampler, steps=scfg.steps, eta=scfg.eta, grid=scfg.grid).x0
    got = pipe(class_labels=[2, 5], latents=x_T, output_type="latent").images
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (base - want).abs().max() > 1e-4  # the trained adapters are in the export
