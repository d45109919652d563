"""The "Findings" paragraph at the top of both reports: what the study says, in plain words.

Per (data set, model): which arm is best on the primary metric and by how much against zero-shot
(the per-problem difference with its 95% interval and Holm-adjusted p), at what cost; whether the
best beats the runner-up and every other arm; the planned comparisons; which arms do not differ from
zero-shot; the smallest difference the study can resolve at its size (with a warning above 5
points); how far the seed alone moved an arm run on several seeds, and which resolved comparisons are no
larger than that; and the train arms that had not converged. Every number comes from ``results.json``'s summary.
"""

from __future__ import annotations

import math
from typing import Any

from codepeft.report.content import (
    Panel,
    between_arms,
    difference_text,
    digits_for,
    mde_of,
    number,
    p_text,
    params_text,
)
from codepeft.study.evidence import WARN_POINTS
from codepeft.study.results import BASELINE_METHOD

SIGNIFICANT = 0.05


def _significant(test: dict[str, Any] | None) -> bool:
    p = (test or {}).get("p_holm", (test or {}).get("p_value"))
    return isinstance(p, int | float) and not math.isnan(p) and p < SIGNIFICANT


def _cost(entry: dict[str, Any]) -> str:
    costs = entry["costs"]
    seconds = costs.get("total_seconds")
    text = f"{number(seconds, 0)} s in all" if isinstance(seconds, int | float) else "unknown time"
    if entry["kind"] == "train":
        text = f"{params_text(entry)} trainable parameters, {text}"
    elif isinstance(costs.get("prompt_tokens_mean"), int | float):
        text = f"{number(costs['prompt_tokens_mean'], 0)} prompt tokens per problem, {text}"
    return text


def _verdict(test: dict[str, Any], digits: int) -> str:
    """"resolved", or "not resolved" with the difference that comparison could have resolved."""
    if _significant(test):
        return "resolved"
    mde = mde_of(test)
    return "not resolved" + (f"; it resolves {number(mde, digits)}" if mde is not None else "")


def _mde_range(panel: Panel) -> tuple[float, float] | None:
    """Smallest and largest resolvable difference over the panel's comparisons on its primary metric."""
    tests = [(e["metrics"].get(panel.primary) or {}).get("vs_zero_shot") for e in panel.entries]
    tests += [test for _, test in between_arms(panel)]
    found = [m for m in (mde_of(t) for t in tests if t) if m is not None]
    return (min(found), max(found)) if found else None


def _seed_spread_findings(panel: Panel, digits: int) -> str | None:
    """How far the seed alone moved an arm, and the resolved comparisons no larger than that.

    A single-seed arm's interval covers the sampling of test problems, not its training seed; where
    another arm of the same kind has seeds, its widest seed-to-seed difference is the study's measure
    of that missing term, and a "resolved" difference below it may be the seed's, not the method's.
    """
    metric = panel.primary
    spreads = [(e, e["metrics"][metric]["seed_spread"]) for e in panel.entries
               if (e["metrics"].get(metric) or {}).get("seed_spread")]
    if not spreads:
        return None
    widest_entry, widest = max(spreads, key=lambda item: abs(item[1]["difference"]))
    size = abs(widest["difference"])
    unit = "" if metric.startswith("codebleu") else " points"
    high_seed, low_seed = widest["seeds"]
    text = (f"The seed alone moved {widest_entry['arm']} by {difference_text(widest, digits)}{unit} on {metric} "
            f"(seed {high_seed} over seed {low_seed}, p={widest['p_value']:.2g} unadjusted); arms run on one seed "
            f"have no seed term in their intervals, so a difference under {number(size, digits)}{unit} involving a "
            f"{widest_entry['kind']} arm may be the seed's, not the method's.")
    kinds = {e["arm"]: e["kind"] for e in panel.entries}
    tests = [(e["arm"], (e["metrics"].get(metric) or {}).get("vs_zero_shot")) for e in panel.entries]
    tests += between_arms(panel)
    within = [f"{arm} vs {test.get('arm') or BASELINE_METHOD} ({test['difference']:+.{digits}f})"
              for arm, test in tests
              if test and _significant(test) and abs(test["difference"]) <= size
              and widest_entry["kind"] in (kinds.get(arm), kinds.get(test.get("arm") or BASELINE_METHOD))]
    if within:
        text += f" Resolved, but within that: {'; '.join(within)}."
    return text


