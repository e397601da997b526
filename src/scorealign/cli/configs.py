"""``scorealign configs``: list the shipped configs (their names work as ``--config NAME``)."""

from __future__ import annotations

import typer


def configs_cmd() -> None:
    """List the shipped configs (give a name to --config, e.g. --config digits_loop)."""
    from scorealign.commands.common import configs_root, shipped_configs
    typer.echo(f"# {configs_root()}")
    for name, path in shipped_configs().items():
        typer.echo("\n".join(config_lines(name, description(path))))


def description(path) -> str:
    """The first sentence of a config's opening comment (its first comment line, continued on
    the next comment lines until the sentence ends)."""
    text = ""
    for ln in path.read_text().splitlines():
        if not ln.startswith("#"):
            break
        part = ln.lstrip("#").strip()
        if not part or part.startswith(("scorealign ", "$ ")):
            break
        text = f"{text} {part}".strip()
        if text.endswith((".", ":")):
            break
    return text.rstrip(":")


def config_lines(name: str, text: str, width: int = 100, column: int = 32) -> list[str]:
    """``name`` then ``text`` wrapped at word boundaries within ``width`` columns, continuation
    lines indented to ``column`` (a long name puts the text on the next line)."""
    import textwrap

    pad = " " * column
    first = f"{name:{column - 1}s} " if len(name) < column else f"{name}\n{pad}"
    lines = textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=pad,
                          break_on_hyphens=False, break_long_words=False) if text else [name]
    return "\n".join(lines).splitlines()


def register(app: typer.Typer) -> None:
    """Add ``configs`` to the ``scorealign`` app."""
    app.command("configs")(configs_cmd)
