"""pass@k: the unbiased estimator (``estimator.py``) over sandboxed executions of the candidates."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from codepeft.metrics.estimator import DEFAULT_KS, hits_at_ks, pass_at_k
from codepeft.sandbox import Limits, Outcome, Program, build_program, run_many

__all__ = ["DEFAULT_KS", "execute_candidates", "pass_at_k", "pass_at_ks"]


def pass_at_ks(passed: Sequence[Sequence[bool]], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"pass@1": ..., ...}`` in percent, averaged over problems, for each k every problem has samples for."""
    return hits_at_ks(passed, ks, "pass")


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
