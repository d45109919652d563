"""``report.md``: the leaderboard of each (data set, model) as Markdown tables, for terminals and READMEs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codepeft.report.content import Panel, ReportData
from codepeft.rundir import write_text
from codepeft.study.runs import short_dataset, short_model


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def table(columns: Sequence[str], rows: list[list[str]], text_columns: Sequence[int]) -> str:
    lines = ["| " + " | ".join(_escape(c) for c in columns) + " |",
             "|" + "|".join("---" if i in text_columns else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def panel_table(panel: Panel) -> str:
    return table(panel.columns, panel.rows, (1, 2))


def pairs_section(panel: Panel) -> list[str]:
    if not panel.pair_rows:
        return []
    return [f"Arms against each other on {panel.primary} (per-problem difference, first arm minus second, with "
            "its bootstrap interval; paired permutation test, Holm-adjusted with the comparisons against "
            "zero-shot; resolvable Δ: the difference that comparison detects with 80% power at alpha 0.05, "
            "from its own spread):", "", table(panel.PAIR_COLUMNS, panel.pair_rows, panel.PAIR_TEXT_COLUMNS), ""]


def render_markdown(data: ReportData) -> str:
    study = data.study
    parts = [f"# Study: {study.name}", ""]
    if study.index.get("description"):
        parts += [str(study.index["description"]), ""]
    from codepeft.report.findings import findings

    parts += ["## Findings", "", *[f"{paragraph}\n" for paragraph in findings(data.panels)]]
    seeds = sorted({r["seed"] for r in study.rows})
    parts += [
        f"{len(study.rows)} runs ({sum(r['status'] == 'done' for r in study.rows)} done, "
        f"{sum(r['status'] == 'failed' for r in study.rows)} failed), seeds {', '.join(map(str, seeds))}. "
        "EM@k, pass@k, BLEU and chrF in percent, CodeBLEU in [0, 1]; the first metric column is the data set's "
        "primary metric with its 95% interval "
        "(over seeds when there are several, else a bootstrap over test problems; for corpus-level BLEU, chrF "
        "and CodeBLEU the interval is of the per-problem sentence-level mean shown beside the headline); Δ vs "
        "zero-shot is the per-problem difference with its bootstrap interval and a paired permutation test, p "
        "Holm-adjusted over the study's comparisons of that metric.",
        "",
    ]
    for panel in data.panels:
        parts += [f"## {panel.title}", "", panel_table(panel), "", *pairs_section(panel)]
    failed = [r for r in study.rows if r["status"] == "failed"]
    if failed:
        parts += ["## Failed runs", ""]
        parts += [f"- {short_model(r['model'])} · {short_dataset(r['dataset'])} · {r['arm']} · seed {r['seed']}: "
                  f"{r.get('error') or 'unknown error'}" for r in failed]
        parts.append("")
    parts += [f"Full results: `{data.csv_path.name}`, `{data.json_path.name}`; plots and examples: `report.html`.", ""]
    return "\n".join(parts)


def write_markdown(data: ReportData) -> Path:
    path = data.study.directory / "report.md"
    write_text(path, render_markdown(data))
    return path
