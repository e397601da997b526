"""``dpo``: offline preference optimization of a causal LM (DPO, IPO, SimPO, ORPO, KTO, ...) or,
for a config with ``task: diffusion``, Diffusion-DPO of a diffusion model; into a run directory,
then ``RUN/final`` and ``report.html``.

The trainers (:func:`scorealign.preference.trainer.train`,
:func:`scorealign.preference.diffusion_dpo.train`) return a summary holding the trained model and
never export; these commands export it when the run reached its last step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scorealign.commands.common import Say, open_run, resolve_config, run_guard, silent
from scorealign.errors import ScorealignError, UsageError

LM_CONFIGS = "configs/dpo/"
DIFFUSION_CONFIGS = "configs/dpo/diffusion_*.yaml"


def config_task(config: str | Path | None, resume: str | Path | None) -> str | None:
    """The top-level ``task`` key of the config (or of ``RESUME/config.yaml``), if any.

    Only peeks: an unreadable file returns None, so that strict parsing reports the error.
    """
    import yaml

    path = Path(resume) / "config.yaml" if resume is not None else config
    if path is not None and not Path(path).is_file() and resume is None:
        from scorealign.commands.common import find_config
        from scorealign.config import ConfigError
        try:  # a shipped config's name (``--config testbed_dpo``)
            path = find_config(path, "dpo")
        except ConfigError:
            return None
    if path is None or not Path(path).is_file():
        return None
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError:
        return None
    task = data.get("task") if isinstance(data, dict) else None
    return task if isinstance(task, str) else None


def require_config(config: Any, resume: Any, where: str) -> None:
    """Raise UsageError unless a config or a run to resume is given (``where``: the shipped
    configs to point to)."""
    if config is None and resume is None:
        raise UsageError(f"give --config FILE (see {where}) or --resume RUN_DIR")


def schema_of(config: str | Path | None, resume: str | Path | None) -> tuple[type, str]:
    """(config schema, shipped configs to point to) of a ``dpo`` run: Diffusion-DPO for a config
    with ``task: diffusion``, else the LM one."""
    if config_task(config, resume) == "diffusion":
        from scorealign.preference.rpo.config import DiffusionDPOConfig
        return DiffusionDPOConfig, DIFFUSION_CONFIGS
    from scorealign.preference.config import DPOConfig
    return DPOConfig, LM_CONFIGS


def _is_main() -> bool:
    from accelerate import PartialState
    return PartialState().is_main_process


def lm_dpo(cfg: Any, out: str | Path | None = None, resume: str | Path | None = None, *,
           say: Say | None = None) -> dict[str, Any]:
    """LM preference optimization into ``out`` (default ``runs/dpo-<time>``) or ``resume``;
    on the run's last step, ``RUN/final`` (transformers or peft directory) and report.html.

    Returns the trainer's summary (last metrics, evals, ``model``, ``tokenizer``) with
    ``run_dir``. ``say`` receives the run directory's line before training.

    Raises:
        DataError: a bad pair-data line (file:line); UsageError, RunNotFoundError (see
        :func:`~scorealign.commands.common.open_run`).
    """
    from scorealign.commands.formats import export_lm
    from scorealign.preference.trainer import train
    from scorealign.report.html import write_report

    run, footprint = open_run(cfg, out, resume, "dpo")
    (say or silent)(f"run directory: {run.path}")
    with run_guard("dpo", run.path, footprint):
        summary = train(cfg, run, resume=resume is not None)
    if summary["end_step"] == cfg.train.steps and _is_main():
        export_lm(summary["model"], summary["tokenizer"], run.path / "final")
        write_report(run.path, title=f"dpo: {run.path.name}")
    summary["run_dir"] = run.path
    return summary


def require_pairs(path: str | Path) -> None:
    """Raise DatasetError, before any run directory exists, when the pair dataset ``path``
    (``data.path``) is missing; the message names the command that writes it."""
    from scorealign.commands.rpo import default_pairs_out
    from scorealign.preference.rpo.dataset import DatasetError

    if Path(path).is_dir():
        return
    shipped = {default_pairs_out(m): f"configs/rpo/{c}.yaml"
               for m, c in (("rpo", "digits"), ("reward", "digits_reward"))}
    config = shipped.get(Path(path), "configs/rpo/digits.yaml (RPO pairs) or "
                         "configs/rpo/digits_reward.yaml (reward-labelled pairs)")
    raise DatasetError(f"data.path {path}: no such pair dataset directory; build it with "
                       f"`scorealign rpo build-pairs --config {config}"
                       f"{'' if Path(path) in shipped else f' --out {path}'}`")


def diffusion_dpo(cfg: Any, out: str | Path | None = None, resume: str | Path | None = None, *,
                  say: Say | None = None) -> dict[str, Any]:
    """Diffusion-DPO into ``out`` (default ``runs/dpo-<time>``) or ``resume``; on the run's last
    step ``RUN/final`` (the digits pair, LoRA merged); then report.html.

    Returns the trainer's summary (last metrics, evals, ``policy``) with ``run_dir`` and
    ``report``. ``say`` receives the run directory's line before training.

    Raises:
        DatasetError, CheckpointError, ConfigError (a missing file, or a value the trainer
        rejects: the message names the run's config.yaml).
    """
    if cfg.base.type == "testbed":
        return testbed_dpo(cfg, out, resume, say=say)
    from scorealign.config import ConfigError
    from scorealign.commands.formats import export_digits
    from scorealign.preference.diffusion_dpo import train
    from scorealign.preference.rpo.dataset import DatasetError
    from scorealign.report.html import write_report

    require_pairs(cfg.data.path)
    run, footprint = open_run(cfg, out, resume, "dpo")
    (say or silent)(f"run directory: {run.path}")
    try:
        with run_guard("dpo", run.path, footprint):
            summary = train(cfg, run, resume=resume is not None)
    except (DatasetError, ConfigError):
        raise
    except FileNotFoundError as e:  # a file the config names
        if isinstance(e, ScorealignError):
            raise
        raise ConfigError(str(e)) from e
    except ValueError as e:  # a value of the config the trainer rejects
        raise ConfigError(f"{run.config_file}: {e}") from e
    if summary["end_step"] == cfg.train.steps and summary["end_step"] > summary["start_step"]:
        export_digits(summary["policy"], run.path / "final")
    summary["report"] = write_report(run.path, title=f"diffusion-dpo: {run.path.name}")
    summary["run_dir"] = run.path
    return summary


def testbed_dpo(cfg: Any, out: str | Path | None = None, resume: str | Path | None = None, *,
                say: Say | None = None) -> dict[str, Any]:
    """Diffusion-DPO on a testbed problem (``base.type: testbed``,
    :mod:`scorealign.commands.testbed_dpo_run`) into ``out`` or ``resume``; on the run's last step
    ``RUN/final`` (the control network, as a finetune testbed run exports it), the yardsticks
    against the exact optimum (``eval_testbed.json``: E[r], path KL, reward gap to the exact
    frontier, energy distance to p*_β beside its sampler floor, score error; with
    ``eval.enabled``) and ``plots/testbed.png`` (samples over p*_β's contours, the run on the
    frontier); then report.html.

    Returns the trainer's summary with ``eval_end`` (the yardsticks), ``run_dir`` and
    ``report``.
    """
    import json
    import os

    from scorealign.commands.kind_finetune import export_testbed, testbed_evaluate
    from scorealign.commands.testbed_dpo_run import train
    from scorealign.report.html import write_report

    run, footprint = open_run(cfg, out, resume, "dpo")
    (say or silent)(f"run directory: {run.path}")
    with run_guard("dpo", run.path, footprint):
        summary = train(cfg, run, resume=resume is not None)
    ft_cfg, setup = summary["finetune_config"], summary["setup"]
    if summary["end_step"] == cfg.train.steps:
        if summary["end_step"] > summary["start_step"]:
            export_testbed(setup, ft_cfg, run.path / "final")
        if cfg.eval.enabled:
            scores = testbed_evaluate(ft_cfg, setup, summary["policy"], n=cfg.eval.num_samples,
                                      seed=cfg.eval.seed, plot=run.plots / "testbed.png")
            dest = run.path / "eval_testbed.json"
            tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps({**scores, "step": summary["end_step"]}, indent=2))
            os.replace(tmp, dest)
            summary["eval_end"] = scores
    summary["report"] = write_report(run.path, title=f"diffusion-dpo (testbed): {run.path.name}")
    summary["run_dir"] = run.path
    return summary


def dpo(cfg: Any, out: str | Path | None = None, resume: str | Path | None = None, *,
        say: Say | None = None) -> dict[str, Any]:
    """LM DPO or Diffusion-DPO, by the type of ``cfg`` (see :func:`schema_of`)."""
    from scorealign.preference.rpo.config import DiffusionDPOConfig
    run = diffusion_dpo if isinstance(cfg, DiffusionDPOConfig) else lm_dpo
    return run(cfg, out, resume, say=say)


def resolve_dpo_config(config: str | Path | None = None, sets: list[str] | None = None,
                       resume: str | Path | None = None) -> Any:
    """The config of a ``dpo`` run (LM or Diffusion-DPO, see :func:`schema_of`); raises
    UsageError without ``config`` or ``resume``, ConfigError on a bad config."""
    schema, where = schema_of(config, resume)
    require_config(config, resume, where)
    return resolve_config(schema, config, sets, resume)


__all__ = ["config_task", "require_config", "require_pairs", "schema_of", "lm_dpo",
           "diffusion_dpo", "testbed_dpo", "dpo", "resolve_dpo_config"]
