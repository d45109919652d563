"""Arm-vs-arm comparisons: the best arm against every other, planned pairs, one Holm family per metric."""

from __future__ import annotations

import pytest

from codepeft.errors import CodepeftError
from codepeft.study.evidence import add_comparisons
from codepeft.study.stats import holm, paired_test

N = 60
# per-problem pass@1 of each arm on N problems: lora solves 30, ia3 24, icl 12, rag 10, zero-shot 6
SOLVED = {"lora": 30, "ia3": 24, "icl": 12, "rag": 10, "zero-shot": 6}
KIND = {"lora": "train", "ia3": "train", "icl": "prompt", "rag": "prompt", "zero-shot": "prompt"}


def scores(arm: str) -> dict[str, float]:
    return {f"p{i}": 100.0 * (i < SOLVED[arm]) for i in range(N)}


def summary_and_problems() -> tuple[list[dict], dict]:
    problems = {("m", "d", arm): {"pass@1": scores(arm)} for arm in SOLVED}
    summary = []
    for arm in SOLVED:
        result = {"mean": 100.0 * SOLVED[arm] / N, "problems": N}
        if arm != "zero-shot":
            mine, base = list(scores(arm).values()), list(scores("zero-shot").values())
            result["vs_zero_shot"] = paired_test(mine, base).to_dict()
        summary.append({"model": "m", "dataset": "d", "arm": arm, "method": arm, "kind": KIND[arm],
                        "primary_metric": "pass@1", "metrics": {"pass@1": result}})
    return summary, problems


def metrics_of(summary: list[dict], arm: str) -> dict:
    return next(e for e in summary if e["arm"] == arm)["metrics"]["pass@1"]


def test_best_arm_is_tested_against_every_other_arm():
    summary, problems = summary_and_problems()
    add_comparisons(summary, problems, "zero-shot")
    lora = metrics_of(summary, "lora")
    assert set(lora["vs_arms"]) == {"ia3", "icl", "rag"}  # zero-shot is its vs_zero_shot test
    assert lora["vs_arms"]["ia3"] is lora["vs_runner_up"]  # the runner-up's test is the same object
    assert lora["vs_arms"]["icl"]["difference"] == pytest.approx(100.0 * (30 - 12) / N)
    assert lora["vs_arms"]["icl"]["wins"] == 18 and lora["vs_arms"]["icl"]["losses"] == 0
    assert all("vs_arms" not in metrics_of(summary, arm) for arm in ("ia3", "icl", "rag", "zero-shot"))


def test_planned_pairs_join_one_holm_family_and_no_test_counts_twice():
    summary, problems = summary_and_problems()
    planned = [("ia3", "icl"), ("ia3", "rag"), ("lora", "icl"), ("icl", "lora"), ("rag", "zero-shot")]
    add_comparisons(summary, problems, "zero-shot", planned)
    ia3 = metrics_of(summary, "ia3")
    assert set(ia3["vs_arms"]) == {"icl", "rag"}
    assert ia3["vs_arms"]["icl"]["difference"] == pytest.approx(100.0 * (24 - 12) / N)
    # the family: 4 arms vs zero-shot, lora vs ia3/icl/rag, ia3 vs icl/rag (lora-icl once, rag-zero-shot is rag's)
    tests = [metrics_of(summary, a)["vs_zero_shot"] for a in ("lora", "ia3", "icl", "rag")]
    tests += [*metrics_of(summary, "lora")["vs_arms"].values(), *ia3["vs_arms"].values()]
    assert {t["comparisons"] for t in tests} == {9}
    expected = holm([t["p_value"] for t in tests])
    assert [t["p_holm"] for t in tests] == pytest.approx(expected)


