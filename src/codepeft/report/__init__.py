"""Reports of a study: one self-contained ``report.html`` (tables, inline SVG plots) and ``report.md``.

``build_reports(study_dir)`` rebuilds both (and ``results.csv`` / ``results.json``) from the saved
run directories alone, so ``codepeft report STUDY_DIR`` works on a finished, killed or copied study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codepeft.report.content import ReportData, gather


@dataclass
class Reports:
    html: Path
    markdown: Path
    csv: Path
    json: Path
    data: ReportData


def build_reports(study_dir: Path) -> Reports:
    from codepeft.report.html import write_html
    from codepeft.report.markdown import write_markdown

    data = gather(Path(study_dir))
    return Reports(write_html(data), write_markdown(data), data.csv_path, data.json_path, data)


__all__ = ["Reports", "build_reports"]
