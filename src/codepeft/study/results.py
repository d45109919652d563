"""The results of a study, gathered from its saved run directories (never from memory).

``collect`` reads ``study.json`` and every run's ``run.json``, ``eval/metrics.json``,
``train/costs.json`` and ``eval/generations.jsonl`` into one row per run: every metric, and the
costs (trainable parameters and their share, peak memory, training and generation time, prompt
tokens per example). ``summarize`` groups rows by (model, data set, arm): mean and t-interval over
seeds, bootstrap interval over test problems, a paired test of each arm against zero-shot on
the same problems (and of the best arm against the runner-up, Holm-adjusted: ``study.evidence``),
each metric's minimum detectable difference, and whether each train arm converged.
``write_results`` saves ``results.csv`` and ``results.json``.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codepeft.errors import CodepeftError
from codepeft.rundir import GENERATIONS, METRICS, read_generations, read_json, replacing, write_json
from codepeft.study.evidence import add_comparisons
from codepeft.study.runs import RUN_FILE, STUDY_INDEX
from codepeft.study.stats import bootstrap_interval, paired_test, seed_interval

BASELINE_METHOD = "zero-shot"
COST_COLUMNS = (
    "trainable_params", "total_params", "trainable_pct", "peak_memory_mb", "train_seconds", "generation_seconds",
    "total_seconds", "prompt_tokens_mean",
)
STAGES = ("train", "generation", "scoring")
ID_COLUMNS = ("model", "dataset", "arm", "method", "kind", "seed", "status", "n")


@dataclass
class Study:
    """A study directory read back: its index, rows, and per-problem scores of each run."""

    directory: Path
    index: dict[str, Any]
    rows: list[dict[str, Any]]
    per_problem: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # run_id -> metric -> id -> score

    @property
    def name(self) -> str:
        return str(self.index.get("name", self.directory.name))

    @property
    def metric_columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row.get("_metrics", []):
                seen[key] = None
        return list(seen)


def load_study_dir(study_dir: Path) -> Study:
    """Read a study directory written by ``codepeft study``; a wrong directory is a one-line error."""
    study_dir = Path(study_dir)
    index_path = study_dir / STUDY_INDEX
    if not index_path.exists():
        raise CodepeftError(f"{study_dir} is not a study directory (no {STUDY_INDEX}): "
                            "pass the --out directory of `codepeft study`")
    index = read_json(index_path)
    rows: list[dict[str, Any]] = []
    per_problem: dict[str, dict[str, dict[str, float]]] = {}
    for entry in index.get("runs", []):
        run_dir = study_dir / entry["dir"]
        row, scores = read_run(run_dir, entry)
        rows.append(row)
        per_problem[entry["run_id"]] = scores
    return Study(study_dir, index, rows, per_problem)


def read_run(run_dir: Path, entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """One results row and the run's per-problem scores."""
    state = _read_optional(run_dir / RUN_FILE) or {}
    keys = ("run_id", "model", "dataset", "arm", "method", "kind", "seed")
    row: dict[str, Any] = {key: entry.get(key) for key in keys}
    row["primary_metric"] = entry.get("primary_metric")
    row["status"] = state.get("status", "queued")
    row["error"] = state.get("error")
    row["run_dir"] = str(Path(entry["dir"]))
    metrics = _read_optional(run_dir / "eval" / METRICS) or {}
    scalar = {k: v for k, v in metrics.items() if _is_number(v) and k not in {"n", "truncated"}}
    row["n"] = metrics.get("n")
    row.update(scalar)
    row["_metrics"] = list(scalar)
    row.update(_costs(run_dir, state, entry.get("kind")))
    scores: dict[str, dict[str, float]] = {}
    if metrics:
        try:
            records = read_generations(run_dir / "eval" / GENERATIONS).records
        except CodepeftError:
            records = []
        scores = per_problem_scores(metrics, [r["id"] for r in records])
    return row, scores


