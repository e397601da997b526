"""The one Registry type: a plain dict of named entries with their paper and equation.

Used for SDEs, samplers, losses, advantage estimators, pairwise losses and rewards. Adding an
algorithm is one decorator in its defining module; an unknown name is an error listing the choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    """A registered callable with its provenance and declared properties."""

    fn: Callable[..., Any]
    paper: str
    equation: str
    special_cases: tuple = ()
    properties: frozenset = field(default_factory=frozenset)


class Registry(dict):
    """Name → Entry. ``register`` refuses duplicates; ``get`` names the valid choices."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str, *, paper: str, equation: str, **meta: Any):
        """Decorate ``fn`` to register it under ``name``."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self[name] = Entry(fn, paper, equation, **meta)
            return fn

        return deco

    def get(self, name: str) -> Entry:  # type: ignore[override]
        """Return the entry for ``name`` or raise a KeyError that lists the valid names."""
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of {sorted(self)}")
        return self[name]
