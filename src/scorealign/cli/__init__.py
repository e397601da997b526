"""The ``scorealign`` command: one typer app (``cli/app.py``) and one module per command.

Only this package knows about exit codes: it calls the typer-free command functions of
``scorealign.commands`` and turns their typed errors into one line and exit status 2.
``python -m scorealign.cli`` runs the app (``cli/__main__.py``).
"""
