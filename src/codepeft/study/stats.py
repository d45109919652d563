"""Uncertainty for study results: CIs over seeds and over test problems, and paired tests against a baseline.

- Over seeds: the mean and a Student-t 95% interval (needs two or more seeds).
- Over problems: a percentile bootstrap of the mean per-problem score (``scipy.stats.bootstrap``).
- Arm vs zero-shot (and best vs runner-up): a paired sign-flip permutation test on per-problem score
  differences (``scipy.stats.permutation_test``: exact when the problems are few enough to enumerate every
  sign flip, else estimated from ``resamples`` random flips). For 0/1 scores it tests the discordant
  problems, as McNemar's test does, but by resampling, not McNemar's exact binomial. The mean difference
  gets a bootstrap interval.
- Holm's step-down correction over a family of comparisons.
- The minimum detectable difference of a paired design: ``(z_{1-alpha/2} + z_{power}) * sd_D / sqrt(n)``
  with ``sd_D`` the standard deviation of the per-problem differences (normal approximation). For a 0/1
  metric the difference is -1, 0 or +1, so ``sd_D**2 = d - delta**2 <= d`` with ``d`` the share of
  discordant problems: ``sqrt(d)`` is a conservative ``sd_D``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass
class Interval:
    mean: float
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def seed_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean over seeds with a t-based interval; no interval for a single seed."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if data.size == 0:
        return Interval(float("nan"), None, None, 0)
    mean = float(data.mean())
    if data.size < 2:
        return Interval(mean, None, None, int(data.size))
    half = float(stats.t.ppf(0.5 + confidence / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return Interval(mean, mean - half, mean + half, int(data.size))


def bootstrap_interval(
    per_problem: Sequence[float], confidence: float = CONFIDENCE, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of the mean score over test problems."""
    data = np.asarray(per_problem, dtype=float)
    if data.size == 0:
        return Interval(float("nan"), None, None, 0)
    mean = float(data.mean())
    if data.size < 2 or np.all(data == data[0]):
        # Every resample has the same mean: the interval is the point (scipy would warn and return nan).
        return Interval(mean, mean, mean, int(data.size))
    result = stats.bootstrap(
        (data,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Interval(mean, float(result.confidence_interval.low), float(result.confidence_interval.high), int(data.size))


@dataclass
class PairedTest:
    difference: float  # mean of (arm - baseline) over the shared problems
    p_value: float
    n: int
    wins: int  # problems where the arm scored higher
    losses: int
    difference_ci: tuple[float | None, float | None] = (None, None)  # bootstrap 95% interval of the difference
    sd: float | None = None  # standard deviation of the per-problem differences (for power)

    @property
    def mde(self) -> float | None:
        """The smallest difference this comparison detects with 80% power at alpha 0.05 (before Holm),
        from its own spread: arms whose answers move together are compared more finely than the
        study's median suggests."""
        if not self.sd or self.n < 2:  # no spread (every problem moved alike): the normal approximation says nothing
            return None
        return min_detectable_difference(self.sd, self.n)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["difference_ci"] = list(self.difference_ci)
        out["mde"] = self.mde
        return out


def paired_test(arm: Sequence[float], baseline: Sequence[float], resamples: int = 9999, seed: int = 0) -> PairedTest:
    """Two-sided paired permutation test of the mean per-problem difference (same problems, same order)."""
    a = np.asarray(arm, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired scores need the same problems on both sides")
    diff = a - b
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    if diff.size == 0:
        return PairedTest(float("nan"), float("nan"), 0, 0, 0)
    sd = float(diff.std(ddof=1)) if diff.size > 1 else None
    if not np.any(diff):
        return PairedTest(0.0, 1.0, int(diff.size), 0, 0, (0.0, 0.0), sd)
    result = stats.permutation_test(
        (a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed),
    )
    boot = bootstrap_interval(diff, seed=seed)
    return PairedTest(float(diff.mean()), float(min(1.0, result.pvalue)), int(diff.size), wins, losses,
                      (boot.low, boot.high), sd)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): controls the family-wise error rate."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def min_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean paired difference a two-sided test at ``alpha`` detects with ``power`` on ``n`` problems."""
    if n < 1 or not math.isfinite(sd):
        return float("nan")
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return z * sd / math.sqrt(n)


def problems_needed(sd: float, difference: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Problems a paired design needs to detect ``difference`` (the inverse of ``min_detectable_difference``)."""
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return math.ceil((z * sd / difference) ** 2)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: cost (x) no higher and score (y) no lower, one strictly."""
    front: list[int] = []
    for i, (cost_i, score_i) in enumerate(points):
        if any(math.isnan(v) for v in (cost_i, score_i)):
            continue
        dominated = any(
            (cost_j <= cost_i and score_j >= score_i) and (cost_j < cost_i or score_j > score_i)
            for j, (cost_j, score_j) in enumerate(points)
            if j != i and not any(math.isnan(v) for v in (cost_j, score_j))
        )
        if not dominated:
            front.append(i)
    return front
