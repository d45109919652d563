"""``codepeft models`` and ``codepeft resolve``: what models are available and what a spec resolves to."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from codepeft.cli.app import app, console, out


@app.command()
def models() -> None:
    """List the packaged default model and the converted checkpoints cached under CODEPEFT_HOME."""
    from codepeft.models.gguf import DEFAULT_MODEL, PACKAGED_MODELS, cached_models, models_dir

    table = Table(title="models")
    table.add_column("spec")
    table.add_column("source")
    table.add_column("cached checkpoint")
    cached = {p.name: p for p in cached_models()}
    for name, (package, filename) in PACKAGED_MODELS.items():
        label = f"{name} (default)" if name == DEFAULT_MODEL else name
        path = cached.pop(name, None)
        table.add_row(label, f"{package} / {filename}", str(path) if path else "not converted yet (first use)")
    for name, path in cached.items():
        table.add_row(name, "converted .gguf", str(path))
    out.print(table)
    out.print(f"cache: {models_dir()}  (set CODEPEFT_HOME to move it)")
    out.print("Any local model directory, .gguf file or Hugging Face hub id is also accepted as --model.")


@app.command()
def resolve(
    spec: Annotated[str, typer.Argument(help="packaged name (smollm2-135m), model directory, .gguf file or hub id")],
    dtype: Annotated[str, typer.Option(help="auto (bf16 where the CPU has it), float32, bfloat16")] = "auto",
) -> None:
    """Resolve SPEC to a local checkpoint and show its kind, prompt style, size and adapter targets."""
    from codepeft.models import find_target_modules, load_model

    with console.status(f"loading {spec} ..."):
        loaded = load_model(spec, dtype=dtype)
    targets = find_target_modules(loaded.model)
    table = Table(show_header=False, title=spec)
    table.add_column("field", style="bold")
    table.add_column("value")
    identity = loaded.identity
    table.add_row("path", identity["path"])
    table.add_row("architecture", identity["architecture"])
    table.add_row("kind", loaded.kind)
    table.add_row("prompt style", loaded.style)
    table.add_row("parameters", f"{identity['num_parameters']:,}")
    table.add_row("dtype", identity["dtype"])
    table.add_row("context length", str(loaded.context_length))
    table.add_row("config sha256", identity["config_sha256"][:16])
    for role in ("attention", "mlp", "feedforward", "ia3", "all_linear", "excluded"):
        table.add_row(f"targets: {role}", ", ".join(getattr(targets, role)) or "-")
    out.print(table)
