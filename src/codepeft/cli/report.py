"""``codepeft report STUDY_DIR``: rebuild report.html, report.md and the results table from saved runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from codepeft.cli.app import app, out


@app.command()
def report(
    study_dir: Annotated[Path, typer.Argument(help="the directory `codepeft study` wrote (holds study.json)")],
) -> None:
    """Rebuild a study's reports and results table from its run directories, and print the leaderboard."""
    from codepeft.cli.study import print_leaderboard
    from codepeft.report import build_reports

    reports = build_reports(study_dir)
    print_leaderboard(reports.data)
    out.print(f"report: {reports.html.resolve()}", highlight=False, soft_wrap=True)
    out.print(f"markdown: {reports.markdown.resolve()}", highlight=False, soft_wrap=True)
