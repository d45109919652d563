"""``codepeft score RUN_DIR``: score a saved run (no model needed) and print a table of its metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from codepeft.cli.app import app, console, out


@app.command()
def score(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding generations.jsonl.")],
    metrics: Annotated[str | None, typer.Option(help="Comma-separated subset of em,codebleu,bleu,passk "
                                                     "(default: every metric that applies).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Parallel sandboxed programs (default: cores).")] = None,
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds per program (each sample's tests).")] = 10.0,
    force: Annotated[bool, typer.Option("--force", help="Rescore a run that already has metrics.json.")] = False,
) -> None:
    """Compute EM@k, CodeBLEU, BLEU/chrF and sandboxed pass@k for a run; write metrics.json."""
    from codepeft.metrics.score import score_run

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("running tests", total=None, visible=False)

        def on_start(total: int) -> None:
            progress.update(task, total=total, visible=True)

        def on_progress(done: int) -> None:
            progress.advance(task, done)

        result = score_run(run_dir, metrics=metrics, workers=workers, timeout=timeout, force=force,
                           on_start=on_start, on_progress=on_progress)
    table = Table(title=f"{run_dir} ({result['n']} examples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, float) and key != "timeout_s":
            table.add_row(key, f"{value:.2f}" if value > 1 or key.startswith(("em@", "pass@")) else f"{value:.4f}")
    for name, value in result.get("codebleu_components", {}).items():
        table.add_row(f"  {name}", f"{value:.4f}")
    out.print(table)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"wrote {Path(run_dir) / 'metrics.json'}", highlight=False)
