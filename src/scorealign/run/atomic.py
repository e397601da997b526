"""Atomic writes of a directory or a small file: a temporary sibling, then one rename.

A failed or killed write leaves the previous version (or none), never a half-written one; used for
``RUN/final/`` exports, ``RUN/run.json`` and ``RUN/<name>.json`` evaluations.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``dest``; on success it replaces ``dest`` with one rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
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


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through a temporary sibling and one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
    return path


__all__ = ["atomic_dir", "flatten_into", "write_json"]
