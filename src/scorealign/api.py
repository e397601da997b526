"""The public Python API: every command of the CLI as a function.

Training: ``scorealign.finetune(...)``, ``pretrain``, ``dpo``, ``control`` (``scorealign.api.control``;
``scorealign.control`` is the package) and ``build_pairs``. Any run: ``load``, ``sample``,
``evaluate``, ``export`` and ``report``, which look the run's kind up once in the run-kind
registry (:mod:`scorealign.commands.kinds`).

Each training function resolves its config like the CLI (a YAML file or a shipped config's name,
``set`` overrides, or ``resume``'s ``config.yaml``), calls the command of
:mod:`scorealign.commands` and returns the run directory. Bad input raises a
:class:`~scorealign.errors.ScorealignError` subclass whose message names the file, line or
field; no function here exits the interpreter.

``load`` opens a run directory of any command and returns a :class:`Loaded` whose ``model`` is
ready to use (a digits diffusion model with its task, a diffusers pipeline, a transformers causal
LM with its tokenizer, or a control policy) and whose ``sample(prompts, n)`` draws from it.

``finetune(config, reward=fn, out=DIR)`` runs RL fine-tuning with a Python reward callable
``fn(images [B,C,H,W] in [-1,1], prompts: list[str], meta: dict) -> Tensor [B]``. The callable
is recorded in the run's ``config.yaml`` by its import path (``package.module:function``), so
``scorealign finetune --resume DIR`` (or ``finetune(resume=DIR)``) finds it again; it must
therefore be importable (a module-level function, not a lambda or a ``__main__`` function).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from scorealign.commands.load import Loaded, load


def reward_path(fn: Callable) -> str:
    """``package.module:qualname`` of an importable reward callable (recorded in config.yaml).

    Raises:
        UsageError (a ValueError): for lambdas, nested functions and functions defined in
            ``__main__``.
    """
    import importlib

    from scorealign.errors import UsageError

    if isinstance(fn, str):
        return fn
    mod, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in name:
        raise UsageError(f"reward {fn!r}: a Python reward must be importable (a module-level "
                         f"function in a module on the path) so that --resume can find it")
    obj: Any = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn:
        raise UsageError(f"reward {fn!r}: {mod}:{name} does not import back to it")
    return f"{mod}:{name}"


def _path(p: str | Path | None) -> Path | None:
    return Path(p) if p is not None else None


def finetune(config: str | Path | None = None, *, reward: Callable | str | None = None,
             gold: Callable | str | None = None, out: str | Path | None = None,
             resume: str | Path | None = None, set: list[str] | None = None) -> Path:  # noqa: A002
    """RL fine-tuning from Python; returns the run directory (see the module docstring).

    Args:
        config: a YAML file or a shipped config's name (``digits_loop``); None: the defaults.
        reward, gold: a callable (recorded by import path) or a reward name / import path.
        out: the new run directory; resume: continue this run instead (its config.yaml).
        set: ``--set`` overrides, e.g. ``["train.epochs=2"]``.

    Raises:
        ScorealignError: a bad config (ConfigError, naming file:line: field), an unusable
            ``out`` or ``resume`` (UsageError, RunNotFoundError), a failing reward (RewardError).
    """
    from scorealign.commands import finetune as command
    from scorealign.commands.common import resolve_config
    from scorealign.rl.config import FinetuneConfig

    sets = list(set or [])
    for key, fn in (("reward.optimized", reward), ("reward.gold", gold)):
        if fn is not None:
            sets.append(f"{key}={reward_path(fn)}")
    cfg = resolve_config(FinetuneConfig, config, sets, resume)
    return command.finetune(cfg, _path(out) if resume is None else None, _path(resume))


def pretrain(config: str | Path | None = None, *, out: str | Path | None = None,
             resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
             ) -> Path:
    """Pretrain a diffusion model (DSM or consistency); returns the run directory, which holds
    ``final/``, ``eval.json`` and ``report.html``. Arguments as :func:`finetune`'s."""
    from scorealign.commands import pretrain as command
    from scorealign.commands.common import resolve_config
    from scorealign.train.pretrain import PretrainConfig

    cfg = resolve_config(PretrainConfig, config, set, resume)
    return command.pretrain(cfg, _path(out) if resume is None else None, _path(resume))


