"""The floor plan (docs/design.md, "Target floor plan") holds: the layers contract of
pyproject.toml is kept and no module takes part in an import circle.

Both read the import graph that grimp builds from the source (every ``import``, including the
ones inside functions), so a lazy import does not hide a dependency.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

ROOT = Path(__file__).resolve().parents[2]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    adj = {m: set(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    try:
        for m in adj:
            if m not in index:
                visit(m)
    finally:
        sys.setrecursionlimit(limit)
    return out


def test_no_import_circle():
    graph = grimp.build_graph("scorealign")
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_circle():
    """The check can fail: a two-module circle is reported."""

    class Toy:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(m):
            return {"a": {"b"}, "b": {"a"}, "c": {"a"}}[m]

    assert _cycles(Toy) == [["a", "b"]]


def test_layers_contract_kept():
    pytest.importorskip("importlinter")
    from importlinter.application.use_cases import lint_imports
    from importlinter.configuration import configure

    configure()
    import os
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        kept = lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None,
                            no_logo=True)
        assert kept is True
    finally:
        os.chdir(cwd)
