"""Typer-free command functions (``finetune(cfg, out, resume) -> Path``, ...) and the run-kind
registry that ``load``, ``sample``, ``eval``, ``export`` and ``report`` look a run up in. They raise
the typed errors of :mod:`scorealign.errors`; ``scorealign.api`` and ``scorealign.cli`` call them."""
