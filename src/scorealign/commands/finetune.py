"""``finetune``: RL fine-tuning of a diffusion model toward a reward into a run directory, then
``RUN/final`` in its ecosystem's format, before/after grids and ``report.html``.

The trainer (:class:`scorealign.rl.trainer.Finetuner`) returns its metrics and keeps the trained
weights; this command exports them (the trainer never exports).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from scorealign.commands.common import default_out, typed_errors


def finetune(cfg: Any, out: str | Path | None = None, resume: str | Path | None = None,
             title: str | None = None) -> Path:
    """Fine-tune into a run directory (new at ``out``, default ``runs/finetune-<time>``, or
    ``resume``), export ``RUN/final``, write the before/after grids and ``report.html``;
    returns the run directory.

    Raises:
        RewardError: the reward failed (non-finite, wrong shape); the message says the last
            checkpoint is intact.
        UsageError: ``out`` holds a run already; ConfigError: a value, key or file of the config
            that the trainer cannot use; CheckpointError, RunDirError.
    """
    from scorealign.commands.kind_finetune import export_finetuner
    from scorealign.report.html import write_report
    from scorealign.rewards.base import RewardError
    from scorealign.rl.trainer import Finetuner
    from scorealign.run.rundir import RunDir

    with typed_errors():  # refusals while building (a non-differentiable reward) pass as is
        run = RunDir.open(resume) if resume else RunDir.create(out or default_out("finetune"),
                                                               cfg)
        ft = Finetuner(cfg, run)
    try:
        with typed_errors():
            if resume:
                ft.acc.print(f"resuming {run.path} from epoch {ft.resume()}")
            t0 = time.time()
            ft.fit()
    except RewardError as e:
        raise RewardError(f"{e}\nthe run stopped; its last checkpoint is intact (continue with "
                          f"--resume after fixing the reward)") from e
    if ft.acc.is_main_process:
        export_finetuner(ft)
        before_after(ft, run)
        run.log(ft.epoch, **{"time/total_s": time.time() - t0})
        write_report(run.path, title=title or f"finetune: {run.path.name}")
    return run.path


@torch.no_grad()
def before_after(ft: Any, run: Any, per_prompt: int = 8) -> dict[str, float]:
    """Grids of the base and the fine-tuned model from the same seeds; their mean rewards."""
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


__all__ = ["finetune", "before_after"]