def _read_optional(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except CodepeftError:
        return None
    return data if isinstance(data, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _costs(run_dir: Path, state: dict[str, Any], kind: str | None) -> dict[str, Any]:
    timings = state.get("timings", {})
    memory = state.get("peak_memory", {})
    costs = _read_optional(run_dir / "train" / "costs.json") or {}
    eval_config = _read_optional(run_dir / "eval" / "config.json") or {}
    total = costs.get("total_parameters") or _num_parameters(eval_config)
    trainable = costs.get("trainable_parameters", 0 if kind == "prompt" else None)
    train_seconds = costs.get("wall_seconds", timings.get("train_seconds")) if kind == "train" else 0.0
    generation_seconds = timings.get("generation_seconds")
    peaks = [memory.get("generation_rss_bytes"), memory.get("train_rss_bytes"), costs.get("peak_rss_bytes")]
    gpu_peaks = [memory.get("generation_gpu_bytes"), memory.get("train_gpu_bytes"),
                 costs.get("peak_gpu_allocated_bytes")]
    peak = max((p for p in peaks if p), default=None)
    # with child processes (vLLM's worker, sandboxed programs); runs from before 2026-12-03 lack it
    with_children = max((memory.get(f"{stage}_with_children_rss_bytes") or 0 for stage in STAGES), default=0)
    gpu_peak = max((p for p in gpu_peaks if p), default=None)
    prompt_tokens = _prompt_tokens(run_dir)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100.0 * trainable / total, 4) if trainable is not None and total else None,
        "peak_memory_mb": round(peak / 2**20, 1) if peak else None,
        "peak_gpu_memory_mb": round(gpu_peak / 2**20, 1) if gpu_peak else None,
        "peak_memory_with_children_mb": round(max(with_children, peak or 0) / 2**20, 1) if with_children else None,
        "train_seconds": round(train_seconds, 2) if train_seconds is not None else None,
        "generation_seconds": round(generation_seconds, 2) if generation_seconds is not None else None,
        "total_seconds": (round((train_seconds or 0) + generation_seconds, 2)
                          if generation_seconds is not None else None),
        "prompt_tokens_mean": prompt_tokens,
        "cpu_seconds": (round(sum(v for k, v in timings.items() if k.endswith("_cpu_seconds")), 2)
                        if any(k.endswith("_cpu_seconds") for k in timings) else None),
        "train_tokens": costs.get("tokens_seen"),
        "train_steps": costs.get("steps"),
        **(_convergence(run_dir, costs) if kind == "train" else {}),
    }


def _convergence(run_dir: Path, costs: dict[str, Any]) -> dict[str, Any]:
    """Whether the run's validation loss stopped falling: costs.json's verdict, else read from the training log."""
    import json

    from codepeft.training.convergence import convergence, history_from_log

    verdict = costs.get("convergence")
    if not isinstance(verdict, dict):
        log = run_dir / "train" / "train_log.jsonl"
        if not log.exists():
            return {}
        lines = []
        for raw in log.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        verdict = convergence(history_from_log(lines)).to_dict()
    return {"converged": verdict.get("converged"), "convergence": verdict.get("reason")}


def _num_parameters(eval_config: dict[str, Any]) -> int | None:
    holders = (eval_config.get("model_identity"), eval_config.get("identity"), eval_config.get("model"), eval_config)
    for holder in holders:
        if isinstance(holder, dict) and _is_number(holder.get("num_parameters")):
            return int(holder["num_parameters"])
    return None


def _prompt_tokens(run_dir: Path) -> float | None:
    path = run_dir / "eval" / GENERATIONS
    if not path.exists():
        return None
    try:
        records = read_generations(path).records
    except CodepeftError:
        return None
    counts = [r["prompt_tokens"] for r in records if _is_number(r.get("prompt_tokens"))]
    return round(sum(counts) / len(counts), 1) if counts else None