def panel_findings(panel: Panel) -> str:
    metric, digits = panel.primary, digits_for(panel.primary)
    ranked = [e for e in panel.entries if isinstance(e["metrics"].get(metric, {}).get("mean"), int | float)]
    if not ranked:
        return f"{panel.title}: no arm finished, nothing to compare."
    best, result = ranked[0], ranked[0]["metrics"][metric]
    zero = next((e for e in ranked if e["method"] == BASELINE_METHOD), None)
    parts = [f"{panel.title}: **{best['arm']}** is best on {metric} ({number(result['mean'], digits)}"]
    test = result.get("vs_zero_shot")
    if zero is not None and best is not zero and test:
        verdict = "a resolved gain" if _significant(test) and test["difference"] > 0 else "not resolved"
        parts[0] += (f" vs zero-shot {number(zero['metrics'][metric]['mean'], digits)}; per problem "
                     f"{difference_text(test, digits)}, {p_text(test)}: {verdict})")
    else:
        parts[0] += ")"
    parts[0] += f", at {_cost(best)}."
    runner = result.get("vs_runner_up")
    if runner:
        parts.append(f"Over the runner-up {runner['arm']}: {difference_text(runner, digits)} "
                     f"({p_text(runner)}, {_verdict(runner, digits)}).")
    others = [(arm, test) for arm, test in between_arms(panel) if test is not runner]
    against = [f"{test['arm']} {difference_text(test, digits)} ({p_text(test)}, {_verdict(test, digits)})"
               for arm, test in others if arm == best["arm"]]
    if against:
        parts.append(f"Against the other arms: {'; '.join(against)}.")
    planned = [f"{arm} vs {test['arm']} {difference_text(test, digits)} ({p_text(test)}, {_verdict(test, digits)})"
               for arm, test in others if arm != best["arm"]]
    if planned:
        parts.append(f"Planned comparisons: {'; '.join(planned)}.")
    same = [e["arm"] for e in ranked if e is not best and e["method"] != BASELINE_METHOD
            and not _significant(e["metrics"][metric].get("vs_zero_shot"))]
    if same:
        parts.append(f"Not resolved from zero-shot: {', '.join(same)}.")
    resolution = result.get("resolution") or {}
    if isinstance(resolution.get("mde"), int | float) and not math.isnan(resolution["mde"]):
        unit = "" if metric.startswith("codebleu") else " points"
        spread = _mde_range(panel)
        by_comparison = (f"; comparison by comparison, from its own spread, {number(spread[0], digits)} to "
                         f"{number(spread[1], digits)}" if spread and number(spread[0], digits) !=
                         number(spread[1], digits) else "")
        parts.append(f"With {resolution['n']} test problems the study resolves differences of about "
                     f"{number(resolution['mde'], digits)}{unit} on {metric} (80% power, alpha 0.05; the median "
                     f"over arms vs zero-shot{by_comparison}); smaller ones are not resolved.")
        if not resolution.get("resolves_5_points"):
            parts.append(f"**Warning: this study cannot resolve differences smaller than {WARN_POINTS:g} points; "
                         "run more test problems (docs/study.md).**")
    seed_note = _seed_spread_findings(panel, digits)
    if seed_note:
        parts.append(seed_note)
    unconverged = [e["arm"] for e in panel.entries if e["kind"] == "train" and e.get("converged") is False]
    if unconverged:
        parts.append(f"Not converged (validation loss still falling at the end of the budget): "
                     f"{', '.join(unconverged)}; more epochs may change their scores.")
    return " ".join(parts)


def findings(panels: list[Panel]) -> list[str]:
    """One plain-words paragraph per panel (Markdown bold marks the best arm and warnings)."""
    return [panel_findings(panel) for panel in panels]
