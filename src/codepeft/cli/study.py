"""``codepeft study [FILE] [key=value ...]``: run every arm of a study and print its leaderboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from codepeft.cli.app import app, console, out
from codepeft.errors import CodepeftError

if TYPE_CHECKING:
    from codepeft.study.config import StudyConfig

DEFAULT_OUT = Path("studies-out")


def split_arguments(arguments: list[str]) -> tuple[str | None, list[str]]:
    """The study file (the one argument without ``=``, if any) and the ``key=value`` overrides."""
    files = [a for a in arguments if "=" not in a]
    overrides = [a for a in arguments if "=" in a]
    if len(files) > 1:
        raise CodepeftError(f"more than one study file given ({', '.join(files)}): "
                            "pass one FILE, then key=value overrides")
    return (files[0] if files else None), overrides


def default_study_dir(config: StudyConfig) -> Path:
    """``<ray.storage>/<name>`` for a Ray study that names its shared storage, else ``studies-out/<name>``."""
    storage = config.ray.storage if config.executor == "ray" else None
    return (Path(storage) if storage else DEFAULT_OUT) / config.name


COMPACT = ("#", "arm", "trainable params", "peak mem (MiB)", "train (s)", "generate (s)")


def print_leaderboard(data: object) -> None:
    """A terminal-width leaderboard per panel (primary metric with CI, Δ vs zero-shot, main costs) and its findings."""
    from rich.table import Table

    for panel in data.panels:  # type: ignore[attr-defined]
        keep = [i for i, c in enumerate(panel.columns) if c in COMPACT or c.startswith(panel.primary) or
                c.startswith("Δ")]
        table = Table(title=panel.title, title_justify="left")
        for i in keep:
            column = panel.columns[i]
            table.add_column(column, justify="left" if column == "arm" else "right", no_wrap=column == "arm",
                             overflow="fold")
        for row in panel.rows:
            table.add_row(*(row[i] for i in keep))
        out.print(table)
        from codepeft.report.findings import panel_findings

        out.print(panel_findings(panel).replace("**", ""), markup=False, highlight=False)


@app.command()
def study(
    arguments: Annotated[list[str] | None, typer.Argument(
        metavar="[FILE] [KEY=VALUE]...",
        help="a study YAML file (default: the packaged default study), then overrides such as "
             "limits.test_size=10 or arms.lora.params.r=8",
    )] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="study directory (default: studies-out/<study name>)")] = None,
    force: Annotated[bool, typer.Option("--force", help="redo every run, even finished ones")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="local data sets directory")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan (runs, sizes, expected time, "
                                                       "resolvable difference) without running")] = False,
    executor: Annotated[str | None, typer.Option(
        "--executor", help="local (default: one run after another) or ray (each run a Ray task)")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster for --executor ray: auto or HOST:PORT (default: start Ray here)")] = None,
) -> None:
    """Compare zero-shot, ICL, RAG and fine-tuning arms on the same models and data, with costs and CIs."""
    from codepeft.report import build_reports
    from codepeft.study.config import load_study
    from codepeft.study.executors import make_executor
    from codepeft.study.progress import StudyProgress
    from codepeft.study.quiet import LOG_NAME as THIRD_PARTY_LOG
    from codepeft.study.quiet import third_party_output
    from codepeft.study.runner import StudyRunner, is_disk_full

    path, overrides = split_arguments(arguments or [])
    if executor:
        overrides.append(f"executor={executor}")
    if address:
        overrides.append(f"ray.address={json.dumps(address)}")  # quoted: HOST:PORT is not read as YAML
    config = load_study(path, overrides)
    if address and config.executor != "ray":
        raise CodepeftError("--address names a Ray cluster: add --executor ray (or executor: ray in the study)")
    study_dir = out_dir or default_study_dir(config)
    progress = StudyProgress(console, title=f"study {config.name} → {study_dir}")
    runner = StudyRunner(config, study_dir, force=force, data_dir=data_dir, on_event=progress,
                         executor=None if dry_run else make_executor(config))
    if dry_run:
        from codepeft.study.plan import describe

        for line in describe(runner.runs, study_dir, runner.data_dir):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    try:
        with third_party_output(study_dir / THIRD_PARTY_LOG), progress:
            outcome = runner.run()
        reports = build_reports(study_dir)
    except OSError as err:
        if is_disk_full(err):
            raise CodepeftError(f"disk full while writing under {study_dir}: free some space and rerun the same "
                                "command; finished runs were kept and will be reused") from None
        raise
    print_leaderboard(reports.data)
    if outcome.failed:
        console.print(f"[yellow]{len(outcome.failed)} of {len(outcome.runs)} runs failed[/]: see the table above "
                      f"and {reports.markdown}")
    out.print(f"report: {reports.html.resolve()}", highlight=False, soft_wrap=True)
    out.print(f"results: {reports.csv.resolve()}", highlight=False, soft_wrap=True)
    if outcome.failed:
        raise typer.Exit(1)
