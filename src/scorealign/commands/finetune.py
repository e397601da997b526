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

from scorealign.commands.common import has_checkpoint, open_run, run_guard, typed_errors


def finetune(cfg: Any, out: str | Path | None = None, resume: str | Path | None = None,
             title: str | None = None, again: str | None = None) -> Path:
    """Fine-tune into a run directory (new at ``out``, default ``runs/finetune-<time>``, or
    ``resume``), export ``RUN/final``, write the before/after grids and ``report.html``;
    returns the run directory.

    A failure before the first checkpoint of a new run removes the directory it created;
    Ctrl-C raises :class:`~scorealign.commands.common.RunInterrupted` saying how to continue
    (``again``: the command to show, default ``scorealign finetune --resume RUN``).

    Raises:
        RewardError: the reward failed (non-finite, wrong shape); the message says the last
            checkpoint is intact when there is one.
        UsageError: ``out`` is a file, another command's directory or a run with checkpoints;
            ConfigError: a value, key or file of the config that the trainer cannot use;
            CheckpointError, RunDirError.
    """
    from scorealign.commands.kind_finetune import export_finetuner, record_base
    from scorealign.report.html import write_report
    from scorealign.rewards.base import RewardError
    from scorealign.rl.trainer import Finetuner

    with typed_errors():
        run, footprint = open_run(cfg, out, resume, "finetune")
    try:
        with run_guard("finetune", run.path, footprint, again), typed_errors():
            try:
                ft = Finetuner(cfg, run)
            except RewardError as e:  # refused while building (a non-differentiable reward)
                raise _Refused(e) from None
            if resume:
                ft.acc.print(f"resuming {run.path} from epoch {ft.resume()}")
            elif ft.acc.is_main_process:  # the base travels with the run (run.json, RUN/base)
                record_base(run, cfg)
            ft.acc.print(opening_line(ft.cfg))
            t0 = time.time()
            ft.fit()
    except _Refused as e:
        raise e.error from None
    except RewardError as e:
        if not has_checkpoint(run.path):
            raise RewardError(f"{e}\nthe run stopped before its first checkpoint; nothing was "
                              f"kept") from e
        raise RewardError(f"{e}\nthe run stopped; its last checkpoint is intact (continue with "
                          f"--resume {run.path} after fixing the reward)") from e
    if ft.acc.is_main_process:
        export_finetuner(ft)
        before_after(ft, run)
        if ft.setup.problem is not None:  # testbed: the yardsticks against the exact optimum
            from scorealign.commands.kind_finetune import testbed_evaluate
            scores = testbed_evaluate(ft.cfg, ft.setup, ft.acc.unwrap_model(ft.model),
                                      device=ft.acc.device, plot=run.plots / "testbed.png")
            (run.path / "eval_testbed.json").write_text(json.dumps(scores, indent=2))
        run.log(ft.epoch, **{"time/total_s": time.time() - t0})
        write_report(run.path, title=title or f"finetune: {run.path.name}")
        print_closing(run.path)
    return run.path


def _spec_name(spec: Any) -> str:
    """A reward spec in words: its registered name or import path."""
    if isinstance(spec, dict):
        return str(spec.get("name") or spec.get("path") or spec)
    return getattr(spec, "__name__", None) or str(spec)


