"""scorealign: align generative models with rewards and preferences.

A diffusion sampler is a policy in a controlled SDE: the score is the action, the reward is paid at
the end, and the KL to the base model is a path-space integral. See docs/conventions.md.

Python API, one function per command (``scorealign.api``; each returns the run directory or the
file written, and raises ``scorealign.errors.ScorealignError`` subclasses on bad input):

* training: ``pretrain``, ``finetune`` (``reward=`` any Python callable), ``dpo``, ``control``,
  ``build_pairs`` (``rpo build-pairs``), ``resume`` (any training run);
* any run: ``load`` (a ``Loaded`` whose ``sample(prompts, n)`` draws from the model),
  ``sample``, ``evaluate``, ``export``, ``report``.

``scorealign.control`` is also the package of the control algorithms; calling it runs the
``control`` command (``scorealign.api.control``). ``import scorealign`` stays light: the
functions load on first use, and ``dir()``, ``help()`` and tab completion list them.
"""

from __future__ import annotations

import types as _types

__version__ = "0.1.0"

#: the Python API (``scorealign.api``), one function per command
_API = ("pretrain", "finetune", "dpo", "control", "build_pairs", "resume", "load", "Loaded",
        "sample", "evaluate", "export", "report")
__all__ = list(_API)


class _CallableControl(_types.ModuleType):
    """The ``scorealign.control`` package, callable as the ``control`` command."""

    def __call__(self, config=None, *, out=None, resume=None, set=None):  # noqa: A002
        """Continuous-time RL of a policy on a controlled SDE (``scorealign control``); returns
        the run directory. See :func:`scorealign.api.control`."""
        from scorealign.api import control as command
        return command(config, out=out, resume=resume, set=set)


from scorealign import control  # noqa: E402  (the package; its __init__ imports nothing)

control.__class__ = _CallableControl


def __getattr__(name: str):  # lazy: `import scorealign` stays light for the CLI
    if name in _API:
        from scorealign import api
        return getattr(api, name)
    raise AttributeError(f"module 'scorealign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
