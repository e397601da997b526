"""``scorealign export RUN --with-base`` of digits runs (finetune, pretrain): the diffusers
pipeline samples as the run's own model and sampler do, from the same latents and noise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

from scorealign.samplers.loop import sample

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a handwritten digit 3", "the number seven"]


def _pipe(path):
    return DiffusionPipeline.from_pretrained(str(path), custom_pipeline=str(path / "pipeline.py"),
                                             trust_remote_code=True)


def _check(run, exported, scfg):
    """The exported pipeline equals ``scorealign.load(run)``'s model under ``scfg``."""
    from scorealign.commands.load import load

    loaded = load(run)
    task = loaded.task
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(len(PROMPTS), *task.train_x.shape[1:], generator=g)
    stochastic = scfg.sampler == "ddpm" or (scfg.eta or 0) > 0
    noise = torch.randn(scfg.steps, *x_T.shape, generator=g) if stochastic else None
    cond = task.cond_for(torch.zeros(2, dtype=torch.long), PROMPTS)
    with torch.no_grad():
        want = sample(task.pred_fn(loaded.model, cond, scfg.guidance), task.kind, task.sde, x_T,
                      sampler=scfg.sampler, steps=scfg.steps, eta=scfg.eta, grid=scfg.grid,
                      noise=noise).x0
    got = _pipe(exported)(PROMPTS, latents=x_T, noise=noise, output_type="latent").images
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_digits_finetune_run(tmp_path, run_cli):
    from scorealign.commands.kind_finetune import finetune_setup
    from scorealign.train.task import SamplingConfig

    run = tmp_path / "run"
    sets = ["train.epochs=1", "policy.steps=6", "prompts.per_epoch=2", "prompts.k=2",
            "train.minibatch_size=4", "train.sample_batch_size=4", "train.lr=3e-2",
            "reward.gold=null", "device=cpu"]
    run_cli("finetune", "--config", ROOT / "configs/finetune/digits_ddpo.yaml", "--out", run,
            sets=sets)
    run_cli("export", run, "--to", tmp_path / "pipe", "--with-base")
    run_cli("export", run, "--to", tmp_path / "x", "--with-base", "--adapter", code=2)
    cfg, _ = finetune_setup(run, trained=False)
    p = cfg.policy
    _check(run, tmp_path / "pipe", SamplingConfig(sampler=p.sampler, steps=p.steps, eta=p.eta,
                                                  grid=p.grid, guidance=p.guidance))


@pytest.mark.slow
def test_digits_pretrain_run(tmp_path, run_cli):
    from scorealign.train.bases import read_pretrain_config

    run = tmp_path / "run"
    sets = ["train.steps=2", "train.batch_size=16", "train.ckpt_every=2", "sample.steps=5",
            "sample.num_eval=16", "device=cpu"]
    run_cli("pretrain", "--config", ROOT / "configs/pretrain/digits.yaml", "--out", run,
            sets=sets)
    run_cli("export", run, "--to", tmp_path / "pipe", "--with-base")
    _check(run, tmp_path / "pipe", read_pretrain_config(run / "config.yaml").sample)
