"""``demo``: the README's main job, LOOP fine-tuning of the shipped digits model
(``configs/finetune/demo.yaml``); pretrains a small base first when no shipped checkpoint is
present. A killed demo continues where it stopped; a finished one is redone."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from scorealign.commands.common import Say, configs_root, resolve_config
from scorealign.commands.finetune import finetune
from scorealign.commands.pretrain import pretrain

DEMO_CONFIG = configs_root() / "finetune" / "demo.yaml"
PRETRAIN_CONFIG = configs_root() / "pretrain" / "digits.yaml"
TITLE = "demo: LOOP fine-tuning of digits"


def demo(out: str | Path = Path("runs/demo"), sets: list[str] | None = None, *,
         say: Say | None = None) -> Path:
    """Fine-tune the shipped digits model with LOOP into ``out``; returns the run directory.

    ``sets``: ``--set`` overrides of the demo config; ``say``: receives the base pretraining's
    lines when a base is pretrained here.
    """
    from scorealign.rl.config import FinetuneConfig
    from scorealign.train.bases import resolve_base_path
    cfg = resolve_config(FinetuneConfig, DEMO_CONFIG, sets)
    out = Path(out)
    try:
        resolve_base_path(cfg.base.path)
    except FileNotFoundError:  # no shipped checkpoint in this checkout: pretrain a small one
        base = out.parent / f"{out.name}-base"
        cfg = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, path=str(
            pretrain_demo_base(base, say=say))))
    if (out / "checkpoints" / "latest").is_file() and not (out / "report.html").is_file():
        return finetune(cfg, None, out, title=TITLE)
    if out.exists():
        shutil.rmtree(out)
    return finetune(cfg, out, None, title=TITLE)


def pretrain_demo_base(path: Path, steps: int = 500, *, say: Say | None = None) -> Path:
    """A text-conditional digits model (``configs/pretrain/digits.yaml``, ``steps`` steps) at
    ``path``, continued if a run there was killed, reused if finished."""
    from scorealign.train.pretrain import PretrainConfig
    if (path / "final" / "model.safetensors").is_file():
        return path
    cfg = resolve_config(PretrainConfig, PRETRAIN_CONFIG, [f"train.steps={steps}",
                                                           "sample.num_eval=100"])
    resume = path if (path / "checkpoints" / "latest").is_file() else None
    if resume is None and path.exists():
        shutil.rmtree(path)
    return pretrain(cfg, None if resume else path, resume, say=say)


__all__ = ["demo", "pretrain_demo_base", "DEMO_CONFIG"]
