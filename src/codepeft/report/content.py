"""What both reports show, computed once from a study directory: leaderboards, examples, provenance.

A study's results are grouped into *panels*, one per (data set, model); each panel has a
leaderboard (arms sorted best first by the data set's primary metric) whose cells are already
formatted, so the HTML and Markdown reports print the same numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codepeft.rundir import GENERATIONS, read_generations
from codepeft.study.results import BASELINE_METHOD, Study, leaderboard, load_study_dir, write_results
from codepeft.study.runs import short_dataset, short_model
from codepeft.study.stats import min_detectable_difference

MAIN_METRICS = ("pass@1", "em@1", "codebleu", "bleu", "chrf")


@dataclass
class Panel:
    dataset: str
    model: str
    primary: str
    entries: list[dict[str, Any]]
    metrics: list[str]
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    pair_rows: list[list[str]] = field(default_factory=list)  # arm-vs-arm tests on the primary metric

    PAIR_COLUMNS = ("comparison", "Δ [95% CI]", "p", "p Holm", "wins / losses", "resolvable Δ", "verdict")
    PAIR_TEXT_COLUMNS = (0, 6)  # left-aligned

    @property
    def title(self) -> str:
        return f"{short_dataset(self.dataset)} · {short_model(self.model)}"


@dataclass
class ReportData:
    study: Study
    summary: list[dict[str, Any]]
    panels: list[Panel]
    csv_path: Path
    json_path: Path


def number(value: Any, digits: int = 1) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def params_text(entry: dict[str, Any]) -> str:
    trainable, pct = entry["costs"].get("trainable_params"), entry["costs"].get("trainable_pct")
    if not isinstance(trainable, int | float):
        return "–"
    if trainable == 0:
        return "0"
    scaled = f"{trainable / 1e6:.2f}M" if trainable >= 1e5 else f"{int(trainable):,}"
    return f"{scaled} ({pct:.2f}%)" if isinstance(pct, int | float) else scaled


def digits_for(metric: str) -> int:
    """CodeBLEU is a fraction in [0, 1]; EM@k, pass@k, BLEU and chrF are in percent."""
    return 3 if metric.startswith("codebleu") else 1


def is_corpus_level(result: dict[str, Any] | None) -> bool:
    """A headline computed over the corpus (BLEU, chrF, CodeBLEU), not the mean of its per-problem scores."""
    if not result or not isinstance(result.get("problem_mean"), int | float):
        return False
    return not math.isclose(result["problem_mean"], result.get("mean", math.nan), rel_tol=1e-6, abs_tol=1e-9)


def metric_text(result: dict[str, Any] | None, digits: int = 1) -> str:
    """The headline with its interval; a corpus-level headline is followed by the per-problem mean (the CI's)."""
    from codepeft.report.plots import interval

    if not result or not isinstance(result.get("mean"), int | float):
        return "–"
    low, high = interval(result)
    if low is None or high is None:
        return number(result["mean"], digits)
    if is_corpus_level(result) and result.get("seeds", 0) < 2:
        return (f"{number(result['mean'], digits)} · per problem {number(result['problem_mean'], digits)} "
                f"[{number(low, digits)}, {number(high, digits)}]")
    return f"{number(result['mean'], digits)} [{number(low, digits)}, {number(high, digits)}]"


def p_text(test: dict[str, Any]) -> str:
    holm = test.get("p_holm")
    return f"p={test['p_value']:.2g}" + (f", Holm {holm:.2g}" if isinstance(holm, int | float) else "")


def difference_text(test: dict[str, Any], digits: int = 1) -> str:
    low, high = (test.get("difference_ci") or [None, None])[:2]
    interval = f" [{low:+.{digits}f}, {high:+.{digits}f}]" if low is not None and high is not None else ""
    return f"{test['difference']:+.{digits}f}{interval}"


def versus_text(result: dict[str, Any] | None, digits: int = 1) -> str:
    test = (result or {}).get("vs_zero_shot")
    if not test or not isinstance(test.get("difference"), int | float) or math.isnan(test["difference"]):
        return "–"
    return f"{difference_text(test, digits)} ({p_text(test)})"


def converged_text(entry: dict[str, Any]) -> str:
    if entry["kind"] != "train":
        return ""
    return {True: "yes", False: "NO", None: "–"}[entry.get("converged")]


def build_panels(summary: list[dict[str, Any]]) -> list[Panel]:
    panels: dict[tuple[str, str], Panel] = {}
    for entry in leaderboard(summary):
        key = (entry["dataset"], entry["model"])
        if key not in panels:
            panels[key] = Panel(entry["dataset"], entry["model"], entry.get("primary_metric") or "", [], [])
        panels[key].entries.append(entry)
    for panel in panels.values():
        found = list(dict.fromkeys(m for e in panel.entries for m in e["metrics"]))
        ordered = [m for m in MAIN_METRICS if m in found and m != panel.primary]
        ordered += [m for m in found if m.startswith(("em@", "pass@")) and m not in ordered and m != panel.primary]
        panel.metrics = [panel.primary, *ordered] if panel.primary in found else ordered
        panel.columns = ["#", "arm", "method", *[f"{m} [95% CI]" if i == 0 else m for i, m in enumerate(panel.metrics)],
                         f"Δ {panel.primary} vs zero-shot [95% CI] (p)", "trainable params", "peak mem (MiB)",
                         "train (s)", "converged", "generate (s)", "prompt tokens/ex", "runs"]
        for rank, entry in enumerate(panel.entries, start=1):
            cells = [str(rank), entry["arm"], entry["method"]]
            for i, metric in enumerate(panel.metrics):
                result = entry["metrics"].get(metric)
                digits = digits_for(metric)
                cells.append(metric_text(result, digits) if i == 0 else number((result or {}).get("mean"), digits))
            costs = entry["costs"]
            runs = f"{entry['done']}/{entry['seeds']}" + (f", {entry['failed']} failed" if entry["failed"] else "")
            cells += [
                (versus_text(entry["metrics"].get(panel.primary), digits_for(panel.primary))
                 if entry["method"] != BASELINE_METHOD else "baseline"),
                params_text(entry), number(costs.get("peak_memory_mb"), 0), number(costs.get("train_seconds")),
                converged_text(entry), number(costs.get("generation_seconds")),
                number(costs.get("prompt_tokens_mean"), 0), runs,
            ]
            panel.rows.append(cells)
        panel.pair_rows = pair_rows(panel)
    return list(panels.values())


def between_arms(panel: Panel) -> list[tuple[str, dict[str, Any]]]:
    """The panel's arm-vs-arm tests on its primary metric: (first arm, test), the test naming the other."""
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in panel.entries:
        result = entry["metrics"].get(panel.primary) or {}
        tests = [result.get("vs_runner_up"), *(result.get("vs_arms") or {}).values()]
        for test in tests:
            if test and not test.get("same_as_vs_zero_shot") and all(test is not t for _, t in found):
                found.append((entry["arm"], test))
    return found


def resolved(test: dict[str, Any], alpha: float = 0.05) -> bool:
    p = test.get("p_holm", test.get("p_value"))
    return isinstance(p, int | float) and not math.isnan(p) and p < alpha


def mde_of(test: dict[str, Any]) -> float | None:
    """A comparison's resolvable difference (80% power, alpha 0.05), from its own spread of differences."""
    mde = test.get("mde")
    if isinstance(mde, int | float) and math.isfinite(mde):
        return mde
    sd, n = test.get("sd"), test.get("n")
    if isinstance(sd, int | float) and sd > 0 and isinstance(n, int) and n > 1:  # results written before tests had it
        return min_detectable_difference(sd, n)
    return None


def pair_rows(panel: Panel) -> list[list[str]]:
    digits = digits_for(panel.primary)
    rows = []
    for arm, test in between_arms(panel):
        holm = test.get("p_holm")
        rows.append([f"{arm} vs {test['arm']}", difference_text(test, digits), f"{test['p_value']:.2g}",
                     f"{holm:.2g}" if isinstance(holm, int | float) else "–",
                     f"{test.get('wins', '–')} / {test.get('losses', '–')}", number(mde_of(test), digits),
                     "resolved" if resolved(test) else "not resolved"])
    return rows


def gather(study_dir: Path) -> ReportData:
    """Read the study, write its results table, and lay out what the reports show."""
    study = load_study_dir(study_dir)
    csv_path, json_path, summary = write_results(study)
    return ReportData(study, summary, build_panels(summary), csv_path, json_path)


def training_logs(study: Study, dataset: str, model: str) -> dict[str, list[dict[str, Any]]]:
    """Training log lines of every train run of a panel, by ``arm`` (``arm sN`` with several seeds)."""
    curves: dict[str, list[dict[str, Any]]] = {}
    entries = [e for e in study.index.get("runs", []) if e["dataset"] == dataset and e["model"] == model
               and e["kind"] == "train"]
    seeds = {e["seed"] for e in entries}
    for entry in entries:
        path = study.directory / entry["dir"] / "train" / "train_log.jsonl"
        if not path.exists():
            continue
        lines = []
        for raw in path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        name = entry["arm"] if len(seeds) == 1 else f"{entry['arm']} s{entry['seed']}"
        curves[name] = lines
    return curves


def examples(study: Study, dataset: str, model: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` test problems every finished arm answered, with each arm's first candidate."""
    if count <= 0:
        return []
    by_arm: dict[str, dict[str, dict[str, Any]]] = {}
    row_status = {r["run_id"]: r["status"] for r in study.rows}
    for entry in study.index.get("runs", []):
        if entry["dataset"] != dataset or entry["model"] != model or entry["arm"] in by_arm:
            continue
        if row_status.get(entry["run_id"]) != "done":
            continue
        try:
            records = read_generations(study.directory / entry["dir"] / "eval" / GENERATIONS).records
        except Exception:  # an unreadable run is simply left out of the examples
            continue
        scores = study.per_problem.get(entry["run_id"], {})
        verdict = scores.get("pass@1") or scores.get("em@1") or {}
        by_arm[entry["arm"]] = {
            str(r["id"]): {"record": r, "ok": verdict.get(str(r["id"]))} for r in records
        }
    if not by_arm:
        return []
    arms = list(by_arm)
    shared = [i for i in by_arm[arms[0]] if all(i in by_arm[a] for a in arms[1:])][:count]
    out = []
    for problem in shared:
        first = by_arm[arms[0]][problem]["record"]
        out.append({
            "id": problem,
            "intent": _intent(first),
            "reference": str(first.get("reference") or ""),
            "answers": [
                {"arm": arm, "code": (by_arm[arm][problem]["record"].get("candidates") or [""])[0],
                 "ok": by_arm[arm][problem]["ok"]}
                for arm in arms
            ],
        })
    return out


def _intent(record: dict[str, Any]) -> str:
    tests = record.get("tests") or {}
    if isinstance(tests, dict) and tests.get("prompt"):
        return str(tests["prompt"])
    for key in ("intent", "instruction"):
        if record.get(key):
            return str(record[key])
    return str(record.get("prompt") or "")[-1500:]
