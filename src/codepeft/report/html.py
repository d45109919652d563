"""``report.html``: one self-contained file (inline CSS and SVG, no network) with everything of a study.

Per (data set, model): the leaderboard, effectiveness against cost with the Pareto front, per-arm
bars with confidence intervals, training curves, and a few problems answered side by side by every
arm; then failed runs and provenance. A tiny inline script only marks the page as rendered
(``data-rendered`` on ``<body>``) so a headless-browser test can tell the page loaded without errors.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codepeft import __version__
from codepeft.report import plots
from codepeft.report.content import MAIN_METRICS, Panel, ReportData, examples, training_logs
from codepeft.rundir import write_text
from codepeft.study.results import provenance
from codepeft.study.runs import short_dataset, short_model

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1300px;padding:0 1rem;
color:#1d2330;line-height:1.45}
h1{margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:2px solid #e3e6ee;padding-bottom:.3rem}
.muted{color:#5b6475;font-size:.92rem}
table{border-collapse:collapse;margin:1rem 0;font-size:.88rem}
.scroll{overflow-x:auto;max-width:100%}.scroll table{margin:.5rem 0}
.findings p{background:#f6f8fc;border-left:4px solid #3b6fd8;padding:.5rem .8rem}
th,td{border:1px solid #d9dde7;padding:.35rem .55rem;text-align:right;white-space:nowrap}
th{background:#f2f4f8}td.name,th.name{text-align:left}
tr.best td{background:#eefaf0;font-weight:600}
svg.plot{max-width:100%;height:auto;display:block;margin:.6rem 0}
.examples{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:.7rem}
pre{background:#f7f8fb;border:1px solid #e3e6ee;padding:.5rem;overflow-x:auto;font-size:.78rem;margin:.2rem 0;
white-space:pre-wrap;word-break:break-word}
.ok{color:#18794e}.bad{color:#b42318}
details{margin:1rem 0}summary{cursor:pointer;font-weight:600}
"""

