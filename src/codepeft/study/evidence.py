"""What a study can and cannot resolve: paired comparisons with Holm's correction, and power.

Comparisons, on the per-problem scores of each metric (averaged over seeds):

- every arm against zero-shot on the same data set and model;
- on the primary metric, the best arm (by its headline) against every other arm (``vs_runner_up``
  is the one against the runner-up), and the pairs the study names in ``comparisons`` (planned
  comparisons, e.g. each fine-tuning arm against ICL and RAG). Each pair's test sits on its first
  arm's entry under ``vs_arms[other arm]`` (difference: first minus other), once per pair.

Each metric's comparisons over the whole study are one family: Holm's step-down correction keeps the
chance of any false "significant" in it at alpha (``p_holm`` beside each raw ``p_value``).

Resolution: the minimum detectable difference (MDE) of each (data set, model, metric) at the study's
number of test problems, 80% power and alpha 0.05, from the standard deviation of the per-problem
differences against zero-shot that the study itself observed (their median over arms). Before a study
has run (``codepeft study --dry-run``) the standard deviations come from ``PILOT_SD``, measured on the
pilot recorded in docs/study.md; for 0/1 metrics it is ``sqrt(d)`` with ``d`` the pilot's share of
discordant problems, which bounds the true value from above (see ``codepeft.study.stats``).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from codepeft.study.stats import holm, min_detectable_difference, paired_test

ALPHA = 0.05
POWER = 0.8
WARN_POINTS = 5.0  # a study that cannot resolve 5 points says so

#: Standard deviation of per-problem paired differences (arm minus zero-shot), from the pilot in
#: docs/study.md (SmolLM2-135M-Instruct on CoNaLa, 160 test problems; HumanEval from the earlier
#: default study). 0/1 metrics: sqrt(share of discordant problems). Used only before a study has data.
PILOT_SD: dict[str, float] = {
    "codebleu": 0.17,
    "bleu": 22.0,
    "chrf": 18.0,
    "em@1": 100 * math.sqrt(0.05),
    "pass@1": 100 * math.sqrt(0.25),
}


def point(metric: str) -> float:
    """One point of a metric: a percentage point, or 0.01 for CodeBLEU (a fraction in [0, 1])."""
    return 0.01 if metric.startswith("codebleu") else 1.0


def pilot_sd(metric: str) -> float | None:
    if metric in PILOT_SD:
        return PILOT_SD[metric]
    family = metric.split("@")[0]
    matches = [v for k, v in PILOT_SD.items() if k.split("@")[0] == family]
    return matches[0] if matches else None


def resolution(metric: str, n: int, sd: float | None, source: str) -> dict[str, Any]:
    """The MDE of a paired comparison on ``n`` problems, and whether it is finer than ``WARN_POINTS``."""
    mde = min_detectable_difference(sd, n, ALPHA, POWER) if sd is not None and n > 0 else float("nan")
    resolves = math.isfinite(mde) and mde <= WARN_POINTS * point(metric) + 1e-12
    return {"n": n, "sd": sd, "sd_source": source, "mde": mde, "alpha": ALPHA, "power": POWER,
            "points": mde / point(metric) if math.isfinite(mde) else None, "resolves_5_points": resolves}


def _shared(a: dict[str, float], b: dict[str, float]) -> tuple[list[float], list[float]]:
    ids = [i for i in a if i in b]
    return [a[i] for i in ids], [b[i] for i in ids]


def add_comparisons(summary: list[dict[str, Any]], problems: dict[tuple[str, str, str], dict[str, dict[str, float]]],
                    baseline: str, pairs: Sequence[Sequence[str]] = ()) -> None:
    """Best vs every other arm, the planned ``pairs``, Holm-adjusted p-values and each metric's resolution,
    added to ``summary`` in place."""
    panels: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in summary:
        panels[(entry["model"], entry["dataset"])].append(entry)
    repeats: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for (model, dataset), entries in panels.items():
        repeat = _runner_up(entries, problems.get, model, dataset, baseline)
        if repeat:
            repeats.append(repeat)
        _between_arms(entries, problems.get, model, dataset, baseline, pairs)
        _resolution(entries, baseline)
    _holm(summary)
    for runner, same in repeats:  # best vs runner-up where one of them is zero-shot: the same comparison
        runner["p_holm"], runner["comparisons"] = same.get("p_holm"), same.get("comparisons")


def _runner_up(entries: list[dict[str, Any]], problems: Any, model: str, dataset: str,
               baseline: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Test the best arm against the runner-up on the primary metric; returns (test, the same vs-zero-shot test)."""
    primary = entries[0].get("primary_metric") or ""
    ranked = _ranked(entries, primary)
    if len(ranked) < 2:
        return None
    best, runner = ranked[0], ranked[1]
    a, b = _shared((problems((model, dataset, best["arm"])) or {}).get(primary, {}),
                   (problems((model, dataset, runner["arm"])) or {}).get(primary, {}))
    if not a:
        return None
    test = {**paired_test(a, b).to_dict(), "arm": runner["arm"]}
    best["metrics"][primary]["vs_runner_up"] = test
    if baseline not in (best["method"], runner["method"]):
        return None
    # one of the two is zero-shot: this comparison is already in the family, so it is not counted twice
    other = runner if best["method"] == baseline else best
    test["same_as_vs_zero_shot"] = True
    return test, other["metrics"][primary].get("vs_zero_shot") or {}


