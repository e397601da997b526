"""The ``scorealign`` command: one typer app, one module per command in ``scorealign.cli``.

Each module declares its typer options, calls the typer-free command function of
``scorealign.commands`` and exposes ``register(app)``; this file lists the modules and turns the
typed errors the commands raise into one line and exit status 2 (:func:`_guard`).
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

def _print_version(value: bool) -> None:
    if value:
        from scorealign import __version__
        typer.echo(f"scorealign {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version,
                                          is_eager=True, help="Print the version and exit.")
             ) -> None:
    # the app's own options; the help text is the Typer's
    pass


_COMMAND_MODULES = (
    "scorealign.cli.pretrain",  # pretrain
    "scorealign.cli.finetune",  # finetune
    "scorealign.cli.dpo",       # dpo (LM DPO and Diffusion-DPO)
    "scorealign.cli.rpo",       # rpo build-pairs
    "scorealign.cli.control",   # control
    "scorealign.cli.demo",      # demo
    "scorealign.cli.sample",    # sample
    "scorealign.cli.evaluate",  # eval
    "scorealign.cli.export",    # export
    "scorealign.cli.report",    # report
    "scorealign.cli.configs",   # configs
)
for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)

_WRITE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM,
                 errno.ENOTDIR, errno.EISDIR}


def _guard(fn):
    """The one place where errors become exit codes: a typed error of scorealign (bad config,
    data line, checkpoint, run directory, reward, export target; ``scorealign.errors``) and an
    unwritable output (full disk, no permission) end the command with exit 2 and one line;
    Ctrl-C ends it with exit 130 and one line saying how to continue (``RunInterrupted``).
    Other exceptions keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from scorealign.cli.common import fail
        from scorealign.errors import ScorealignError
        try:
            return fn(*args, **kwargs)
        except ScorealignError as e:
            fail(e)
        except KeyboardInterrupt as e:  # Ctrl-C is no error: say how to continue, exit 130
            typer.secho(" ".join((str(e) or "interrupted").split()), fg="yellow", err=True)
            raise typer.Exit(130) from None
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
