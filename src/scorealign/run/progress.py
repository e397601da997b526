"""A rich progress bar for long loops (quiet when not on a terminal-like stream or disabled)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, TypeVar

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


T = TypeVar("T")


class _Bar:
    def __init__(self, progress: Progress | None, task_id: int | None):
        self._p, self._id = progress, task_id

    def advance(self, n: int = 1, **fields: float) -> None:
        """Advance by ``n`` and show ``fields`` (e.g. loss=0.12) beside the bar."""
        if self._p is not None:
            info = "  ".join(f"{k} {v:.4g}" for k, v in fields.items())
            self._p.update(self._id, advance=n, info=info)


@contextlib.contextmanager
def progress_bar(label: str, total: int, start: int = 0, disable: bool = False) -> Iterator[_Bar]:
    """Context manager yielding a bar with ``advance(n, **fields)``."""
    if disable:
        yield _Bar(None, None)
        return
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                        transient=False, refresh_per_second=2)
    with progress:
        task_id = progress.add_task(label, total=total, completed=start, info="")
        yield _Bar(progress, task_id)


def track(iterable: Iterable[T], label: str, total: int | None = None, start: int = 0,
          disable: bool = False) -> Iterator[T]:
    """Iterate with a progress bar (the one bar of every command: rich, as above)."""
    total = total if total is not None else len(iterable)  # type: ignore[arg-type]
    with progress_bar(label, total=total, start=start, disable=disable) as bar:
        for item in iterable:
            yield item
            bar.advance()


class TqdmLike:
    """The part of tqdm's interface the training loops use (iterate, ``set_postfix``, ``close``),
    drawn with :func:`progress_bar`, so every command shows the same bar."""

    def __init__(self, iterable: Iterable[T], initial: int = 0, total: int | None = None,
                 disable: bool = False, desc: str = "", **_: object):
        self._it, self._fields = iterable, {}
        self._cm = progress_bar(desc or "progress", total=total if total is not None
                                else len(iterable), start=initial, disable=disable)  # type: ignore
        self._bar = self._cm.__enter__()
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        for item in self._it:
            yield item
            self._bar.advance(1, **self._fields)

    def set_postfix(self, **fields: object) -> None:
        """Show ``fields`` beside the bar (numbers or numeric strings)."""
        self._fields = {k: float(v) for k, v in fields.items()
                        if isinstance(v, (int, float)) or _is_number(v)}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cm.__exit__(None, None, None)


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def progress_calls(fn: Callable[[int], T], total: int, step: int, label: str) -> Callable[[int], T]:
    """``fn(start)`` that fetches items ``start .. start+step`` of ``total``, with a progress bar
    advanced on each call and closed after the last batch (for loops driven by a callback)."""
    state: dict[str, Any] = {}

    def wrapped(start: int) -> T:
        if "cm" not in state:
            state["cm"] = progress_bar(label, total=total)
            state["bar"] = state["cm"].__enter__()
        out = fn(start)
        n = min(step, total - start)
        state["bar"].advance(n)
        if start + n >= total:
            state.pop("cm").__exit__(None, None, None)
        return out

    return wrapped