def _ranked(entries: list[dict[str, Any]], primary: str) -> list[dict[str, Any]]:
    """Arms with a primary score, best first."""
    scored = [e for e in entries if isinstance(e["metrics"].get(primary, {}).get("mean"), int | float)
              and not math.isnan(e["metrics"][primary]["mean"])]
    return sorted(scored, key=lambda e: -e["metrics"][primary]["mean"])


def _between_arms(entries: list[dict[str, Any]], problems: Any, model: str, dataset: str, baseline: str,
                  pairs: Sequence[Sequence[str]]) -> None:
    """The best arm against every other arm, then the planned ``pairs``, on the primary metric.

    Pairs with zero-shot are its ``vs_zero_shot`` tests already, and the best against the runner-up
    is ``vs_runner_up``: both are reused, so no comparison enters Holm's family twice."""
    primary = entries[0].get("primary_metric") or ""
    ranked = _ranked(entries, primary)
    by_arm = {e["arm"]: e for e in ranked}
    wanted = [(ranked[0]["arm"], e["arm"]) for e in ranked[1:]] + [(a, b) for a, b in pairs]
    done: set[frozenset[str]] = set()
    for first, other in wanted:
        if first not in by_arm or other not in by_arm or first == other or frozenset((first, other)) in done:
            continue
        done.add(frozenset((first, other)))
        a, b = by_arm[first], by_arm[other]
        if baseline in (a["method"], b["method"]):
            continue  # the arm's vs_zero_shot test
        result = a["metrics"][primary]
        test = (result.get("vs_runner_up") or {})
        if test.get("arm") != other:
            scores_a, scores_b = _shared((problems((model, dataset, first)) or {}).get(primary, {}),
                                         (problems((model, dataset, other)) or {}).get(primary, {}))
            if not scores_a:
                continue
            test = {**paired_test(scores_a, scores_b).to_dict(), "arm": other}
        result.setdefault("vs_arms", {})[other] = test


def _resolution(entries: list[dict[str, Any]], baseline: str) -> None:
    metrics = list(dict.fromkeys(m for e in entries for m in e["metrics"]))
    for metric in metrics:
        tests = [e["metrics"][metric].get("vs_zero_shot") or {} for e in entries
                 if e["method"] != baseline and metric in e["metrics"]]
        sds = [t["sd"] for t in tests if isinstance(t.get("sd"), int | float)]
        counts = [e["metrics"][metric].get("problems") for e in entries if e["metrics"].get(metric, {}).get("problems")]
        if not counts:
            continue
        n = min(counts)
        if sds:
            found = resolution(metric, n, statistics.median(sds), "observed (median over arms vs zero-shot)")
        else:
            found = resolution(metric, n, pilot_sd(metric), "pilot (docs/study.md)")
        for entry in entries:
            if metric in entry["metrics"]:
                entry["metrics"][metric]["resolution"] = found


def _holm(summary: list[dict[str, Any]]) -> None:
    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in summary:
        for metric, result in entry["metrics"].items():
            tests = [result.get("vs_zero_shot"), result.get("vs_runner_up"), *(result.get("vs_arms") or {}).values()]
            for test in tests:
                if (test and not test.get("same_as_vs_zero_shot") and isinstance(test.get("p_value"), int | float)
                        and not math.isnan(test["p_value"]) and all(test is not t for t in families[metric])):
                    families[metric].append(test)
    for tests in families.values():
        for test, adjusted in zip(tests, holm([t["p_value"] for t in tests]), strict=True):
            test["p_holm"] = adjusted
            test["comparisons"] = len(tests)


def plan_resolution(metrics: Sequence[str], n: int) -> list[dict[str, Any]]:
    """Each metric's resolution at ``n`` test problems from the pilot's standard deviations (before running)."""
    return [{"metric": m, **resolution(m, n, pilot_sd(m), "pilot (docs/study.md)")} for m in metrics]
