"""Load a pretraining run's model, draw samples, score them and draw the grids.

Digits: class accuracy of conditional samples and mean probability of the requested class under
the project's classifier, Fréchet distance on its features against the real test split,
diversity. 2-D toys: sliced Wasserstein distance to fresh data samples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml
from torch import nn

from scorealign.config import config_from_dict
from scorealign.data import load_digits
from scorealign.data.toys import DATASETS
from scorealign.nets import build_model, load_pretrained
from scorealign.report.figures import save_image_grid, save_scatter
from scorealign.rng import generator
from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
from scorealign.run.rundir import RunDir
from scorealign.train.task import SamplingConfig, Task, build_task


PRETRAINED_DIGITS8 = Path(__file__).resolve().parents[1] / "assets" / "pretrained" / "digits8"


def _read_config(config_file: Path) -> "PretrainConfig":  # noqa: F821
    from scorealign.train.pretrain import PretrainConfig
    return config_from_dict(yaml.safe_load(config_file.read_text()) or {}, PretrainConfig,
                            src=str(config_file))


def load_run(run_dir: str | Path) -> tuple["PretrainConfig", Task, nn.Module]:  # noqa: F821
    """Config, task and trained model (``final/``, else the latest checkpoint's EMA) of a run."""
    run = RunDir.open(run_dir)
    cfg = _read_config(run.config_file)
    task = build_task(cfg.data, cfg.sde, cfg.model)
    final = run.path / "final"
    if not (final / "model.safetensors").is_file() and (run.path / "model_config.json").is_file():
        final = run.path  # a model directory with its config (the shipped digits8)
    if (final / "model.safetensors").is_file():
        from safetensors import SafetensorError

        from scorealign.run.checkpoint import CheckpointError
        try:
            model = load_pretrained(final)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{final / 'model.safetensors'}: cannot read the model: "
                                  f"{' '.join(str(e).split())}") from None
    else:
        ckpt = latest_checkpoint(run.checkpoints)
        if ckpt is None:
            raise FileNotFoundError(f"{run.path}: no final/ model and no checkpoint to load")
        states, _ = load_checkpoint(ckpt)
        model = build_model(cfg.model)
        model.load_state_dict(states["ema"])
    return cfg, task, model.eval()


def load_pretrained_digits(device: str | torch.device = "cpu"
                           ) -> tuple["PretrainConfig", Task, nn.Module]:  # noqa: F821
    """The shipped text-conditional 8×8 digits model: (config, task, model) in eval mode.

    ``task.generate(model, task.cond_for(labels), n, cfg.sample)`` draws digits for labels;
    ``task.sde`` (VP), ``task.kind`` ("eps") and ``task.pred_fn(model, cond, guidance)`` give
    what a sampler or an RL fine-tuner needs. The weights are the EMA of
    ``scorealign pretrain --config configs/pretrain/digits.yaml`` (see the asset's README.md).
    """
    cfg = _read_config(PRETRAINED_DIGITS8 / "config.yaml")
    task = build_task(cfg.data, cfg.sde, cfg.model)
    model = load_pretrained(PRETRAINED_DIGITS8, device=device)
    task.model = model
    return cfg, task, model


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


def _image_metrics(task: Task, model: nn.Module, cfg: SamplingConfig, rewards, n: int
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


def evaluate_run(loaded, cfg: SamplingConfig | None, n: int | None = None) -> dict[str, float]:
    """Metrics of a trained run beside its base model's (``scorealign.load`` result).

    finetune: ``reward/mean``, ``reward/gold_mean`` and on digits ``eval/accuracy``, ``eval/fd``
    of the trained model and (prefixed ``base/``) of the base model, from the same seeds;
    Diffusion-DPO: the digits metrics of both; dpo: the demo's oracle win rate, else the
    fraction of data pairs whose chosen completion the policy rates above the rejected one;
    control: J(π) (``control.train.evaluate``).
    """
    kind = loaded.kind
    if kind in ("finetune", "diffusion_dpo"):
        rewards = None
        if kind == "finetune":
            from scorealign.rewards.compose import build_reward_set
            rc = loaded.config.reward
            rewards = build_reward_set(rc.optimized, rc.gold)
        if loaded.task is not None:
            n = n or cfg.num_eval
            after = _image_metrics(loaded.task, loaded.model, cfg, rewards, n)
            before = _image_metrics(loaded.task, loaded.base, cfg, rewards, n)
        else:  # SD-style: rewards of policy rollouts from the same seeds
            prompts = loaded.setup.prompts
            per = max(1, (n or 32) // len(prompts))
            after = rewards(loaded.sample(prompts, per), [p for p in prompts for _ in range(per)],
                            {"epoch": -1}).metrics()
            before = rewards(loaded.sample(prompts, per, base=True),
                             [p for p in prompts for _ in range(per)], {"epoch": -1}).metrics()
        return {**after, **{f"base/{k}": v for k, v in before.items()}}
    if kind == "control":
        from scorealign.control.envs import make_env
        from scorealign.control.train import evaluate as control_eval
        c = loaded.config
        return control_eval(make_env(c.env.name, c.env.params), loaded.model, c)
    if kind == "dpo":
        return _dpo_metrics(loaded)
    raise ValueError(f"no evaluation for {kind} runs")


@torch.no_grad()
def _dpo_metrics(loaded) -> dict[str, float]:
    from scorealign.preference import data as D
    from scorealign.preference import demo_task

    c = loaded.config
    if c.data.source == "demo":
        run = loaded.run_dir
        tok, weights, _ = demo_task.prepare(c.demo, c.model, run, c.seed)
        return demo_task.WinRateEval(tok, c.model, weights, c.demo, c.seed)(loaded.model)
    from scorealign.preference.logratio import concatenated_logps
    exs = D.read_jsonl(c.data.path, c.data.kind) if c.data.source == "jsonl" else \
        D.load_hf(c.data.path, c.data.split, c.data.kind)
    exs = exs[: c.data.limit] if c.data.limit else exs
    if c.data.kind != "paired":
        raise ValueError("evaluation of unpaired (KTO) data is not defined")
    items = [D.tokenize_example(loaded.tokenizer, ex, max_length=c.data.max_length,
                                max_prompt_length=c.data.max_prompt_length) for ex in exs]
    collate = D.PairCollator(loaded.tokenizer.pad_token_id, c.data.padding_side)
    wins, total = 0.0, 0
    for s in range(0, len(items), 32):
        idx = list(range(s, min(s + 32, len(items))))
        w, lo = concatenated_logps(loaded.model, collate([items[i] for i in idx], idx))
        wins += float((w.logp > lo.logp).float().sum())
        total += len(idx)
    return {"eval/pref_accuracy": wins / max(total, 1), "eval/pairs": float(total)}


def write_eval(run: RunDir, metrics: dict, cfg: SamplingConfig | None,
               name: str = "eval") -> Path:
    """Write ``RUN/<name>.json`` atomically with the sampling settings beside the metrics."""
    from scorealign.config import to_dict
    out = run.path / f"{name}.json"
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({**metrics, "sampling": to_dict(cfg)}, indent=2))
    os.replace(tmp, out)
    return out
