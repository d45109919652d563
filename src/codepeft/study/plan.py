"""``codepeft study --dry-run``: the plan of a study without running it.

What it prints: the runs; per data set the test problems, training examples, validation examples,
steps per epoch and planned optimizer steps; the expected time of each run from measured rates; and
the smallest difference each metric can resolve at this size (80% power, alpha 0.05), with a warning
when that is more than 5 points.

Rates: when the study directory already holds finished runs (of any earlier size) their measured
rates are used (generation seconds per test problem and training seconds per example, by method
where that method has finished, else over every train arm); otherwise ``REFERENCE_RATES``, measured
for smollm2-135m on CoNaLa by the default study recorded in docs/study.md (idle-machine
equivalents). Other models have no reference rate and get no time estimate until one of their runs
has finished. The time printed is what is left: finished runs count nothing, a started one in full.

Resolution: once the study holds finished arms and zero-shot, from the spread of their per-problem
differences (as the report computes it); before that from the pilot.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codepeft.study.evidence import WARN_POINTS, plan_resolution, point, resolution
from codepeft.study.results import (
    BASELINE_METHOD,
    Study,
    baseline_runs,
    baseline_scores,
    load_study_dir,
    seed_mean_scores,
)
from codepeft.study.runs import STUDY_INDEX, RunSpec, read_run_state, short_dataset, short_model

#: Estimated idle 2-core rates of smollm2-135m on CoNaLa (docs/study.md): seconds per generated test
#: problem by method ("train" for any fine-tuned arm), per training example (forward and backward,
#: max_length 128), per validation example, and to load the model once. Measured as single-thread CPU
#: seconds of the default study's runs on a shared machine (2026-12-02), divided by 1.7 for two threads.
REFERENCE_RATES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "generate": {"zero-shot": 0.7, "icl": 1.3, "rag": 1.3, "train": 0.5},
        "train_example": 0.25,
        "validate_example": 0.05,
        "load": 10.0,
        "source": "reference rates (docs/study.md)",
    },
}


@dataclass
class DataPlan:
    dataset: str
    test: int
    train: int | None = None
    validation: int | None = None
    steps: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # arm -> (per epoch, planned, evals)


def _training(spec: RunSpec) -> dict[str, Any]:
    """A train arm's settings as a mapping (the study hands over validated ``TrainSettings``)."""
    training: Any = spec.training
    if training is None:
        return {}
    return training.model_dump() if hasattr(training, "model_dump") else dict(training)


def _sizes(spec: RunSpec, data_dir: Path | None) -> tuple[int, int]:
    """Training and validation examples a train arm of ``spec`` will use (as the training loop chooses them)."""
    settings = _training(spec)
    task, ds = spec.dataset.task, spec.dataset.spec
    train = len(task.load(ds.train_split))
    if ds.validation_split or "validation" in task.splits:
        validation = len(task.load(ds.validation_split or "validation"))
    else:
        validation = max(1, int(train * settings.get("val_fraction", 0.1)))
        train -= validation
    if settings.get("train_limit"):
        train = min(train, settings["train_limit"])
    if settings.get("val_limit"):
        validation = min(validation, settings["val_limit"])
    return train, validation


