"""``codepeft datasets`` (the registry as a table) and ``codepeft show`` (examples of a split)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from codepeft.cli.app import app, out
from codepeft.data import TASKS, get_task
from codepeft.errors import CodepeftError

DATA_OPTION_HELP = "data-set option KEY=VALUE, repeatable (e.g. intent_field=prompt; see `codepeft datasets`)"
DataOptions = Annotated[list[str] | None, typer.Option("--data-option", help=DATA_OPTION_HELP)]


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """``["difficulty=introductory", ...]`` -> ``{"difficulty": "introductory"}``."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CodepeftError(f"data option {pair!r} is not KEY=VALUE: write e.g. "
                                "--data-option difficulty=introductory")
        options[key.strip()] = value
    return options


def reject_data_options_as_params(params: dict[str, object], method: str, datasets: list[str]) -> None:
    """A ``--param`` that the method does not take but a data set does was meant as ``--data-option``."""
    from codepeft.methods import get_method

    accepted = get_method(method).Params.model_fields
    for key, value in params.items():
        if key in accepted:
            continue
        for spec in datasets:
            task = TASKS.get(spec.partition(":")[0])
            if key in getattr(task, "options_help", {}):
                raise CodepeftError(f"--param {key}= is an option of data set {spec!r}, not of method {method!r}: "
                                    f"pass --data-option {key}={value}")


@app.command()
def datasets() -> None:
    """List the built-in data sets: name, description, splits and whether they have tests."""
    table = Table(title="codepeft data sets")
    for column in ("name", "description", "splits", "tests", "options"):
        table.add_column(column, overflow="fold")
    for name in sorted(TASKS):
        cls = TASKS[name]
        tests = "optional" if getattr(cls, "tests_optional", False) else ("yes" if cls.has_tests else "no")
        options = ", ".join(sorted(getattr(cls, "options_help", {}))) or "-"
        table.add_row(name, Text(cls.description), ", ".join(cls.splits), tests, options)
    out.print(table)


@app.command()
def show(
    dataset: Annotated[str, typer.Argument(help="data set name, or jsonl:FILE")],
    split: Annotated[str, typer.Option(help="split to show")] = "test",
    limit: Annotated[int, typer.Option(min=0, help="how many examples (0: only the count)")] = 3,
    data_dir: Annotated[Path | None, typer.Option(help="directory holding the local data sets")] = None,
    option: Annotated[list[str] | None, typer.Option("--data-option", "--option", "-o", help=DATA_OPTION_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print examples as JSON lines")] = False,
) -> None:
    """Print the first examples of a split (intent, prompt instruction, reference, tests)."""
    task = get_task(dataset, data_dir, **parse_options(option))
    examples = task.load(split)
    shown = examples[:limit]
    if as_json:
        for example in shown:
            out.print_json(json.dumps(example.to_dict()))
        return
    # Data is printed as Text, never as markup: `List[float]` in a docstring is not a style tag.
    out.print(Text(f"{dataset} {split}: {len(examples)} examples", style="bold"))
    for example in shown:
        out.print(Panel(Text(task.instruction(example)), title=Text(f"{example.id} instruction"), title_align="left"))
        out.print(Syntax(task.target(example) or "(no reference)", "python", word_wrap=True))
        if example.tests is not None:
            summary = {k: (v if not isinstance(v, list) else f"{len(v)} items") for k, v in example.tests.items()
                       if k in ("kind", "fn_name", "entry_point", "asserts", "inputs")}
            out.print(Text(f"tests: {summary}"))