def test_planned_pairs_must_name_arms_of_the_study(tmp_path):
    from codepeft.study.config import load_study

    path = tmp_path / "study.yaml"
    path.write_text("models: [m]\ndatasets: [conala]\narms: [zero-shot, lora, icl]\n"
                    "comparisons: [[lora, rag]]\n")
    with pytest.raises(CodepeftError, match=r"comparisons names 'rag', which is not one of the arms .* drop the pair"):
        load_study(path)
    path.write_text("models: [m]\ndatasets: [conala]\narms: [zero-shot, lora, icl]\ncomparisons: [[lora, lora]]\n")
    with pytest.raises(CodepeftError, match="compares 'lora' with itself"):
        load_study(path)
    path.write_text("models: [m]\ndatasets: [conala]\narms: [zero-shot, lora, icl]\ncomparisons: [[lora, icl]]\n")
    assert load_study(path).comparisons == [("lora", "icl")]


def test_each_comparison_states_the_difference_it_could_resolve():
    """Arms whose answers move together are compared more finely than the study's median MDE says."""
    from codepeft.report.content import build_panels
    from codepeft.report.findings import panel_findings
    from codepeft.study.stats import min_detectable_difference

    test = paired_test(list(scores("lora").values()), list(scores("ia3").values()))
    assert test.mde == pytest.approx(min_detectable_difference(test.sd, N))
    assert test.to_dict()["mde"] == pytest.approx(2.8016 * test.sd / N**0.5, rel=1e-4)

    summary, problems = summary_and_problems()
    for entry in summary:
        entry.update(costs={}, done=1, seeds=1, failed=0)
    add_comparisons(summary, problems, "zero-shot", [("icl", "rag")])
    panel = build_panels(summary)[0]
    assert panel.PAIR_COLUMNS[5] == "resolvable Δ"
    rows = {row[0]: row for row in panel.pair_rows}
    icl_rag = metrics_of(summary, "icl")["vs_arms"]["rag"]
    assert rows["icl vs rag"][5] == f"{icl_rag['mde']:.1f}" and rows["icl vs rag"][6] == "not resolved"
    text = panel_findings(panel)
    assert "icl vs rag +3.3 [" in text
    assert f"not resolved; it resolves {icl_rag['mde']:.1f})" in text
    mdes = [t["mde"] for t in (metrics_of(summary, a)["vs_zero_shot"] for a in ("lora", "ia3", "icl", "rag"))]
    mdes += [t["mde"] for t in metrics_of(summary, "lora")["vs_arms"].values()] + [icl_rag["mde"]]
    assert f"from its own spread, {min(mdes):.1f} to {max(mdes):.1f})" in text


def test_resolved_comparisons_no_larger_than_a_seed_spread_are_named():
    """A seed spread measured on a train arm flags resolved differences involving a train arm that are no
    larger; comparisons between prompt arms are not flagged by it."""
    from codepeft.report.content import build_panels
    from codepeft.report.findings import panel_findings

    summary, problems = summary_and_problems()
    for entry in summary:
        entry.update(costs={}, done=1, seeds=1, failed=0)
    lora = metrics_of(summary, "lora")
    lora["seed_spread"] = {**paired_test([100.0] * 45 + [0.0] * 15, [0.0] * 60).to_dict(), "seeds": [1, 0]}
    problems[("m", "d", "icl")]["pass@1"] = scores("ia3")  # icl now as far above zero-shot as ia3
    icl = metrics_of(summary, "icl")
    icl.update(mean=40.0, vs_zero_shot=paired_test(list(scores("ia3").values()),
                                                    list(scores("zero-shot").values())).to_dict())
    add_comparisons(summary, problems, "zero-shot")
    text = panel_findings(build_panels(summary)[0])
    assert "The seed alone moved lora by +75.0 [" in text and "(seed 1 over seed 0, p=" in text
    within = text.split("Resolved, but within that: ")[1]
    assert "lora vs zero-shot (+40.0)" in within and "ia3 vs zero-shot (+30.0)" in within
    assert metrics_of(summary, "icl")["vs_zero_shot"]["p_holm"] < 0.05
    assert "icl vs zero-shot" not in within  # two prompt arms: a train arm's seed says nothing about them
