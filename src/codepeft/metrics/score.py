"""``score_run``: read a run directory's ``generations.jsonl``, compute every metric, write ``metrics.json``.

Scoring never needs the model, so a run can be rescored at any time. Similarity metrics use each
example's first candidate; pass@k, and EM@k of sampled candidates, are estimated over all n
candidates (unbiased, as pass@k); EM@k of ranked candidates (greedy, beams) uses the first k.
Per-example results are kept under ``per_example`` (EM@1, pass/fail, and sentence-level CodeBLEU,
BLEU and chrF beside the corpus-level headline) so every metric can get bootstrap intervals and paired tests later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from codepeft.data.base import METRIC_FAMILIES, task_of_run
from codepeft.errors import CodepeftError
from codepeft.metrics.estimator import DEFAULT_KS
from codepeft.metrics.exact_match import (
    EM_RANKED,
    EM_SAMPLED,
    candidate_matches,
    em_at_k_of_matches,
    em_per_example_of_matches,
    exact_match_at_k,
)
from codepeft.metrics.passk import execute_candidates, pass_at_ks
from codepeft.metrics.similarity import bleu_chrf, bleu_chrf_per_example, codebleu, codebleu_per_example
from codepeft.rundir import CONFIG, METRICS, RunDir, read_generations, read_json
from codepeft.sandbox import choose_mode

METRIC_NAMES = METRIC_FAMILIES


def parse_metrics(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"em,bleu"`` or a list -> checked names; ``None`` means every metric that applies."""
    if spec is None:
        return None
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        raise CodepeftError(f"unknown metric {', '.join(unknown) or '(none)'}: choose from {','.join(METRIC_NAMES)}")
    return tuple(dict.fromkeys(names))


def score_run(
    run_dir: Path, *, metrics: str | Sequence[str] | None = None, ks: Sequence[int] = DEFAULT_KS,
    workers: int | None = None, timeout: float = 10.0, force: bool = False,
    on_progress: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score a run directory and write ``metrics.json``; returns the metrics.

    The task named in the run's ``config.json`` decides how: its normalisation for exact match, its
    programs for pass@k, and (``metrics=None``) its metric families (pass@k is skipped, with a note,
    when the records have no tests); naming ``passk`` explicitly for a run without tests is an error.
    """
    run = RunDir.existing(run_dir, "pass the directory `codepeft evaluate` wrote")
    requested = parse_metrics(metrics)
    if timeout <= 0:
        raise CodepeftError(f"time-out {timeout} must be positive: pass --timeout SECONDS")
    run.refuse_finished(run.has(METRICS), force, "already exists", "pass --force to rescore the run", name=METRICS)
    generations = read_generations(run.path)
    records = generations.records
    config = read_json(run / CONFIG) if run.has(CONFIG) else None
    task, task_note = task_of_run(config)
    chosen = requested or task.metrics(has_tests=True)  # pass@k without tests is skipped below, with a note
    notes: list[str] = [task_note] if task_note else []
    if generations.truncated:
        notes.append(f"the last line of generations.jsonl was truncated (killed run): scored the {len(records)} "
                     "complete records")
    result: dict[str, Any] = {"n": len(records), "truncated": generations.truncated}
    ids = [str(r["id"]) for r in records]
    per_example: dict[str, Any] = {"id": ids}
    candidates = [list(r.get("candidates") or []) for r in records]
    references = [str(r.get("reference") or "") for r in records]
    _reference_metrics(run.path, chosen, requested is not None, candidates, references, ks, task.normalize,
                       _sampled(config), result, per_example, notes)
    if "passk" in chosen:
        with_tests = [r for r in records if r.get("tests")]
        if not with_tests:
            if requested is not None:
                raise CodepeftError(f"the records in {run.path} have no tests, so pass@k cannot be computed: "
                                    "score this data set with --metrics em,codebleu,bleu")
            notes.append("pass@k skipped: the records have no tests")
        else:
            if len(with_tests) < len(records):
                notes.append(f"pass@k over the {len(with_tests)} of {len(records)} records that have tests")
            if on_start is not None:
                on_start(sum(len(r["candidates"]) for r in with_tests))
            outcomes = execute_candidates(with_tests, workers=workers, timeout=timeout, on_done=on_progress,
                                          to_program=task.program)
            passed = [[o.passed for o in sample] for sample in outcomes]
            result.update(pass_at_ks(passed, ks))
            result["samples_per_problem"] = min(len(p) for p in passed)
            result["timeout_s"] = timeout
            result["sandbox"] = choose_mode()
            by_id = dict(zip((str(r["id"]) for r in with_tests), outcomes, strict=True))
            per_example["passed"] = [[o.passed for o in by_id[i]] if i in by_id else None for i in ids]
            per_example["outcomes"] = [[o.to_dict() for o in by_id[i]] if i in by_id else None for i in ids]
            sandbox_notices = sorted({n for sample in outcomes for o in sample for n in o.notices})
            notes.extend(f"sandbox: {n}" for n in sandbox_notices)
    result["notes"] = notes
    result["per_example"] = per_example
    run.write(METRICS, result)
    return result


def run_summary(run_dir: Path, ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """Examples generated and EM@k of a run directory, by its task's normalisation (``codepeft evaluate``
    prints it; full scoring is ``score_run``). EM counts the records that have reference code."""
    config = read_json(Path(run_dir) / CONFIG)
    task, _ = task_of_run(config)
    records = read_generations(run_dir).records
    with_reference = [r for r in records if str(r.get("reference") or "").strip()]
    scores = exact_match_at_k([r["candidates"] for r in with_reference], [r["reference"] for r in with_reference],
                              ks, normalize=task.normalize, sampled=_sampled(config))
    return {"n": len(records), "with_reference": len(with_reference), **scores}


def _sampled(config: dict[str, Any] | None) -> bool:
    """Whether the run's candidates are independent samples (not ranked beams or a greedy output)."""
    generation = (config or {}).get("generation") or {}
    return generation.get("strategy") == "sample"


