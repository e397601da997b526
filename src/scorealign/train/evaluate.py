"""Draw samples of a digits or 2-D diffusion model, score them and draw the grids.

(Loading a run's model is :mod:`scorealign.train.bases`; the evaluation of each run kind is its
record in :mod:`scorealign.commands`.)

Digits: class accuracy of conditional samples and mean probability of the requested class under
the project's classifier, Fréchet distance on its features against the real test split,
diversity. 2-D toys: sliced Wasserstein distance to fresh data samples.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scorealign.data import load_digits
from scorealign.data.toys import DATASETS
from scorealign.report.figures import save_image_grid, save_scatter
from scorealign.rng import generator
from scorealign.run.rundir import RunDir
from scorealign.train.task import SamplingConfig, Task


def balanced_labels(n: int) -> torch.Tensor:
    """0,1,…,9,0,1,… (n entries): equal classes for conditional evaluation."""
    return torch.arange(n) % 10


def sample_grid(task: Task, model: nn.Module, cfg: SamplingConfig, path: Path,
                per_class: int = 10) -> Path:
    """Digits: a grid with one row per class (10 × per_class); 2-D: a scatter plot."""
    if not task.is_image:
        x = task.generate(model, None, 2000, cfg)
        return save_scatter(x, path, reference=task.train_x[:2000], title=path.stem)
    if task.model_cfg.cond == "none":
        x = task.generate(model, None, 10 * per_class, cfg)
    else:
        labels = torch.arange(10).repeat_interleave(per_class)
        x = task.generate(model, task.cond_for(labels), len(labels), cfg)
    return save_image_grid(x, path, nrow=per_class)


def evaluate(task: Task, model: nn.Module, cfg: SamplingConfig) -> dict[str, float]:
    """Metrics of ``cfg.num_eval`` samples (see module docstring)."""
    n = cfg.num_eval
    if not task.is_image:
        from scorealign.eval.metrics import sliced_wasserstein
        x = task.generate(model, None, n, cfg)
        g = generator(cfg.seed, "eval-data")
        ref = DATASETS.get(task.data_cfg.name).fn().sample(n, g).float()
        return {"eval/sliced_w2": sliced_wasserstein(x, ref, generator(cfg.seed, "eval-proj"))}
    from scorealign.eval.classifier import load_classifier
    from scorealign.eval.metrics import digits_metrics
    clf = load_classifier(size=task.data_cfg.image_size)
    labels = balanced_labels(n) if task.model_cfg.cond != "none" else None
    cond = task.cond_for(labels) if labels is not None else None
    x = task.generate(model, cond, n, cfg)
    real = load_digits("test", size=task.data_cfg.image_size, seed=task.data_cfg.split_seed).images
    return digits_metrics(clf, x, labels, real)


def image_metrics(task: Task, model: nn.Module, cfg: SamplingConfig, rewards, n: int
                   ) -> dict[str, float]:
    """Class accuracy, FD (digits) and reward / gold reward of ``n`` samples, balanced classes."""
    from scorealign.data import prompt_for
    from scorealign.eval.classifier import load_classifier
    from scorealign.eval.metrics import digits_metrics

    labels = balanced_labels(n)
    prompts = [prompt_for(int(y)) for y in labels]
    x = task.generate(model, task.cond_for(labels, prompts), n, cfg)
    out = {}
    if rewards is not None:
        out.update(rewards(x, prompts, {"epoch": -1}).metrics())
    clf = load_classifier(size=task.data_cfg.image_size)
    real = load_digits("test", size=task.data_cfg.image_size, seed=task.data_cfg.split_seed).images
    out.update(digits_metrics(clf, x, labels, real))
    return out


def write_eval(run: RunDir, metrics: dict, cfg: SamplingConfig | None,
               name: str = "eval") -> Path:
    """Write ``RUN/<name>.json`` atomically with the sampling settings beside the metrics."""
    from scorealign.config import to_dict
    from scorealign.run.atomic import write_json
    return write_json(run.path / f"{name}.json", {**metrics, "sampling": to_dict(cfg)})
