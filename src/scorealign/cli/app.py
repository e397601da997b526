"""The ``scorealign`` command: one typer app; each layer registers its own subcommands.

A layer exposes ``register(app)`` in its ``cli`` module; this file only lists those modules, so
adding a command touches the layer and one line here.
"""

from __future__ import annotations

import errno
import functools
import importlib
import os

import typer

# No hub downloads at run time: every model this project loads is local or built from a config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Align diffusion and language models with rewards and preferences.")

_COMMAND_MODULES = (
    "scorealign.cli.core",      # pretrain, sample, eval, report, export, demo, configs
    "scorealign.cli.dpo",       # dpo
    "scorealign.cli.control",   # control
    "scorealign.cli.finetune",  # finetune
    "scorealign.cli.rpo",       # rpo build-pairs
)

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _e:  # a layer not yet present in this checkout
        if not (_e.name and (_name == _e.name or _name.startswith(_e.name + "."))):
            raise
        continue
    _mod.register(app)

_WRITE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM,
                 errno.ENOTDIR, errno.EISDIR}


def _guard(fn):
    """Bad input and unwritable output end every command with exit 2 and one line: a checkpoint
    that cannot be read or written, a run directory that cannot be created, a full disk, a bad
    config (raised past a command's own checks). Other exceptions keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from scorealign.cli.common import fail
        from scorealign.config import ConfigError
        from scorealign.run.checkpoint import CheckpointError
        from scorealign.run.rundir import RunDirError
        try:
            return fn(*args, **kwargs)
        except (CheckpointError, RunDirError, ConfigError) as e:
            fail(" ".join(str(e).split()))
        except OSError as e:
            if e.errno not in _WRITE_ERRNOS:
                raise
            fail(f"{e.filename or 'output'}: {e.strerror}")

    return wrapper


def _guard_all(typer_app: typer.Typer) -> None:
    for cmd in typer_app.registered_commands:
        cmd.callback = _guard(cmd.callback)
    for group in typer_app.registered_groups:
        _guard_all(group.typer_instance)


_guard_all(app)


def main() -> None:
    """Console entry point. Like ``python -m scorealign.cli``, the working directory is on the
    import path, so a run's recorded Python reward (``my_rewards:fn``) resolves on --resume."""
    import sys
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app()


if __name__ == "__main__":
    main()