def _aligned(scores: list[float], kept: list[bool]) -> list[float | None]:
    """Scores of the kept records back in record order, None for the records left out."""
    values = iter(scores)
    return [next(values) if keep else None for keep in kept]


def _reference_metrics(run_dir: Path, chosen: Sequence[str], explicit: bool, candidates: list[list[str]],
                       references: list[str], ks: Sequence[int], normalize: Callable[[str], str], sampled: bool,
                       result: dict[str, Any], per_example: dict[str, Any], notes: list[str]) -> None:
    """EM, CodeBLEU and BLEU compare with a reference: records without one (problem sets that ship only
    tests) are left out of them, and a run with none is scored by pass@k alone."""
    has_reference = [bool(ref.strip()) for ref in references]
    needing = [m for m in ("em", "codebleu", "bleu") if m in chosen]
    if needing and not any(has_reference):
        if explicit:
            raise CodepeftError(f"the records in {run_dir} have no reference code, so {', '.join(needing)} cannot "
                                "be computed: score this data set with --metrics passk")
        notes.append(f"{', '.join(needing)} skipped: the records have no reference code")
        return
    if needing and not all(has_reference):
        notes.append(f"{', '.join(needing)} over the {sum(has_reference)} of {len(references)} records that have "
                     "reference code")
    kept = [i for i, keep in enumerate(has_reference) if keep]
    kept_candidates, kept_references = [candidates[i] for i in kept], [references[i] for i in kept]
    top1 = [c[0] if c else "" for c in kept_candidates]  # similarity metrics use the first candidate
    if "em" in needing:
        matches = candidate_matches(kept_candidates, kept_references, normalize)
        result.update(em_at_k_of_matches(matches, ks, sampled))
        result["em_at_k"] = EM_SAMPLED if sampled else EM_RANKED
        per_example["em"] = _aligned(em_per_example_of_matches(matches, sampled), has_reference)
    if "codebleu" in needing:
        result.update(codebleu(top1, kept_references))
        per_example["codebleu"] = _aligned(codebleu_per_example(top1, kept_references), has_reference)
    if "bleu" in needing:
        result.update(bleu_chrf(top1, kept_references))
        for name, scores in bleu_chrf_per_example(top1, kept_references).items():
            per_example[name] = _aligned(scores, has_reference)
