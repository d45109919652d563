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
