"""Experiment scripts (``experiments/…/*.py``, not a package) loaded as modules by the tests of
this directory (imported as ``from experiment_modules import load``, like tests/flow's
``flow_targets``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def load(name: str, rel: str, *, rerun: bool = False) -> ModuleType:
    """``experiments/REL`` as the module ``sys.modules[NAME]`` (dataclasses look their module up
    there), executed on the first call; later calls return it as it is, or with ``rerun`` execute
    the file again into the same module object (its module-level state starts afresh)."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / rel)
    mod = sys.modules.get(name)
    if mod is None:
        mod = sys.modules[name] = importlib.util.module_from_spec(spec)
    elif not rerun:
        return mod
    spec.loader.exec_module(mod)
    return mod