SCRIPT = """
(function(){
  var errors = [];
  window.addEventListener('error', function(e){ errors.push(String(e.message)); });
  document.addEventListener('DOMContentLoaded', function(){
    var body = document.body;
    body.setAttribute('data-tables', String(document.querySelectorAll('table.leaderboard tbody tr').length));
    body.setAttribute('data-plots', String(document.querySelectorAll('svg.plot').length));
    body.setAttribute('data-errors', String(errors.length));
    // layout facts for the headless-browser test: the page never scrolls sideways; a leaderboard wider
    // than its box scrolls inside it
    body.setAttribute('data-page-width', String(document.documentElement.scrollWidth));
    body.setAttribute('data-view-width', String(window.innerWidth));
    var boxes = document.querySelectorAll('div.scroll');
    var contained = Array.prototype.every.call(boxes, function(box){
      return box.scrollWidth <= box.clientWidth || getComputedStyle(box).overflowX === 'auto';
    });
    body.setAttribute('data-leaderboards-contained', boxes.length && contained ? 'yes' : 'no');
    body.setAttribute('data-rendered', errors.length ? 'errors' : 'ok');
  });
})();
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table_html(panel: Panel) -> str:
    head = "".join(f'<th class="{"name" if i in (1, 2) else ""}">{esc(c)}</th>' for i, c in enumerate(panel.columns))
    body = []
    for index, row in enumerate(panel.rows):
        cells = "".join(f'<td class="{"name" if i in (1, 2) else ""}">{esc(c)}</td>' for i, c in enumerate(row))
        body.append(f'<tr class="{"best" if index == 0 else ""}">{cells}</tr>')
    # the table scrolls inside its own box, so a wide leaderboard never widens or cuts the page
    return (f'<div class="scroll"><table class="leaderboard"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def pairs_html(panel: Panel) -> str:
    if not panel.pair_rows:
        return ""
    names = panel.PAIR_TEXT_COLUMNS
    head = "".join(f'<th class="{"name" if i in names else ""}">{esc(c)}</th>'
                   for i, c in enumerate(panel.PAIR_COLUMNS))
    body = "".join("<tr>" + "".join(f'<td class="{"name" if i in names else ""}">{esc(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in panel.pair_rows)
    return (f"<h3>Arms against each other on {esc(panel.primary)}</h3>"
            '<p class="muted">Per-problem difference (first arm minus second) with its bootstrap interval; paired '
            "permutation test, Holm-adjusted with the comparisons against zero-shot; resolvable Δ: the difference "
            "that comparison detects with 80% power at alpha 0.05, from its own spread.</p>"
            f'<div class="scroll"><table class="pairs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def examples_html(items: list[dict[str, Any]]) -> str:
    if not items:
        return ""
    blocks = []
    for item in items:
        answers = []
        for answer in item["answers"]:
            mark = ""
            if answer["ok"] is not None:
                mark = '<span class="ok">✓</span>' if answer["ok"] > 0 else '<span class="bad">✗</span>'
            code = esc(answer["code"]) or "(empty)"
            answers.append(f'<div><b>{esc(answer["arm"])}</b> {mark}<pre>{code}</pre></div>')
        blocks.append(
            f'<details><summary>{esc(item["id"])}</summary>'
            f'<div class="muted">request</div><pre>{esc(item["intent"][:2000])}</pre>'
            f'<div class="muted">reference</div><pre>{esc(item["reference"][:2000])}</pre>'
            f'<div class="examples">{"".join(answers)}</div></details>'
        )
    return "<h3>Example generations</h3>" + "".join(blocks)


def findings_html(data: ReportData) -> str:
    import re

    from codepeft.report.findings import findings

    paragraphs = [re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc(text)) for text in findings(data.panels)]
    return '<section class="findings"><h2>Findings</h2>' + "".join(f"<p>{p}</p>" for p in paragraphs) + "</section>"


def provenance_html(data: ReportData) -> str:
    envs = provenance(data.study)
    if not envs:
        return ""
    first = next(iter(envs.values()))
    commits = Counter(str(e.get("git_commit")) for e in envs.values())
    versions = Counter(str(e.get("codepeft_version")) for e in envs.values())
    machine = first.get("machine") or {}
    packages = first.get("packages") or {}
    rows = [("codepeft", ", ".join(versions)), ("git commit", ", ".join(commits)),
            ("machine", ", ".join(f"{k}={v}" for k, v in machine.items())),
            ("seeds", ", ".join(sorted({str(e.get('seed')) for e in envs.values()})))]
    rows += [(name, version or "not installed") for name, version in packages.items()]
    checksums = {k: v for e in envs.values() for k, v in (e.get("data_checksums") or {}).items()}
    rows += [(f"data {split}", digest[:16]) for split, digest in checksums.items()]
    models = {str((e.get("model") or {}).get("spec", "")): (e.get("model") or {}) for e in envs.values()
              if isinstance(e.get("model"), dict)}
    rows += [(f"model {spec}", f"{m.get('architecture', '')} config {str(m.get('config_sha256', ''))[:16]}")
             for spec, m in models.items() if spec]
    body = "".join(f'<tr><td class="name">{esc(k)}</td><td class="name">{esc(v)}</td></tr>' for k, v in rows)
    return (f"<details><summary>Provenance ({len(envs)} runs; every run keeps its own environment.json)</summary>"
            f"<table><tbody>{body}</tbody></table></details>")


def panel_html(data: ReportData, panel: Panel, examples_count: int) -> str:
    parts = [f"<h2>{esc(panel.title)}</h2>",
             f'<p class="muted">Primary metric: <b>{esc(panel.primary)}</b>. Sorted best first.</p>',
             table_html(panel), pairs_html(panel)]
    cost = plots.cost_figure(panel.entries, panel.primary, f"{panel.title}: {panel.primary} vs cost")
    if cost:
        parts += ["<h3>Effectiveness against cost</h3>",
                  '<p class="muted">Ringed points joined by the dashed line are the Pareto front: no other arm '
                  "scores higher for less.</p>", cost]
    bar_metrics = [panel.primary, *[m for m in MAIN_METRICS if m in panel.metrics and m != panel.primary][:2]]
    bars = plots.bars_figure(panel.entries, bar_metrics, f"{panel.title}: 95% intervals")
    if bars:
        parts += ["<h3>Per-arm results with 95% intervals</h3>", bars]
    curves = plots.curves_figure(training_logs(data.study, panel.dataset, panel.model), f"{panel.title}: training")
    if curves:
        parts += ["<h3>Training curves</h3>", curves]
    parts.append(examples_html(examples(data.study, panel.dataset, panel.model, examples_count)))
    return "".join(parts)


def render_html(data: ReportData) -> str:
    study = data.study
    examples_count = int(study.index.get("config", {}).get("report_examples", 3))
    done = sum(r["status"] == "done" for r in study.rows)
    failed_rows = [r for r in study.rows if r["status"] == "failed"]
    failed = ""
    if failed_rows:
        items = "".join(f"<li>{esc(short_model(r['model']))} · {esc(short_dataset(r['dataset']))} · {esc(r['arm'])} · "
                        f"seed {esc(r['seed'])}: "
                        f"<code>{esc(r.get('error') or 'unknown error')}</code></li>" for r in failed_rows)
        failed = f"<h2>Failed runs</h2><ul>{items}</ul>"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(panel_html(data, panel, examples_count) for panel in data.panels)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>codepeft study: {esc(study.name)}</title><style>{CSS}</style><script>{SCRIPT}</script></head>
<body>
<h1>Study: {esc(study.name)}</h1>
<p class="muted">{esc(study.index.get("description", ""))}</p>
{findings_html(data)}
<p class="muted">{len(study.rows)} runs: {done} done, {len(failed_rows)} failed. EM@k, pass@k, BLEU and chrF in percent,
CodeBLEU in [0, 1]. Intervals are 95%:
over seeds when there are several, else a bootstrap over test problems. Δ vs zero-shot: paired permutation test on the
same problems. Costs are means over seeds; memory is the peak resident memory of the process (GPU memory when used).
Generated {esc(generated)} by codepeft {esc(__version__)}; data in {esc(data.csv_path.name)} and
{esc(data.json_path.name)}.</p>
{body}
{failed}
{provenance_html(data)}
</body></html>
"""


def write_html(data: ReportData) -> Path:
    path = data.study.directory / "report.html"
    write_text(path, render_html(data))
    return path
