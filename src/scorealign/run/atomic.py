"""Atomic writes of a directory or a small file: a temporary sibling, then one rename.

A failed or killed write leaves the previous version (or none), never a half-written one; used for
``RUN/final/`` exports, ``RUN/run.json``, ``RUN/config.yaml`` and ``RUN/<name>.json`` evaluations.

Nothing a user made is replaced: :func:`atomic_dir` replaces only a directory this program wrote
(it carries the :data:`MARKER` file, or is ``RUN/final`` of a run directory) or an empty one; an
existing file or any other directory is a :class:`FileExistsError` naming the path.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

#: the file that marks a directory written by :func:`atomic_dir` (an export of scorealign)
MARKER = ".scorealign-export"


def is_own_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory this program may replace: empty, marked with
    :data:`MARKER`, or ``final/`` of a run directory (exports of older releases had no marker)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / MARKER).is_file() or not any(path.iterdir()):
        return True
    return path.name == "final" and (path.parent / "config.yaml").is_file()


def check_replaceable(dest: str | Path) -> None:
    """Raise FileExistsError unless ``dest`` is absent or a directory :func:`is_own_dir` allows
    replacing; the message names the path and what to do."""
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise FileExistsError(f"{dest}: exists and is not a directory; choose another target")
    if dest.exists() and not is_own_dir(dest):
        raise FileExistsError(f"{dest}: exists, is not empty and was not written by scorealign; "
                              f"choose another target or pass --overwrite")


def claim_dir(path: str | Path) -> Path:
    """Mark an existing directory as replaceable by :func:`atomic_dir` (the user's
    ``--overwrite``); returns the marker file, which the caller removes if the write fails."""
    marker = Path(path) / MARKER
    marker.write_text("")
    return marker


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``dest``; on success it replaces ``dest`` with one rename.

    Raises:
        FileExistsError: ``dest`` is a file, or a non-empty directory not written by this program
            (checked before and after the write; the user's files stay untouched).
    """
    dest = Path(dest)
    check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        (tmp / MARKER).write_text("")
        check_replaceable(dest)  # something may have appeared there meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = dest.with_name(f".{dest.name}.old{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def flatten_into(dest: Path, sub: str = "m") -> None:
    """Move the files of ``dest/sub`` up into ``dest`` and remove ``sub`` (for writers that insist
    on creating their own directory, such as ``nets.save_pretrained``)."""
    for f in (dest / sub).iterdir():
        os.replace(f, dest / f.name)
    (dest / sub).rmdir()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through a temporary sibling and one rename."""
    return write_text(path, json.dumps(obj, indent=2))


__all__ = ["MARKER", "is_own_dir", "check_replaceable", "claim_dir", "atomic_dir",
           "flatten_into", "write_text", "write_json"]
