"""The ``codepeft`` command: a thin typer layer over the Python API.

Each concern adds its commands in its own module (``cli/data.py``, ``cli/evaluate.py``, ...).
``main`` turns every ``CodepeftError`` into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from rich.markup import escape

from codepeft.cli.app import app, console
from codepeft.errors import CodepeftError


def _load_commands() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "app":
            importlib.import_module(f"{__name__}.{info.name}")


def main(argv: list[str] | None = None) -> None:
    _load_commands()
    try:
        app(args=argv, standalone_mode=True)
    except CodepeftError as err:
        # escaped: a message may hold brackets (pip extras, list overrides) that rich would read as markup
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]: finished work was kept; rerun the same command to resume")
        sys.exit(130)


__all__ = ["app", "main"]
