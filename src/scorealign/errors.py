"""The typed errors of scorealign (ground floor: imports nothing of the project).

Every error raised for bad input or an unusable run derives from :class:`ScorealignError`: a bad
config (``ConfigError``), data line, checkpoint, run directory, reward output or export target.
The Python API lets them propagate; only ``scorealign.cli`` turns them into one line on stderr and
exit status 2. Each keeps its historical built-in base as well (``ValueError``, ``OSError``,
``RuntimeError``), so ``except ValueError`` in user code still catches what it caught before.
"""

from __future__ import annotations


class ScorealignError(Exception):
    """Bad input or an unusable run; the message names the file, line or field."""


class UsageError(ScorealignError, ValueError):
    """A command or API function called with arguments it cannot use (the message names the
    argument, e.g. ``--out runs/x: is a file``)."""


class RunNotFoundError(ScorealignError, FileNotFoundError):
    """A path that is not a run directory (no ``config.yaml``) or a run with no model to load."""


class ExportError(ScorealignError, RuntimeError):
    """A run that cannot be exported, or whose kind cannot be told; the message names the run or
    file."""


__all__ = ["ScorealignError", "UsageError", "RunNotFoundError", "ExportError"]
