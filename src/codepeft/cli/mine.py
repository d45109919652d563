"""``codepeft mine``: turn a Python codebase into an instruction data set (see docs/mining.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from codepeft.cli.app import app, console
from codepeft.errors import CodepeftError, validation_message
from codepeft.mining.pipeline import MineSettings, MiningSummary, mine, summary_path, write_dataset
from codepeft.mining.split import parse_fractions


def summary_table(summary: MiningSummary) -> Table:
    table = Table(title=f"mined {summary.target} ({summary.kind})", show_header=True)
    table.add_column("step")
    table.add_column("count", justify="right")
    table.add_row("files found", str(summary.files_found))
    table.add_row("files read", str(summary.files_read))
    for reason, count in sorted(summary.files_skipped.items()):
        table.add_row(f"  files skipped: {reason.replace('_', ' ')}", str(count))
    table.add_row("functions found", str(summary.functions_found))
    for reason, count in summary.dropped.items():
        table.add_row(f"  dropped: {reason.replace('_', ' ')}", str(count))
    table.add_row("  exact duplicates", str(summary.exact_duplicates))
    table.add_row("  near duplicates", str(summary.near_duplicates))
    table.add_row("kept", str(summary.kept), style="bold")
    table.add_row("  with doctests", str(summary.with_doctests))
    if summary.doctests_failing_on_reference is not None:
        table.add_row("  doctests dropped: fail on reference", str(summary.doctests_failing_on_reference))
    for name, count in summary.splits.items():
        table.add_row(f"  {name}", f"{count} ({summary.split_files.get(name, 0)} files)")
    table.add_row("seconds", f"{summary.seconds:.2f}")
    return table


def output_path(output: Path | None, name: str | None) -> Path:
    """``-o PATH``, or the registered location of ``--name NAME``; exactly one of them."""
    if (output is None) == (name is None):
        raise CodepeftError("give exactly one of -o PATH.jsonl or --name NAME (saved for --dataset mined:NAME)")
    if output is not None:
        return output
    if not name or not all(part.isidentifier() for part in name.replace("-", "_").split(".")):
        raise CodepeftError(f"--name {name!r} is not a plain name: use letters, digits, '-', '_' or '.'")
    from codepeft.home import codepeft_home

    return codepeft_home() / "mined" / f"{name}.jsonl"


@app.command("mine")
def mine_command(
    target: Annotated[str, typer.Argument(help="a folder, .py file, git checkout (tracked files), installed module "
                                               "(e.g. json) or 'stdlib'")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="JSONL file to write "
                                                "(summary: *.summary.json)")] = None,
    name: Annotated[str | None, typer.Option(help="register as NAME instead of -o: written to "
                                             "$CODEPEFT_HOME/mined/NAME.jsonl, used as mined:NAME")] = None,
    seed: Annotated[int, typer.Option(help="seed of the split by file")] = 0,
    min_lines: Annotated[int, typer.Option(help="minimum non-blank body lines")] = 2,
    max_lines: Annotated[int, typer.Option(help="maximum non-blank body lines")] = 60,
    near_dup_threshold: Annotated[float, typer.Option(help="token 3-gram Jaccard for near duplicates "
                                                           "(>1 disables)")] = 0.9,
    split: Annotated[str, typer.Option(help="train,validation,test fractions (of functions; whole files)")]
    = "0.8,0.1,0.1",
    include_tests: Annotated[bool, typer.Option("--include-tests", help="keep test files and test_* functions")]
    = False,
    include_private: Annotated[bool, typer.Option("--include-private", help="keep _private functions and modules")]
    = False,
    workers: Annotated[int, typer.Option(help="processes parsing files")] = 2,
    verify_doctests: Annotated[bool, typer.Option("--verify-doctests", help="run doctests on the references in "
                                                  "the sandbox; keep only those that pass")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing output file")] = False,
) -> None:
    """Mine documented functions of Python sources into train/validation/test examples (never imports them)."""
    output = output_path(output, name)
    if output.exists() and not force:
        raise CodepeftError(f"{output} already exists: pass --force to overwrite it or choose another -o path")
    try:
        settings = MineSettings(seed=seed, min_lines=min_lines, max_lines=max_lines,
                                near_dup_threshold=near_dup_threshold, split=parse_fractions(split),
                                include_tests=include_tests, include_private=include_private, workers=workers,
                                verify_doctests=verify_doctests)
    except ValidationError as err:
        message = validation_message(err, flags=True, default_where="option")
        raise CodepeftError(f"{message}; see `codepeft mine --help`") from err
    records, summary = mine(target, settings)
    for skipped in summary.skipped_files[:10]:
        console.print(f"[yellow]skipped[/] {skipped['file']}: {skipped['reason'].replace('_', ' ')} "
                      f"({skipped['detail']})", highlight=False, soft_wrap=True)
    if len(summary.skipped_files) > 10:
        console.print(f"[yellow]skipped[/] {len(summary.skipped_files) - 10} more files (see the summary file)")
    console.print(summary_table(summary))
    if not records:
        raise CodepeftError(f"no examples kept from {target!r}: every function was dropped (see the table); "
                            "try --min-lines 1, --include-private or --include-tests")
    write_dataset(records, summary, output, force=force)
    console.print(f"wrote {len(records)} examples to {output} and the summary to {summary_path(output)}",
                  highlight=False, soft_wrap=True)
