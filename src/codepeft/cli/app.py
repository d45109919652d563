"""The typer application every command module adds its commands to."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="codepeft",
    help="Specialize code LLMs cheaply and compare zero-shot, ICL, RAG, PEFT and full fine-tuning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()
