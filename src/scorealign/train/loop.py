"""Pieces shared by the pretraining loops (DSM in train/pretrain.py, CD/CT in train/consistency.py).

Each loop differs only in its loss and in the extra state it checkpoints (the consistency target
θ⁻); resuming, the optimizer step, logging/checkpointing at the end of a step and the export of the
EMA weights are the same and live here.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from accelerate import Accelerator

from scorealign.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from scorealign.train.rundir import RunDir


def resume_states(run: RunDir, resume: bool, acc: Accelerator) -> tuple[dict | None, int]:
    """The newest checkpoint's states and its step, or ``(None, 0)`` for a fresh run.

    Metrics logged after that step are dropped so the resumed run appends exactly once.
    """
    if not resume or (ckpt := latest_checkpoint(run.checkpoints)) is None:
        return None, 0
    states, extra = load_checkpoint(ckpt)
    start = int(extra["step"])
    run.truncate_metrics(start)
    acc.print(f"resuming {run.path} from step {start}")
    return states, start


def optimizer_step(acc: Accelerator, model: torch.nn.Module, opt: torch.optim.Optimizer,
                   loss: torch.Tensor, grad_clip: float) -> float | None:
    """Backward, optional gradient clipping and one optimizer step; returns the grad norm."""
    opt.zero_grad(set_to_none=True)
    acc.backward(loss)
    gnorm = acc.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    opt.step()
    return None if gnorm is None else float(gnorm)


def end_of_step(acc: Accelerator, run: RunDir, tc: Any, done: int, metrics: dict[str, float],
                gnorm: float | None, states: Callable[[], dict[str, Any]]) -> None:
    """Log ``metrics`` every ``tc.log_every`` steps and checkpoint ``states()`` (built only when
    written) every ``tc.ckpt_every`` steps and at the last step, on the main process."""
    if not acc.is_main_process:
        return
    if done % tc.log_every == 0 or done == tc.steps:
        run.log(done, **metrics, **({"opt/grad_norm": gnorm} if gnorm is not None else {}))
    if done % tc.ckpt_every == 0 or done == tc.steps:
        save_checkpoint(run.checkpoints, done, states(), extra={"step": done},
                        keep=tc.keep_checkpoints)


def export_final(acc: Accelerator, run: RunDir, task: Any, ema: dict) -> Any:
    """Wait for every process, then export the EMA weights to ``RUN/final`` (main process)."""
    acc.wait_for_everyone()
    final = run.path / "final"
    if acc.is_main_process:
        task.export(ema, final)
    return final