def opening_line(cfg: Any) -> str:
    """The line before training: base model, method, optimized and gold reward, budget."""
    a, t, p = cfg.algo, cfg.train, cfg.prompts
    kw = ", ".join(f"{'β' if k == 'beta' else k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in a.loss_kwargs.items())
    adv = a.advantage_name()
    method = a.loss + (f" (advantage {adv}{', ' + kw if kw else ''})" if adv else
                       f" ({kw})" if kw else "")
    gold = f"gold reward (held out) {_spec_name(cfg.reward.gold)}" if cfg.reward.gold else \
        "no gold reward"
    rows = p.per_epoch * p.k
    steps = t.epochs * t.inner_epochs * max(rows // t.minibatch_size, 1)
    def n(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 's'}"

    return (f"fine-tuning {cfg.base.path} ({cfg.base.type}) with {method} toward reward "
            f"{_spec_name(cfg.reward.optimized)}; {gold}; budget {n(t.epochs, 'epoch')} × "
            f"{n(p.per_epoch, 'prompt')} × k={p.k} = {n(t.epochs * rows, 'sample')}, "
            f"{n(steps, 'optimizer step')}")


def print_closing(path: Path, file: Any = None) -> None:
    """The before → after table (reward, gold, KL, time, each with its source) and the paths
    of ``final/`` and ``report.html``, on the terminal (rich; ``file``: another stream)."""
    from rich.console import Console
    from rich.table import Table

    from scorealign.report.gold import epoch_alarms, eval_alarm
    from scorealign.report.numbers import before_after_numbers
    from scorealign.run.rundir import RunDir
    rows = RunDir.open(path).read_metrics()
    ba_file = Path(path) / "eval_before_after.json"
    ba = json.loads(ba_file.read_text()) if ba_file.is_file() else {}
    table = Table(title="before → after", title_justify="left")
    for col in ("", "before", "after", "source"):
        table.add_column(col, justify="left" if col in ("", "source") else "right")
    for n in before_after_numbers(rows, ba):
        table.add_row(n.name + (f" ({n.unit})" if n.unit not in ("", "time") else ""),
                      _cell(n, n.before), _cell(n, n.after), n.source)
    console = Console(file=file, soft_wrap=False)
    console.print(table)
    alarm, alarms = eval_alarm(ba), epoch_alarms(rows)
    if alarm is not None or alarms:
        where = alarm.where if alarm is not None else ", ".join(a.where for a in alarms)
        console.print(f"gold-reward alarm raised ({where}); see the report's summary",
                      soft_wrap=True)
    console.print(f"model:  {Path(path) / 'final'}", soft_wrap=True)
    console.print(f"report: {Path(path) / 'report.html'}", soft_wrap=True)


def _cell(n: Any, v: float | None) -> str:
    from scorealign.report.numbers import fmt_value
    if v is None:
        return ""
    if n.unit == "time":
        return f"{int(round(v)) // 60}m{int(round(v)) % 60:02d}s"
    return fmt_value(v)


class _Refused(Exception):
    """A reward refused while the trainer is built: passed on as is, with no resume hint."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


@torch.no_grad()
def before_after(ft: Any, run: Any, per_prompt: int | None = None) -> dict[str, float]:
    """Grids of the base and the fine-tuned model from the same seeds (``per_prompt``: 8, or the
    setup's ``figure_rows``); their mean rewards."""
    from scorealign.report.figures import save_grid_rows
    per_prompt = per_prompt or ft.setup.figure_rows or 8
    prompts = ft.setup.prompts[:10]
    seeds = torch.arange(len(prompts) * per_prompt) + 10_000
    scores = {}
    for name, pol in (("before", ft.ref_policy), ("after", ft.policy)):
        traj = pol.rollout(prompts, per_prompt, seeds=seeds, device=ft.acc.device)
        images = ft.setup.decode(traj.x0).cpu()
        ft.setup.save_samples(images, run.samples / f"{name}.png", per_prompt)
        if ft.setup.save_figure is None:  # an image grid: one row per prompt, labelled
            save_grid_rows(run.samples / f"{name}.png", prompts)
        out = ft.rewards(images, traj.prompts, {"epoch": ft.epoch})
        scores.update({f"{name}/{k}": v for k, v in out.metrics().items()})
    scores["samples"] = len(seeds)  # per model (the report's label of these numbers)
    (run.path / "eval_before_after.json").write_text(json.dumps(scores, indent=2))
    return scores


__all__ = ["finetune", "before_after", "opening_line", "print_closing"]
