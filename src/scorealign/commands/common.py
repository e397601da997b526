"""What every training command shares, without typer: find and resolve its config, open its run
directory, and turn the built-in errors a run raises for bad input into typed ones.

``resolve_config`` builds a command's config from a YAML file or a shipped config's name plus
``--set`` overrides, or from ``RESUME/config.yaml``; ``open_run`` creates (or reopens) the run
directory. Both raise :class:`~scorealign.errors.ScorealignError` subclasses whose messages name
the file, line and field; ``scorealign.cli`` prints them as one line and exits 2, the Python API
lets them propagate.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from scorealign.config import ConfigError, load_config
from scorealign.errors import RunNotFoundError, ScorealignError, UsageError

#: where a command sends the lines it has to show (the CLI passes ``typer.echo``)
Say = Callable[[str], Any]


def silent(_: str) -> None:
    """The default :data:`Say`: show nothing (the Python API)."""


def configs_root() -> Path:
    """The shipped configs: ``scorealign/configs`` in an installed wheel (the repository's
    ``configs/``, mapped in at build time by setup.py), else ``configs/`` of this checkout."""
    pkg = Path(__file__).resolve().parents[1]
    installed = pkg / "configs"
    return installed if installed.is_dir() else pkg.parents[1] / "configs"


def shipped_configs() -> dict[str, Path]:
    """``group/name`` → path of every shipped YAML config (``finetune/digits_loop`` ...)."""
    root = configs_root()
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))}


def find_config(config: str | Path, group: str | None = None) -> Path:
    """A config path: an existing file as given, else a shipped config by name.

    ``digits_loop``, ``finetune/digits_loop`` and ``configs/finetune/digits_loop.yaml`` (from a
    directory without the repository's configs/) all resolve; ``group`` (the command) decides
    between equal names in several groups. Raises ConfigError listing the choices otherwise.
    """
    p = Path(config)
    if p.is_file():
        return p
    name = str(p.with_suffix("")) if p.suffix in (".yaml", ".yml") else str(p)
    name = name[len("configs/"):] if name.startswith("configs/") else name
    table = shipped_configs()
    if name in table:
        return table[name]
    hits = [k for k in table if k.rsplit("/", 1)[-1] == name]
    if group is not None and len(hits) > 1:
        hits = [k for k in hits if k.split("/")[0] == group] or hits
    if len(hits) == 1:
        return table[hits[0]]
    if p.suffix in (".yaml", ".yml") or not hits:
        raise ConfigError(f"{config}: config file not found and no shipped config of that name "
                          f"(`scorealign configs` lists them)")
    raise ConfigError(f"{config}: ambiguous config name; one of {sorted(hits)}")


#: the shipped configs' group (sub-directory of configs/) of each command's schema
GROUPS = {"PretrainConfig": "pretrain", "FinetuneConfig": "finetune", "DPOConfig": "dpo",
          "DiffusionDPOConfig": "dpo", "ControlConfig": "control", "BuildPairsConfig": "rpo"}


def resolve_config(schema: type, config: str | Path | None = None,
                   sets: list[str] | None = None, resume: str | Path | None = None,
                   group: str | None = None) -> Any:
    """The run's config as ``schema``: from ``RESUME/config.yaml`` when resuming, else from
    ``config`` (a file or a shipped config's name; None: the defaults) with ``sets`` applied.

    Raises:
        RunNotFoundError: ``resume`` has no config.yaml.
        ConfigError: a bad config (the message names file:line: field).
    """
    if resume is not None:
        cfg_file = Path(resume) / "config.yaml"
        if not cfg_file.is_file():
            raise RunNotFoundError(f"{cfg_file}: not a run directory (no config.yaml)")
        return load_config(cfg_file, schema, sets or [])
    group = group or GROUPS.get(schema.__name__)
    path = find_config(config, group) if config is not None else None
    return load_config(path, schema, sets or [])


def default_out(command: str) -> Path:
    """``runs/<command>-YYYYmmdd-HHMMSS``."""
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run; the message says how to continue (``scorealign.cli`` prints
    it as one line, exit 130). A KeyboardInterrupt, so ``except KeyboardInterrupt`` still works."""


#: the run kinds (``commands/kinds.py``) whose run directories a command's ``--out`` may reuse
OWN_KINDS = {"pretrain": ("pretrain",), "finetune": ("finetune",), "demo": ("finetune",),
             "dpo": ("dpo", "diffusion_dpo"), "control": ("control",)}


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint to ``--resume`` from (a damaged one counts: resume
    says what is wrong with it)."""
    from scorealign.run.checkpoint import CheckpointError, latest_checkpoint
    try:
        return latest_checkpoint(Path(run_dir) / "checkpoints", fallback=False) is not None
    except CheckpointError:
        return True


def run_kind_at(path: Path) -> str | None:
    """The kind of the run directory at ``path``; None when it is none (no config.yaml, or a
    config of no command)."""
    from scorealign.commands.kinds import kind_of
    try:
        return kind_of(path)
    except ScorealignError:
        return None


def check_out(out: str | Path, command: str) -> None:
    """Raise UsageError unless ``--out`` is new, an empty directory, or a run directory of
    ``command``'s kind (which ``RunDir.create`` then refuses if it has checkpoints): the program
    never writes into, or deletes, a directory or file it did not create."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: exists and is not a directory; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    kind = run_kind_at(out)
    if kind is None and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        return  # a run whose config is gone: RunDir.create refuses it, pointing to --resume
    if kind not in OWN_KINDS.get(command, (command,)):
        raise UsageError(f"--out {out}: exists, is not empty and is not a {command} run "
                         f"directory; choose another --out (nothing was written)")


class Footprint:
    """What a command creates at a new run's path, so that a failed start removes exactly that:
    the directory (and its parents) when they did not exist, else only the new entries."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.top = missing[-1] if missing else None  # the highest directory this run creates
        self.before = None if self.top else {p.name for p in self.path.iterdir()}

    def remove(self) -> None:
        """Remove what was created since this footprint was taken; nothing else."""
        import shutil
        if self.top is None:
            for p in self.path.iterdir():
                if p.name not in self.before:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            return
        shutil.rmtree(self.path, ignore_errors=True)
        for p in self.path.parents:  # the parents this run made, while they stay empty
            if not p.is_relative_to(self.top) or not p.is_dir() or any(p.iterdir()):
                break
            p.rmdir()


@contextmanager
def run_guard(command: str, path: str | Path, footprint: Footprint | None = None,
              again: str | None = None) -> Iterator[None]:
    """Keep a run directory honest when its command stops early.

    A failure or Ctrl-C before the first checkpoint of a new run removes what ``footprint``
    recorded (a failed start leaves no directory); Ctrl-C becomes :class:`RunInterrupted` whose
    message says how to continue (``again``, default ``scorealign COMMAND --resume PATH``) when a
    checkpoint exists. Checkpoints are never removed.
    """
    path = Path(path)
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        if has_checkpoint(path):
            raise RunInterrupted(f"interrupted; continue with: "
                                 f"{again or f'scorealign {command} --resume {path}'}") from None
        if footprint is not None:
            footprint.remove()
            raise RunInterrupted(f"interrupted before the first checkpoint; {path} was not kept"
                                 ) from None
        raise RunInterrupted("interrupted before a checkpoint was written") from None
    except BaseException:
        if footprint is not None and not has_checkpoint(path):
            footprint.remove()
        raise


def open_run(cfg: Any, out: str | Path | None, resume: str | Path | None, command: str
             ) -> tuple[Any, Footprint | None]:
    """The run directory and, for a new one, its :class:`Footprint`: ``resume`` reopened with
    ``cfg`` recorded in its config.yaml (``--set`` overrides), or a new one at ``out`` (default
    ``runs/<command>-<time>``) holding ``cfg`` and its kind.

    Raises:
        UsageError: ``out`` is a file, a directory not of this command, or a run with
            checkpoints (the message says --resume).
        RunNotFoundError: ``resume`` is not a run directory.
        RunDirError: ``out`` cannot be created.
    """
    from scorealign.run.rundir import RunDir
    try:
        if resume:
            run = RunDir.open(resume)
            run.record_config(cfg)
            return run, None
        out = Path(out or default_out(command))
        check_out(out, command)
        footprint = Footprint(out)
        kind = OWN_KINDS.get(command, (command,))[0] if isinstance(command, str) else None
        if type(cfg).__name__ == "DiffusionDPOConfig":
            kind = "diffusion_dpo"
        try:
            return RunDir.create(out, cfg, kind=kind), footprint
        except BaseException:
            footprint.remove()
            raise
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    except FileNotFoundError as e:
        if isinstance(e, ScorealignError):
            raise
        raise RunNotFoundError(str(e)) from None


@contextmanager
def typed_errors(prefix: str = "", values: bool = True,
                 missing: type[ScorealignError] = ConfigError) -> Iterator[None]:
    """Re-raise the built-in errors a run raises for bad input as typed ones, message kept:
    an existing target (FileExistsError) as :class:`UsageError`; a missing file as ``missing``
    (ConfigError: a file the config names; RunNotFoundError: a run directory); with ``values``,
    a bad value or key met while building the run from its config (ValueError, KeyError) as
    :class:`ConfigError`, ``prefix`` (e.g. ``RUN/config.yaml: ``) before the message. Typed
    errors pass unchanged, except typed ValueErrors when a ``prefix`` is given."""
    try:
        yield
    except FileExistsError as e:
        if isinstance(e, ScorealignError):
            raise
        raise UsageError(str(e)) from e
    except FileNotFoundError as e:
        if isinstance(e, ScorealignError):
            raise
        raise missing(str(e)) from e
    except (ValueError, KeyError) as e:
        if not values or (isinstance(e, ScorealignError) and not (prefix and
                                                                 isinstance(e, ValueError))):
            raise
        raise ConfigError(f"{prefix}{e}") from e


__all__ = ["Say", "silent", "configs_root", "shipped_configs", "find_config", "GROUPS",
           "resolve_config", "default_out", "RunInterrupted", "OWN_KINDS", "has_checkpoint",
           "run_kind_at", "check_out", "Footprint", "run_guard", "open_run", "typed_errors"]
