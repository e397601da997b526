"""Run kind ``pretrain`` (``scorealign pretrain``): a digits or 2-D diffusion model trained by
denoising score matching; exported as the ``save_pretrained`` pair of its EMA weights."""

from __future__ import annotations

from pathlib import Path

from scorealign.commands.kinds import EvalRequest, RunKind
from scorealign.commands.runs import draw_digits, run_checkpoint, sample_digits, sampling_overrides
from scorealign.train.pretrain import PretrainConfig


def load(run_dir: Path, device: str):
    """Config, task and model (``final/``, else the newest checkpoint's EMA)."""
    from scorealign.commands.load import Loaded
    from scorealign.train.bases import load_run

    cfg, task, model = load_run(run_dir)
    return Loaded("pretrain", cfg, model.to(device), task=task, sampling=cfg.sample)


def evaluate(loaded, req: EvalRequest):
    """Class accuracy and Fréchet distance (digits), sliced W2 (2-D) of the run's sampler."""
    from scorealign.train.evaluate import evaluate as metrics

    scfg = sampling_overrides(loaded.sampling, req.sampler, req.steps, req.eta, req.guidance,
                              req.n)
    return metrics(loaded.task, loaded.model, scfg), scfg


def export(run_dir: Path, dest: Path, checkpoint=None) -> Path:
    """The checkpoint's EMA weights as the ``save_pretrained`` pair."""
    from scorealign.run.atomic import atomic_dir, flatten_into
    from scorealign.train.bases import read_pretrain_config
    from scorealign.train.task import build_task

    cfg = read_pretrain_config(run_dir / "config.yaml")
    states, _ = run_checkpoint(run_dir, checkpoint)
    task = build_task(cfg.data, cfg.sde, cfg.model)
    with atomic_dir(dest) as tmp:
        task.export(states.get("ema") or states["model"], tmp / "m")
        flatten_into(tmp)
    return dest


def export_with_base(run_dir: Path, dest: Path, checkpoint=None) -> Path:
    """The checkpoint's EMA model as a diffusers pipeline replaying the run's ``sample``
    sampler (:func:`scorealign.commands.digits_diffusers.write_digits_pipeline`)."""
    from scorealign.commands.digits_diffusers import write_digits_pipeline
    from scorealign.nets import build_model
    from scorealign.train.bases import read_pretrain_config
    from scorealign.train.task import build_task

    cfg = read_pretrain_config(run_dir / "config.yaml")
    states, _ = run_checkpoint(run_dir, checkpoint)
    task = build_task(cfg.data, cfg.sde, cfg.model)
    model = build_model(cfg.model)
    model.load_state_dict(states.get("ema") or states["model"])
    return write_digits_pipeline(model.eval(), task, cfg.sample, dest, field="sample")


def detect(config: dict) -> bool:
    return {"data", "sde", "model"} <= set(config)


RECORD = RunKind("pretrain", PretrainConfig, load, sample_digits, evaluate, export,
                 detect=detect, draw=draw_digits)
