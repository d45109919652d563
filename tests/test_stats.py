"""Confidence intervals over seeds and problems, the paired test against zero-shot, the Pareto front."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from codepeft.study.results import per_problem_scores
from codepeft.study.stats import bootstrap_interval, paired_test, pareto_front, seed_interval


def test_seed_interval_is_student_t():
    values = [10.0, 12.0, 14.0]
    interval = seed_interval(values)
    half = scipy_stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert interval.mean == pytest.approx(12.0)
    assert interval.low == pytest.approx(12.0 - half) and interval.high == pytest.approx(12.0 + half)
    assert interval.n == 3


def test_single_seed_has_no_interval():
    interval = seed_interval([7.0])
    assert interval.mean == 7.0 and interval.low is None and interval.high is None


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_problems():
    rng = np.random.default_rng(1)
    small = rng.binomial(1, 0.4, size=20).astype(float)
    large = rng.binomial(1, 0.4, size=500).astype(float)
    small_ci, large_ci = bootstrap_interval(small), bootstrap_interval(large)
    for ci, data in ((small_ci, small), (large_ci, large)):
        assert ci.low <= data.mean() <= ci.high
    assert (large_ci.high - large_ci.low) < (small_ci.high - small_ci.low)
    assert bootstrap_interval(small).low == small_ci.low  # seeded: reproducible


def test_bootstrap_of_constant_scores_is_the_point():
    interval = bootstrap_interval([0.0] * 10)
    assert (interval.low, interval.high) == (0.0, 0.0)


def test_paired_test_exact_sign_test_on_binary_scores():
    arm = [1, 1, 1, 1, 1, 1, 0, 1]
    base = [0, 0, 0, 0, 0, 0, 0, 1]
    result = paired_test(arm, base)
    # 6 discordant problems, all won: exact two-sided p = 2 * 0.5**6
    assert result.p_value == pytest.approx(2 * 0.5**6)
    assert (result.wins, result.losses, result.n) == (6, 0, 8)
    assert result.difference == pytest.approx(6 / 8)


def test_paired_test_identical_scores():
    result = paired_test([1, 0, 1], [1, 0, 1])
    assert result.p_value == 1.0 and result.difference == 0.0


def test_paired_test_no_difference_is_not_significant():
    rng = np.random.default_rng(0)
    a = rng.binomial(1, 0.5, 200).astype(float)
    b = rng.permutation(a)
    assert paired_test(a, b).p_value > 0.05


def test_paired_test_needs_same_problems():
    with pytest.raises(ValueError):
        paired_test([1, 0], [1])


def test_pareto_front_minimizes_cost_and_maximizes_score():
    points = [(0, 10.0), (100, 30.0), (200, 25.0), (300, 40.0), (0, 5.0), (float("nan"), 99.0)]
    assert pareto_front(points) == [0, 1, 3]


def test_per_problem_scores_from_metrics_json():
    metrics = {"em@1": 50.0, "pass@1": 50.0, "codebleu": 40.0,
               "per_example": {"id": ["a", "b"], "em": [True, False], "passed": [[True], [False]],
                               "outcomes": [[{"passed": True}], [{"passed": False}]]}}
    scores = per_problem_scores(metrics, [])
    assert scores["em@1"] == {"a": 100.0, "b": 0.0}
    assert scores["pass@1"] == {"a": 100.0, "b": 0.0}
    assert "outcomes" not in scores and "codebleu" not in scores


def test_per_problem_pass_at_k_skips_problems_without_tests():
    metrics = {"pass@1": 100.0, "per_example": {"id": ["a", "b"], "passed": [[True], None]}}
    assert per_problem_scores(metrics, []) == {"pass@1": {"a": 100.0}}


def test_holm_adjusts_step_down_and_keeps_order():
    from codepeft.study.stats import holm

    # sorted: 0.01*3=0.03, 0.02*2=0.04, 0.04*1=0.04 (monotone); given order kept
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_minimum_detectable_difference_and_problems_needed_are_inverse():
    from codepeft.study.stats import min_detectable_difference, problems_needed

    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)  # 2.80
    assert min_detectable_difference(0.2, 100) == pytest.approx(z * 0.2 / 10)
    assert problems_needed(0.2, min_detectable_difference(0.2, 100)) == 100
    # a stricter alpha needs a bigger difference
    assert min_detectable_difference(0.2, 100, alpha=0.002) > min_detectable_difference(0.2, 100)


def test_mde_of_a_binary_metric_by_simulation():
    """At the MDE from sqrt(discordance), a simulated paired 0/1 design has about 80% power; at half of it, little.

    (The formula is a normal approximation; the exact sign test on the discordant problems is a little
    more conservative, so the simulated power sits a few points below 80%.)
    """
    from codepeft.study.stats import min_detectable_difference

    rng = np.random.default_rng(0)
    n, discordant = 200, 0.2
    delta = min_detectable_difference(np.sqrt(discordant), n)

    def power(difference: float) -> float:
        hits = 0
        for _ in range(300):
            # a problem is discordant with probability d; a discordant one is won with probability (1 + diff/d) / 2
            is_disc = rng.random(n) < discordant
            won = rng.random(n) < (1 + difference / discordant) / 2
            diff = np.where(is_disc, np.where(won, 1, -1), 0)
            wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
            hits += scipy_stats.binomtest(wins, wins + losses).pvalue < 0.05
        return hits / 300

    assert 0.72 <= power(delta) <= 0.9
    assert power(delta / 2) < 0.4


def test_paired_difference_has_a_bootstrap_interval():
    rng = np.random.default_rng(3)
    base = rng.normal(0.3, 0.1, 80)
    arm = base + 0.1 + rng.normal(0, 0.05, 80)
    result = paired_test(list(arm), list(base))
    low, high = result.difference_ci
    assert low < result.difference < high and low > 0
    assert result.sd == pytest.approx(np.std(arm - base, ddof=1))
