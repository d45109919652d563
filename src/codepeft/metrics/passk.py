"""pass@k: the unbiased estimator over n samples with c correct, and sandboxed execution of candidates."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from codepeft.metrics.exact_match import DEFAULT_KS
from codepeft.sandbox import Limits, Outcome, Program, build_program, run_many


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct.

    ``1 - C(n-c, k) / C(n, k)``, computed as a product so that large n does not overflow.
    """
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_ks(passed: Sequence[Sequence[bool]], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"pass@1": ..., ...}`` in percent, averaged over problems, for each k every problem has samples for."""
    if not passed:
        return {}
    fewest = min(len(samples) for samples in passed)
    scores: dict[str, float] = {}
    for k in ks:
        if 1 <= k <= fewest:
            per_problem = [pass_at_k(len(s), sum(bool(x) for x in s), k) for s in passed]
            scores[f"pass@{k}"] = 100.0 * float(np.mean(per_problem))
    return scores


def execute_candidates(
    records: Sequence[dict[str, Any]], *, workers: int | None = None, timeout: float = 10.0,
    limits: Limits | None = None, on_done: Callable[[int], None] | None = None,
    to_program: Callable[..., Program] = build_program,
) -> list[list[Outcome]]:
    """Run every candidate of every record against the record's tests, in parallel, in the sandbox.

    ``to_program(candidate, tests, timeout=...)`` builds each program: the run's ``Task.program``.
    """
    programs, owners = [], []
    for index, record in enumerate(records):
        for candidate in record["candidates"]:
            programs.append(to_program(candidate or "", record["tests"], timeout=timeout))
            owners.append(index)
    # CPU seconds follow the wall-clock time-out, so a longer --timeout also allows more computation.
    limits = limits or Limits(cpu_seconds=math.ceil(timeout) + 1)
    outcomes = run_many(programs, workers=workers, timeout=timeout, limits=limits, on_done=on_done)
    grouped: list[list[Outcome]] = [[] for _ in records]
    for owner, outcome in zip(owners, outcomes, strict=True):
        grouped[owner].append(outcome)
    return grouped
