"""``demo``: the README's main job, LOOP fine-tuning of the shipped digits model with a KL term
to the base (``configs/finetune/demo.yaml``: the aesthetic proxy rises while the held-out gold
reward, prompt alignment, stays within the alarm's margin); pretrains a small base first when no
shipped checkpoint is present. The terminal opens with what is fine-tuned toward what and closes
with the before → after table (``commands.finetune``).

A killed demo continues where it stopped. A finished one is never removed by a rerun: asked again
with the same settings, the demo says where its report is; with other settings it is an error
(exit 2) that offers ``overwrite``. A directory that is not a demo run is never touched.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import yaml

from scorealign.commands.common import (RunInterrupted, Say, check_out, configs_root,
                                        has_checkpoint, resolve_config, run_kind_at, silent)
from scorealign.commands.finetune import finetune
from scorealign.commands.pretrain import pretrain
from scorealign.errors import UsageError

DEMO_CONFIG = configs_root() / "finetune" / "demo.yaml"
PRETRAIN_CONFIG = configs_root() / "pretrain" / "digits.yaml"
TITLE = "demo: LOOP fine-tuning of digits"


def demo(out: str | Path = Path("runs/demo"), sets: list[str] | None = None, *,
         say: Say | None = None, overwrite: bool = False) -> Path:
    """Fine-tune the shipped digits model with LOOP into ``out``; returns the run directory.

    ``sets``: ``--set`` overrides of the demo config; ``say``: receives the base pretraining's
    lines when a base is pretrained here, and the line about a finished demo; ``overwrite``:
    redo a finished demo run at ``out``.

    Raises:
        UsageError: ``out`` is a file or a directory that is not a demo run, or a finished demo
            run with other settings (without ``overwrite``).
    """
    from scorealign.config import dump_config
    from scorealign.rl.config import FinetuneConfig
    from scorealign.train.bases import resolve_base_path
    cfg = resolve_config(FinetuneConfig, DEMO_CONFIG, sets)
    out = Path(out)
    check_out(out, "demo")  # before pretraining a base beside it
    try:
        resolve_base_path(cfg.base.path)
    except FileNotFoundError:  # no shipped checkpoint in this checkout: pretrain a small one
        base = out.parent / f"{out.name}-base"
        cfg = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, path=str(
            pretrain_demo_base(base, say=say))))
    again = f"scorealign demo --out {out}"
    if run_kind_at(out) == "finetune" and has_checkpoint(out):
        if (out / "report.html").is_file() and not overwrite:
            same = yaml.safe_load((out / "config.yaml").read_text()) == \
                yaml.safe_load(dump_config(cfg))
            if not same:
                raise UsageError(f"--out {out}: holds a finished demo run with other settings; "
                                 f"choose another --out or pass --overwrite to redo it")
            (say or silent)(f"{out} holds a finished demo run (pass --overwrite to redo it); "
                            f"report: {out / 'report.html'}")
            return out
        if overwrite and (out / "report.html").is_file():
            shutil.rmtree(out)  # a finished run of this program, redone as the user asked
        else:
            return finetune(cfg, None, out, title=TITLE, again=again)
    return finetune(cfg, out, None, title=TITLE, again=again)


def pretrain_demo_base(path: Path, steps: int = 500, *, say: Say | None = None) -> Path:
    """A text-conditional digits model (``configs/pretrain/digits.yaml``, ``steps`` steps) at
    ``path``, continued if a run there was killed, reused if finished; a directory there that
    is not a pretrain run is an error (UsageError), never removed."""
    from scorealign.train.pretrain import PretrainConfig
    if (path / "final" / "model.safetensors").is_file():
        return path
    cfg = resolve_config(PretrainConfig, PRETRAIN_CONFIG, [f"train.steps={steps}",
                                                           "sample.num_eval=100"])
    resume = path if run_kind_at(path) == "pretrain" and has_checkpoint(path) else None
    try:
        return pretrain(cfg, None if resume else path, resume, say=say)
    except UsageError as e:
        raise UsageError(f"{e} (the demo's base model goes there)") from None
    except RunInterrupted:
        raise RunInterrupted("interrupted while pretraining the demo's base; run the same "
                             "scorealign demo command again to continue") from None


__all__ = ["demo", "pretrain_demo_base", "DEMO_CONFIG"]