def data_plans(runs: list[RunSpec], data_dir: Path | None) -> dict[str, DataPlan]:
    plans: dict[str, DataPlan] = {}
    for spec in runs:
        name = spec.dataset.spec.task
        plan = plans.setdefault(name, DataPlan(name, spec.dataset.test_count))
        if spec.kind != "train" or spec.arm in plan.steps:
            continue
        plan.train, plan.validation = _sizes(spec, data_dir)
        settings = _training(spec)
        per_epoch = max(1, math.ceil(plan.train / (settings.get("batch_size", 8) * settings.get("grad_accum", 1))))
        planned = max(1, math.ceil(per_epoch * settings.get("epochs", 1.0)))
        if settings.get("max_steps"):
            planned = min(planned, settings["max_steps"])
        every = settings.get("eval_every") or max(1, per_epoch // settings.get("evals_per_epoch", 4))
        plan.steps[spec.arm] = (per_epoch, planned, math.ceil(planned / min(every, planned)) + 1)
    return plans


def existing_study(study_dir: Path) -> Study | None:
    """The study already in ``study_dir`` (None when it holds none yet)."""
    return load_study_dir(study_dir) if (study_dir / STUDY_INDEX).exists() else None


def measured_rates(study: Study | None) -> dict[str, dict[str, Any]]:
    """Rates by model from the finished runs of ``study`` (none when there is no study yet)."""
    if study is None:
        return {}
    by_model: dict[str, dict[str, list[float]]] = {}
    for row in study.rows:
        # a timing of 0 is a measurement (a fast fake or a rounded sub-millisecond stage), not a missing one
        if row["status"] != "done" or not row.get("n") or row.get("generation_seconds") is None:
            continue
        rates = by_model.setdefault(row["model"], {})
        # train arms differ (DoRA trains at 1.5x LoRA's time, prefix tuning cannot generate on vLLM): by
        # method where measured, and pooled over train arms for the methods not yet run
        keys = [row["method"], "train"] if row["kind"] == "train" else [row["method"]]
        for key in keys:
            rates.setdefault(f"generate:{key}", []).append(row["generation_seconds"] / row["n"])
        examples = (row.get("train_steps") or 0) * _batch(study.index, row["arm"])
        if row["kind"] == "train" and examples and row.get("train_seconds"):
            for key in keys:
                rates.setdefault(f"train:{key}", []).append(row["train_seconds"] / examples)
    out: dict[str, dict[str, Any]] = {}
    for model, rates in by_model.items():
        medians = {k: statistics.median(v) for k, v in rates.items()}
        generate = {k.split(":", 1)[1]: v for k, v in medians.items() if k.startswith("generate:")}
        trained = {k.split(":", 1)[1]: v for k, v in medians.items() if k.startswith("train:")}
        out[model] = {"generate": generate, "train_example": trained.pop("train", 0.0),
                      "train_example_by_method": trained, "validate_example": 0.0, "load": 0.0,
                      "source": f"measured in {study.directory}"}
    return out


def _batch(index: dict[str, Any], arm: str) -> int:
    config = index.get("config", {})
    merged = {**config.get("training", {}), **config.get("arms", {}).get(arm, {}).get("train", {})}
    return int(merged.get("batch_size", 8)) * int(merged.get("grad_accum", 1))


def expected_seconds(spec: RunSpec, plan: DataPlan, rates: dict[str, Any] | None) -> float | None:
    if rates is None:
        return None
    key = "train" if spec.kind == "train" else spec.method
    generate = (rates["generate"].get(spec.method) or rates["generate"].get(key)
                or (max(rates["generate"].values()) if rates["generate"] else None))
    if generate is None:
        return None
    seconds = rates["load"] + generate * plan.test
    if spec.kind == "train" and spec.arm in plan.steps:
        _, planned, evals = plan.steps[spec.arm]
        settings = _training(spec)
        examples = planned * settings.get("batch_size", 8) * settings.get("grad_accum", 1)
        per_example = rates.get("train_example_by_method", {}).get(spec.method) or rates["train_example"]
        seconds += rates["load"] + per_example * examples
        seconds += rates["validate_example"] * (plan.validation or 0) * evals
    return seconds


def describe(runs: list[RunSpec], study_dir: Path, data_dir: Path | None) -> list[str]:
    """The plan as printable lines (see the module docstring)."""
    plans = data_plans(runs, data_dir)
    existing = existing_study(study_dir)
    measured = measured_rates(existing)
    models = list(dict.fromkeys(r.model for r in runs))
    arms = list(dict.fromkeys(r.arm for r in runs))
    seeds = sorted({r.seed for r in runs})
    lines = [f"plan: {len(runs)} runs = {len(models)} model(s) x {len(plans)} data set(s) x {len(arms)} arm(s) "
             f"x {len(seeds)} seed(s), into {study_dir}"]
    for plan in plans.values():
        text = f"data {short_dataset(plan.dataset)}: {plan.test} test problems"
        if plan.train is not None:
            text += f"; training on {plan.train} examples, validating on {plan.validation}"
        lines.append(text)
        for arm, (per_epoch, planned, evals) in plan.steps.items():
            lines.append(f"  {arm}: {per_epoch} steps per epoch, {planned} planned (early stopping may end sooner), "
                         f"{evals} validations")
    total, unknown = 0.0, []
    for spec in runs:
        rates = measured.get(spec.model) or REFERENCE_RATES.get(short_model(spec.model))
        seconds = expected_seconds(spec, plans[spec.dataset.spec.task], rates)
        state = run_state(study_dir / "runs" / spec.dirname)
        if seconds is None:
            unknown.append(spec.label)
        else:
            total += 0.0 if state == "done" else seconds  # a partial run counts in full: an upper bound
        bound = "up to " if spec.kind == "train" else ""  # every planned step; early stopping may end sooner
        when = f"{bound}~{_minutes(seconds)}" if seconds is not None else "time unknown"
        source = f" ({rates['source']})" if rates and seconds is not None else ""
        lines.append(f"run {spec.label}  ({state})  {when}{source}  {study_dir / 'runs' / spec.dirname}")
    left = sum(1 for spec in runs if run_state(study_dir / "runs" / spec.dirname) != "done")
    lines.append(f"expected time left: ~{_minutes(total)} for {left} of {len(runs)} runs on 2 idle CPU cores, "
                 "train runs at all their planned steps"
                 + (f" (plus {len(unknown)} runs without a measured rate)" if unknown else ""))
    lines += resolution_lines(runs, observed_spreads(existing))
    return lines


def run_state(run_dir: Path) -> str:
    """``done``, ``new``, or what a started run will resume (``resumes: training``, ``resumes: failed``)."""
    state = read_run_state(run_dir)
    if state is None:
        return "new"
    status = state.get("status")
    return "done" if status == "done" else f"resumes: {status}"


def observed_spreads(study: Study | None) -> dict[tuple[str, str, str], tuple[float, int]]:
    """(model, data set, metric) -> (median sd of per-problem differences vs zero-shot, arms it is over),
    paired as the report pairs them (``results.summarize``) but without its bootstrap."""
    if study is None:
        return {}
    baselines = baseline_runs(study)
    arms: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in study.rows:
        if row["status"] == "done" and row["method"] != BASELINE_METHOD:
            arms.setdefault((row["model"], row["dataset"], row["arm"]), []).append(row)
    sds: dict[tuple[str, str, str], list[float]] = {}
    for (model, dataset, _), runs in arms.items():
        for metric in dict.fromkeys(m for r in runs for m in study.per_problem.get(r["run_id"], {})):
            scores = seed_mean_scores(study, runs, metric)
            base = baseline_scores(study, baselines, runs, metric)
            shared = [p for p in scores if p in base]
            if len(shared) > 1:
                sds.setdefault((model, dataset, metric), []).append(
                    statistics.stdev(scores[p] - base[p] for p in shared))
    return {key: (statistics.median(values), len(values)) for key, values in sds.items()}


def resolution_lines(runs: list[RunSpec], observed: dict[tuple[str, str, str], tuple[float, int]] | None = None
                     ) -> list[str]:
    """Each data set's resolvable difference per metric: from ``observed`` spreads where the study has
    them (``observed_spreads``), else from the pilot's."""
    lines: list[str] = []
    seen: set[str] = set()
    for spec in runs:
        plan = spec.dataset
        if plan.spec.task in seen:
            continue
        seen.add(plan.spec.task)
        metrics = _metric_names(plan.metrics, plan.primary_metric)
        items = plan_resolution(metrics, plan.test_count)
        for i, item in enumerate(items):
            found = (observed or {}).get((spec.model, plan.spec.task, item["metric"]))
            if found:
                items[i] = {"metric": item["metric"], **resolution(
                    item["metric"], plan.test_count, found[0],
                    f"median over this study's {found[1]} finished arms vs zero-shot")}
        for item in items:
            if not math.isfinite(item["mde"]):
                continue
            digits = 3 if item["metric"].startswith("codebleu") else 1
            unit = "" if item["metric"].startswith("codebleu") else " points"
            lines.append(f"resolves on {short_dataset(plan.spec.task)} {item['metric']}: differences of "
                         f"{item['mde']:.{digits}f}{unit} or more (80% power, alpha 0.05, paired; sd of per-problem "
                         f"differences {item['sd']:.3g} from the {item['sd_source']})")
            if not item["resolves_5_points"]:
                smallest = WARN_POINTS * point(item["metric"])
                lines.append(f"warning: {short_dataset(plan.spec.task)} with {plan.test_count} test problems cannot "
                             f"resolve {item['metric']} differences smaller than {smallest:g}"
                             f"{'' if item['metric'].startswith('codebleu') else ' points'}; about "
                             f"{_needed(item)} problems would")
    return lines


def _needed(item: dict[str, Any]) -> int:
    from codepeft.study.stats import problems_needed

    return problems_needed(item["sd"], WARN_POINTS * point(item["metric"]))


def _metric_names(families: list[str], primary: str) -> list[str]:
    names = {"em": ["em@1"], "codebleu": ["codebleu"], "bleu": ["bleu", "chrf"], "passk": ["pass@1"]}
    found = [name for family in families for name in names.get(family, [])]
    return [primary, *[m for m in found if m != primary]]


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