def dpo(config: str | Path | None = None, *, out: str | Path | None = None,
        resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
        ) -> Path:
    """Preference optimization of a causal LM (DPO, IPO, SimPO, ...) or, for a config with
    ``task: diffusion``, Diffusion-DPO; returns the run directory. A config or ``resume`` is
    required (UsageError otherwise); the other arguments as :func:`finetune`'s."""
    from scorealign.commands import dpo as command

    cfg = command.resolve_dpo_config(config, set, resume)
    return command.dpo(cfg, _path(out) if resume is None else None, _path(resume))["run_dir"]


def control(config: str | Path | None = None, *, out: str | Path | None = None,
            resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
            ) -> Path:
    """Continuous-time RL of a policy on a controlled SDE; returns the run directory.
    Arguments as :func:`finetune`'s."""
    from scorealign.commands import control as command
    from scorealign.commands.common import resolve_config
    from scorealign.control.train import ControlConfig

    cfg = resolve_config(ControlConfig, config, set, resume)
    return command.control(cfg, _path(out) if resume is None else None, _path(resume))


def build_pairs(config: str | Path | None = None, *, out: str | Path | None = None,
                set: list[str] | None = None, overwrite: bool = False  # noqa: A002
                ) -> Path:
    """Build a preference dataset (RPO or reward-labelled pairs) at ``out``; returns its
    directory. ``overwrite`` replaces a complete dataset there; the other arguments as
    :func:`finetune`'s."""
    from scorealign.commands import rpo as command
    from scorealign.commands.common import resolve_config
    from scorealign.preference.rpo.config import BuildPairsConfig

    cfg = resolve_config(BuildPairsConfig, config, set)
    return command.build_pairs(cfg, _path(out), overwrite=overwrite)[0]




def sample(run: str | Path, prompts: list[str] | str | None = None, *, n: int = 10,
           sampler: str | None = None, steps: int | None = None, eta: float | None = None,
           guidance: float | None = None, seed: int = 0, out: str | Path | None = None) -> Path:
    """``scorealign sample``: write samples of ``run``'s model (a grid per class, or for the
    given prompts; completions for dpo runs; paths for control runs); returns the file."""
    from scorealign.commands.sample import sample as command
    prompts = [prompts] if isinstance(prompts, str) else prompts
    return command(run, prompts, n, sampler, steps, eta, guidance, seed, out).path


def evaluate(run: str | Path, *, sampler: str | None = None, steps: int | None = None,
             eta: float | None = None, guidance: float | None = None, n: int | None = None,
             name: str = "eval") -> dict[str, Any]:
    """``scorealign eval``: the run's metrics (beside its base model's where it has one),
    also written to ``RUN/<name>.json``."""
    from scorealign.commands.evaluate import evaluate as command
    return command(run, sampler, steps, eta, guidance, n, name).metrics


def export(run: str | Path, to: str | Path | None = None,
           checkpoint: str | Path | None = None, overwrite: bool = False) -> Path:
    """``scorealign export``: the run's model in its ecosystem's format (default ``RUN/final``),
    from ``checkpoint`` (default the newest); returns the directory written. ``to`` may not be a
    file, nor a non-empty directory scorealign did not write unless ``overwrite``."""
    from scorealign.commands.export import export_run
    return export_run(run, to, checkpoint, overwrite)


def report(run: str | Path, title: str | None = None) -> Path:
    """``scorealign report``: (re)write ``RUN/report.html``; returns its path."""
    from scorealign.commands.report import report as command
    return command(run, title)


__all__ = ["Loaded", "load", "finetune", "pretrain", "dpo", "control", "build_pairs", "sample",
           "evaluate", "export", "report", "reward_path"]
