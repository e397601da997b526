"""``scorealign configs``: list the shipped configs (their names work as ``--config NAME``)."""

from __future__ import annotations

import typer


def configs_cmd() -> None:
    """List the shipped configs (give a name to --config, e.g. --config digits_loop)."""
    from scorealign.commands.common import configs_root, shipped_configs
    typer.echo(f"# {configs_root()}")
    for name, path in shipped_configs().items():
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines()
                      if ln.startswith("#")), "")
        typer.echo(f"{name:40s} {first}"[:120].rstrip())


def register(app: typer.Typer) -> None:
    """Add ``configs`` to the ``scorealign`` app."""
    app.command("configs")(configs_cmd)
