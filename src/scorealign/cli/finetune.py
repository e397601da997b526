"""``scorealign finetune`` and the RL demo (``run_demo``): fine-tune, then report before/after."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Optional

import torch
import typer

from scorealign.cli.common import (CONFIG_OPT, DRY_OPT, HELP_CFG_OPT, OUT_OPT, RESUME_OPT, SET_OPT,
                                   configs_root, default_out, fail, resolve_config)

CONFIGS = configs_root() / "finetune"
DEMO_CONFIG = CONFIGS / "demo.yaml"


def finetune_cmd(config: Optional[Path] = CONFIG_OPT, set_: Optional[list[str]] = SET_OPT,
                 out: Optional[Path] = OUT_OPT, resume: Optional[Path] = RESUME_OPT,
                 dry_run: bool = DRY_OPT, help_config: bool = HELP_CFG_OPT) -> None:
    """RL fine-tuning of a diffusion model toward a reward (REINFORCE, DDPO, LOOP, GRPO, DPOK,
    Score as Action, reward backprop), then before/after samples and a report."""
    from scorealign.rl.config import FinetuneConfig
    cfg = resolve_config(FinetuneConfig, config, set_, resume, dry_run, help_config)
    path = run_finetune(cfg, out, resume)
    typer.echo(f"report: {path / 'report.html'}")


def run_finetune(cfg, out: Path | None, resume: Path | None, title: str | None = None) -> Path:
    """Fine-tune into a run directory, write the before/after grids and ``report.html``."""
    from scorealign.report.html import write_report
    from scorealign.rewards.base import RewardError
    from scorealign.rl.trainer import Finetuner
    from scorealign.run.checkpoint import CheckpointError
    from scorealign.run.rundir import RunDir

    try:
        run = RunDir.open(resume) if resume else RunDir.create(out or default_out("finetune"), cfg)
        ft = Finetuner(cfg, run)
        if resume:
            ft.acc.print(f"resuming {run.path} from epoch {ft.resume()}")
        t0 = time.time()
        ft.fit()
    except RewardError as e:
        fail(f"{e}\nthe run stopped; its last checkpoint is intact (continue with --resume "
             f"after fixing the reward)")
    except (FileExistsError, FileNotFoundError, ValueError, KeyError, CheckpointError) as e:
        fail(str(e))
    if ft.acc.is_main_process:
        from scorealign.export import export_finetuner; export_finetuner(ft)  # noqa: E702 (#11)
        before_after(ft, run)
        run.log(ft.epoch, **{"time/total_s": time.time() - t0})
        write_report(run.path, title=title or f"finetune: {run.path.name}")
    return run.path


@torch.no_grad()
def before_after(ft, run, per_prompt: int = 8) -> dict[str, float]:
    """Grids of the base and the fine-tuned model from the same seeds; their mean rewards."""
    import json

    from scorealign.report.figures import save_image_grid
    prompts = ft.setup.prompts[:10]
    seeds = torch.arange(len(prompts) * per_prompt) + 10_000
    scores = {}
    for name, pol in (("before", ft.ref_policy), ("after", ft.policy)):
        traj = pol.rollout(prompts, per_prompt, seeds=seeds, device=ft.acc.device)
        images = ft.setup.decode(traj.x0).cpu()
        save_image_grid(images, run.samples / f"{name}.png", nrow=per_prompt)
        out = ft.rewards(images, traj.prompts, {"epoch": ft.epoch})
        scores.update({f"{name}/{k}": v for k, v in out.metrics().items()})
    (run.path / "eval_before_after.json").write_text(json.dumps(scores, indent=2))
    return scores


def run_demo(out: Path, sets: list[str] | None) -> Path:
    """The README's main job: fine-tune the shipped digits model with LOOP; returns the run dir.

    A killed demo continues where it stopped (``--resume`` semantics); a finished one is redone.
    """
    import dataclasses

    from scorealign.rl.config import FinetuneConfig
    from scorealign.rl.setup import resolve_base_path
    cfg = resolve_config(FinetuneConfig, DEMO_CONFIG, sets)
    out = Path(out)
    try:
        resolve_base_path(cfg.base.path)
    except FileNotFoundError:  # no shipped checkpoint in this checkout: pretrain a small one
        base = out.parent / f"{out.name}-base"
        cfg = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, path=str(
            pretrain_demo_base(base))))
    if (out / "checkpoints" / "latest").is_file() and not (out / "report.html").is_file():
        return run_finetune(cfg, None, out, title="demo: LOOP fine-tuning of digits")
    if out.exists():
        shutil.rmtree(out)
    return run_finetune(cfg, out, None, title="demo: LOOP fine-tuning of digits")


def pretrain_demo_base(path: Path, steps: int = 500) -> Path:
    """A text-conditional digits model (``configs/pretrain/digits.yaml``, ``steps`` steps)."""
    from scorealign.cli.core import DEMO_CONFIG as PRETRAIN_CONFIG
    from scorealign.cli.core import run_pretrain
    from scorealign.train.pretrain import PretrainConfig
    if (path / "final" / "model.safetensors").is_file():
        return path
    cfg = resolve_config(PretrainConfig, PRETRAIN_CONFIG, [f"train.steps={steps}",
                                                            "sample.num_eval=100"])
    resume = path if (path / "checkpoints" / "latest").is_file() else None
    if resume is None and path.exists():
        shutil.rmtree(path)
    return run_pretrain(cfg, None if resume else path, resume)


def register(app: typer.Typer) -> None:
    """Add ``finetune`` to the ``scorealign`` app."""
    app.command("finetune")(finetune_cmd)