def per_problem_scores(metrics: dict[str, Any], ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{metric: {problem id: score}}`` from ``per_example``, on the same scale as the aggregate metric.

    ``per_example`` is a mapping of lists aligned with the generations (``em``, ``passed`` as a list
    of per-candidate results, ``codebleu``, ...; an ``ids`` list when present), or a list of
    per-example mappings.
    """
    per_example = metrics.get("per_example")
    if not per_example:
        return {}
    columns: dict[str, list[Any]]
    if isinstance(per_example, list):
        columns = defaultdict(list)
        for item in per_example:
            for key, value in item.items():
                columns[key].append(value)
    else:
        columns = dict(per_example)
    example_ids = [str(i) for i in (columns.get("ids") or columns.get("id") or ids)]
    out: dict[str, dict[str, float]] = {}
    passed = columns.get("passed")
    if isinstance(passed, list) and len(passed) == len(example_ids):
        # per-candidate pass/fail -> unbiased pass@k per problem (problems without tests are left out)
        for name, aggregate in metrics.items():
            if name.startswith("pass@") and name[5:].isdigit() and _is_number(aggregate):
                k = int(name[5:])
                scores = {i: _pass_at_k(v, k) for i, v in zip(example_ids, passed, strict=True) if isinstance(v, list)}
                out[name] = _scaled(scores, aggregate)
    for key, values in columns.items():
        if key in {"ids", "id", "passed"} or not isinstance(values, list) or len(values) != len(example_ids):
            continue
        # None: a problem the metric does not apply to (EM of a problem without reference code)
        scored = {i: v for i, v in zip(example_ids, values, strict=True) if v is not None}
        if not scored or not all(_is_number(v) or isinstance(v, bool) for v in scored.values()):
            continue
        name = "em@1" if key == "em" else key
        aggregate = metrics.get(name)
        if not _is_number(aggregate):
            continue
        out[name] = _scaled({i: float(v) for i, v in scored.items()}, aggregate)
    return out


def _pass_at_k(results: list[Any], k: int) -> float:
    """Unbiased pass@k of one problem from n candidates with c passing (Chen et al. 2021)."""
    n = len(results)
    c = sum(bool(r) for r in results)
    if n == 0:
        return 0.0
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _scaled(scores: dict[str, float], aggregate: float) -> dict[str, float]:
    """Put per-problem scores on the aggregate's scale (percent or fraction), whichever their mean matches."""
    if not scores:
        return scores
    mean = sum(scores.values()) / len(scores)
    if abs(mean * 100 - aggregate) < abs(mean - aggregate):
        return {k: v * 100 for k, v in scores.items()}
    return scores


def summarize(study: Study) -> list[dict[str, Any]]:
    """One row per (model, data set, arm): metrics over seeds with intervals, costs, and the paired test."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in study.rows:
        groups[(row["model"], row["dataset"], row["arm"])].append(row)
    baselines = baseline_runs(study)
    summary: list[dict[str, Any]] = []
    problems_of: dict[tuple[str, str, str], dict[str, dict[str, float]]] = {}
    for (model, dataset, arm), rows in groups.items():
        done = [r for r in rows if r["status"] == "done"]
        entry: dict[str, Any] = {
            "model": model, "dataset": dataset, "arm": arm, "method": rows[0]["method"], "kind": rows[0]["kind"],
            "primary_metric": rows[0].get("primary_metric"), "seeds": len(rows), "done": len(done),
            "failed": sum(r["status"] == "failed" for r in rows),
            "errors": sorted({r["error"] for r in rows if r.get("error")}),
            "metrics": {}, "costs": {},
        }
        metric_names = list(dict.fromkeys(m for r in done for m in r.get("_metrics", [])))
        for metric in metric_names:
            over_seeds = seed_interval([r[metric] for r in done if _is_number(r.get(metric))])
            problems = seed_mean_scores(study, done, metric)
            result: dict[str, Any] = {"mean": over_seeds.mean, "seed_ci": [over_seeds.low, over_seeds.high],
                                      "seeds": over_seeds.n}
            if problems:
                problems_of.setdefault((model, dataset, arm), {})[metric] = problems
                boot = bootstrap_interval(list(problems.values()))
                # the mean of per-problem scores (sentence level for BLEU/chrF/CodeBLEU, not the corpus headline)
                result["problem_mean"] = boot.mean
                result["bootstrap_ci"] = [boot.low, boot.high]
                result["problems"] = boot.n
                spread = seed_spread(study, done, metric)
                if spread:
                    result["seed_spread"] = spread
                if rows[0]["method"] != BASELINE_METHOD:
                    base_scores = baseline_scores(study, baselines, done, metric)
                    shared = [i for i in problems if i in base_scores]
                    if shared:
                        test = paired_test([problems[i] for i in shared], [base_scores[i] for i in shared])
                        result["vs_zero_shot"] = test.to_dict()
            entry["metrics"][metric] = result
        for column in COST_COLUMNS:
            values = [r[column] for r in done if _is_number(r.get(column))]
            entry["costs"][column] = sum(values) / len(values) if values else None
        if entry["kind"] == "train":
            verdicts = [r["converged"] for r in done if isinstance(r.get("converged"), bool)]
            entry["converged"] = all(verdicts) if verdicts else None
            entry["convergence"] = sorted({r["convergence"] for r in done if r.get("convergence")})
        summary.append(entry)
    add_comparisons(summary, problems_of, BASELINE_METHOD, (study.index.get("config") or {}).get("comparisons") or [])
    return summary


def seed_spread(study: Study, runs: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The arm's best seed against its worst, paired per problem: how far the seed alone moves the metric.

    Intervals and tests of arms run on one seed cover the sampling of test problems only; this is the
    part they leave out (training data order and initialization), measured where an arm has seeds.
    """
    scored = [(r["seed"], study.per_problem.get(r["run_id"], {}).get(metric, {})) for r in runs]
    scored = [(seed, scores) for seed, scores in scored if scores]
    if len(scored) < 2:
        return None
    by_mean = sorted(scored, key=lambda item: sum(item[1].values()) / len(item[1]))
    (low_seed, low), (high_seed, high) = by_mean[0], by_mean[-1]
    shared = [i for i in high if i in low]
    test = paired_test([high[i] for i in shared], [low[i] for i in shared])
    return {**test.to_dict(), "seeds": [high_seed, low_seed]}


def baseline_runs(study: Study) -> dict[tuple[str, str, int], str]:
    """(model, data set, seed) -> run id of the finished zero-shot run each arm is paired with."""
    return {(row["model"], row["dataset"], row["seed"]): row["run_id"]
            for row in study.rows if row["method"] == BASELINE_METHOD and row["status"] == "done"}


def seed_mean_scores(study: Study, runs: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Per-problem ``metric`` of ``runs`` (the seeds of one arm) averaged over seeds."""
    return _mean_over_seeds([study.per_problem.get(r["run_id"], {}).get(metric, {}) for r in runs])


def baseline_scores(study: Study, baselines: dict[tuple[str, str, int], str], runs: list[dict[str, Any]],
                    metric: str) -> dict[str, float]:
    """Per-problem ``metric`` of the zero-shot runs paired with ``runs`` (same model, data set, seed)."""
    return _mean_over_seeds([
        study.per_problem.get(baselines.get((r["model"], r["dataset"], r["seed"]), ""), {}).get(metric, {})
        for r in runs
    ])


def _mean_over_seeds(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-problem scores averaged over seeds, on the problems every seed scored."""
    runs = [r for r in runs if r]
    if not runs:
        return {}
    shared = [i for i in runs[0] if all(i in r for r in runs[1:])]
    return {i: sum(r[i] for r in runs) / len(runs) for i in shared}


def leaderboard(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows sorted best first by each data set's primary metric (failed arms last)."""
    def sort_key(entry: dict[str, Any]) -> tuple[str, str, float]:
        value = entry["metrics"].get(entry.get("primary_metric") or "", {}).get("mean")
        score = value if _is_number(value) else -math.inf
        return (entry["dataset"], entry["model"], -score)

    return sorted(summary, key=sort_key)


def write_results(study: Study) -> tuple[Path, Path, list[dict[str, Any]]]:
    """``results.csv`` (one row per run) and ``results.json`` (rows, summary, provenance); returns the summary."""
    summary = leaderboard(summarize(study))
    metric_columns = study.metric_columns
    columns = ["run_id", *ID_COLUMNS, *metric_columns, *COST_COLUMNS, "cpu_seconds", "peak_gpu_memory_mb",
               "peak_memory_with_children_mb",
               "train_steps", "train_tokens", "converged", "error", "run_dir"]
    csv_path = study.directory / "results.csv"
    with replacing(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in study.rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    json_path = study.directory / "results.json"
    write_json(json_path, {
        "study": study.name,
        "runs": [{k: v for k, v in row.items() if not k.startswith("_")} for row in study.rows],
        "summary": summary,
        "provenance": provenance(study),
    })
    return csv_path, json_path, summary


def provenance(study: Study) -> dict[str, Any]:
    """Each run's environment.json (versions, commit, machine, seed, data checksums), by run id."""
    out: dict[str, Any] = {}
    for entry in study.index.get("runs", []):
        env = _read_optional(study.directory / entry["dir"] / "environment.json")
        if env is not None:
            model = _read_optional(study.directory / entry["dir"] / "eval" / "config.json") or {}
            env = {**env, "model": model.get("model_identity") or model.get("identity") or model.get("model")}
            out[entry["run_id"]] = env
    return out
