"""A digits model exported as a diffusers pipeline (``commands.digits_diffusers``) samples as
scorealign does: from the same latents (and, for stochastic samplers, the same per-step noise)
the pipeline's x_0 equals ``samplers.loop.sample`` with the task's guided prediction."""

import dataclasses

import pytest
import torch
from diffusers import DiffusionPipeline

from scorealign.commands.digits_diffusers import scheduler_config, write_digits_pipeline
from scorealign.errors import ExportError
from scorealign.nets import build_model
from scorealign.samplers.loop import sample
from scorealign.train.bases import load_base
from scorealign.train.task import DataConfig, SamplingConfig, Task

PROMPTS = ["a handwritten digit 3", "the number seven"]


def _load(path):
    return DiffusionPipeline.from_pretrained(str(path), custom_pipeline=str(path / "pipeline.py"),
                                             trust_remote_code=True)


def _reference(base, scfg, prompts, x_T, noise):
    cond = base.task.cond_for(torch.zeros(len(prompts), dtype=torch.long), prompts)
    out = sample(base.task.pred_fn(base.model, cond, scfg.guidance), base.kind, base.sde, x_T,
                 sampler=scfg.sampler, steps=scfg.steps, eta=scfg.eta, grid=scfg.grid,
                 noise=noise)
    return out.x0


@pytest.mark.parametrize("name,scfg", [
    ("pretrained:digits8", SamplingConfig(sampler="ddim", steps=12, eta=0.0, guidance=2.0,
                                          grid="uniform")),
    ("pretrained:digits8", SamplingConfig(sampler="ddim", steps=6, eta=0.7, guidance=3.0,
                                          grid="quadratic")),
    ("pretrained:digits8-flow", SamplingConfig(sampler="euler_ode", steps=8, eta=0.0,
                                               guidance=2.0, grid="auto")),
    ("pretrained:digits8-flow", SamplingConfig(sampler="flow_sde", steps=6, eta=0.7,
                                               guidance=2.0, grid="auto")),
])
def test_exported_pipeline_reproduces_scorealign_sampling(name, scfg, tmp_path):
    base = load_base(name)
    write_digits_pipeline(base.model, base.task, scfg, tmp_path / "pipe")
    pipe = _load(tmp_path / "pipe")
    assert type(pipe).__name__ == "ScorealignDigitsPipeline"
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(len(PROMPTS), *base.image_shape(), generator=g)
    noise = torch.randn(scfg.steps, *x_T.shape, generator=g) if scfg.eta else None
    want = _reference(base, scfg, PROMPTS, x_T, noise)
    got = pipe(PROMPTS, latents=x_T, noise=noise, output_type="latent").images
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # and the guidance and the sampler matter (the comparison can fail)
    other = pipe(PROMPTS, latents=x_T, noise=noise, guidance_scale=1.0,
                 output_type="latent").images
    assert (other - want).abs().max() > 1e-2


def test_a_generator_gives_scorealigns_draws(tmp_path):
    """Latents and per-step z drawn from one generator in scorealign's order (x_T, then z_i)."""
    base = load_base("pretrained:digits8")
    scfg = SamplingConfig(sampler="ddpm", steps=5, guidance=2.0, grid="uniform")
    write_digits_pipeline(base.model, base.task, scfg, tmp_path / "pipe")
    pipe = _load(tmp_path / "pipe")
    got = pipe(PROMPTS[:1], num_images_per_prompt=3, generator=torch.Generator().manual_seed(5),
               output_type="latent").images
    g = torch.Generator().manual_seed(5)
    x_T = base.sde.prior_sample((3, *base.image_shape()), g)
    cond = base.task.cond_for(torch.zeros(3, dtype=torch.long), PROMPTS[:1] * 3)
    want = sample(base.task.pred_fn(base.model, cond, 2.0), base.kind, base.sde, x_T,
                  sampler="ddpm", steps=5, grid="uniform", generator=g).x0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mtype,cond", [("unet_cond", "label"), ("unet", "label"),
                                        ("unet", "none")])
def test_label_and_unconditional_models(mtype, cond, tmp_path):
    """Random-weight label / unconditional networks of every UNet type export exactly too."""
    base = load_base("pretrained:digits8")
    mcfg = dataclasses.replace(base.task.model_cfg, type=mtype, cond=cond)
    model = build_model(mcfg, seed=3).eval()
    task = Task(DataConfig(name="digits", image_size=8), base.sde, model, mcfg)
    scfg = SamplingConfig(sampler="ddim", steps=4, eta=0.0, guidance=2.5, grid="uniform")
    write_digits_pipeline(model, task, scfg, tmp_path / "pipe")
    pipe = _load(tmp_path / "pipe")
    x_T = torch.randn(2, *base.image_shape(), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, 8])
    tc = None if cond == "none" else task.cond_for(labels)
    with torch.no_grad():
        want = sample(task.pred_fn(model, tc, scfg.guidance), task.kind, task.sde, x_T,
                      sampler="ddim", steps=4, eta=0.0, grid="uniform").x0
    kw = {"class_labels": [3, 8]} if cond == "label" else {"num_images_per_prompt": 2}
    got = pipe(latents=x_T, output_type="latent", **kw).images
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_two_evaluation_samplers_and_correctors_are_clear_errors():
    base = load_base("pretrained:digits8")
    with pytest.raises(ExportError, match="sample.sampler 'heun_ode'.*one-evaluation"):
        scheduler_config(base.task, SamplingConfig(sampler="heun_ode", steps=4))
    with pytest.raises(ExportError, match="policy.corrector_steps 1"):
        scheduler_config(base.task, SamplingConfig(steps=4, corrector_steps=1), "policy")
