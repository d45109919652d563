"""The sandbox's program builders (one per test kind) and runner, through the public interface."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from codepeft.errors import CodepeftError
from codepeft.sandbox import Limits, Program, build_program, run_many, run_program
from codepeft.sandbox.cgroups import worker_groups_available
from codepeft.sandbox.runner import NONCE_ENV, STATUS_FD_ENV

REPORT = (f"\nimport os\nos.write(int(os.environ.pop({STATUS_FD_ENV!r})), os.environ.pop({NONCE_ENV!r}).encode())\n")


def _run(candidate: str, tests: dict, timeout: float = 10.0):
    return run_program(build_program(candidate, tests, timeout=timeout), timeout=timeout)


def test_outcomes_name_status_and_reason():
    assert run_program(Program("x = 1" + REPORT)).status == "passed"
    failed = run_program(Program("assert 1 + 1 == 3, 'arithmetic'" + REPORT))
    assert (failed.status, failed.reason) == ("failed", "AssertionError: arithmetic")
    raised = run_program(Program("{}['missing']" + REPORT))
    assert raised.status == "failed" and raised.reason.startswith("KeyError")
    slow = run_program(Program("import time\ntime.sleep(30)" + REPORT), timeout=0.5)
    assert (slow.status, slow.reason) == ("timed out", "wall-clock time-out after 0.5 s")
    early = run_program(Program("import os\nos._exit(0)" + REPORT))
    assert early.status == "crashed" and "before the tests finished" in early.reason
    cpu = run_program(Program("while True: pass" + REPORT), timeout=10, limits=Limits(cpu_seconds=1))
    assert cpu.status == "crashed" and cpu.reason.startswith("SIGXCPU"), cpu
    memory = run_program(Program("x = bytearray(1 << 31)" + REPORT), limits=Limits(memory_bytes=256 << 20))
    assert (memory.status, memory.reason) == ("crashed", "MemoryError")


def test_output_is_captured_and_capped():
    outcome = run_program(Program("print('hello')\nimport sys\nsys.stderr.write('e' * 5000)" + REPORT),
                          limits=Limits(output_bytes=100))
    assert outcome.passed and outcome.stdout == "hello\n"
    assert outcome.stderr.startswith("e" * 100) and outcome.stderr.endswith("[... output cut]")


def test_each_program_gets_a_fresh_work_directory_and_its_stdin():
    writer = Program("import os\nprint(os.getcwd(), sorted(os.listdir()))\nopen('left.txt', 'w').write('x')\n"
                     "print(input())" + REPORT, stdin="fed\n", files={"data.txt": "x"})
    reader = Program("import os\nprint(sorted(os.listdir()))" + REPORT)
    first, second = run_many([writer, reader], workers=1)  # the same server, one after the other
    workdir, listing, fed = first.stdout.split(" ", 1)[0], *first.stdout.split(" ", 1)[1].rsplit("\n", 2)[:2]
    assert first.passed and fed == "fed" and listing == "['data.txt', 'main.py']", first
    assert second.passed and second.stdout.strip() == "['main.py']", second
    assert not (Path(workdir) / "left.txt").exists()


def test_one_bad_sample_does_not_affect_the_others():
    good = Program("import time\ntime.sleep(0.2)\nassert sum(range(10)) == 45" + REPORT)
    bombs = [Program("import os\nwhile True: os.fork()"), Program("x = []\nwhile True: x.append(bytearray(1 << 24))"),
             Program("import os, signal\nos.killpg(0, signal.SIGKILL)")]
    programs = [good, *bombs, good, good, *bombs, good]
    limits = Limits(processes=32, memory_bytes=512 << 20)
    # The time-out leaves room for a loaded CI machine: the fork bomb next door takes its share of the CPU.
    outcomes = run_many(programs, workers=2, timeout=8, limits=limits)
    assert [o.passed for o in outcomes] == [p is good for p in programs], [(o.status, o.reason) for o in outcomes]


GROUPS = pytest.mark.skipif(not worker_groups_available(),
                            reason="this machine does not let codepeft create control groups (needs write access "
                                   "to /sys/fs/cgroup); sandboxes then share the CPU per session")


@GROUPS
def test_a_cpu_hog_that_forks_new_sessions_leaves_the_other_worker_its_share():
    """Spinning children in sessions of their own would win the scheduler's per-session fairness; a worker's
    control group keeps the other worker's program at about one core (measured: 0.2 s alone, 1-3 s beside
    this hog without groups, 0.2 s with them)."""
    hog = Program("import os\nfor _ in range(24):\n    if os.fork() == 0:\n        os.setsid()\n"
                  "        while True: pass\nwhile True: pass")
    good = Program("t = sum(i * i for i in range(8_000_000))" + REPORT)
    outcomes = run_many([hog, good, good], workers=2, timeout=5, limits=Limits(processes=32))
    assert outcomes[0].status == "timed out"
    assert [o.status for o in outcomes[1:]] == ["passed", "passed"], [(o.status, o.seconds) for o in outcomes]


@GROUPS
def test_a_worker_group_caps_the_memory_of_all_its_processes_and_is_removed():
    """Each process stays under its own address-space limit, together they would not: the group stops them."""
    from codepeft.sandbox.cgroups import PREFIX, ROOT

    children = ("import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n"
                "        block = bytearray(300 << 20)\n        block[::4096] = b'x' * len(block[::4096])\n"
                "        time.sleep(2)\n        os._exit(0)\n"
                "print(sorted(os.waitstatus_to_exitcode(os.wait()[1]) for _ in range(6)))")
    outcome = run_program(Program(children + REPORT), timeout=30, limits=Limits(memory_bytes=512 << 20, processes=16))
    codes = json.loads(outcome.stdout)
    # 6 x 300 MiB do not fit in the group's 512 + 256 MiB: the kernel kills some children (-9), not the host
    assert outcome.passed and -9 in codes and codes.count(0) <= 2, outcome
    assert not list(ROOT.glob(f"*/{PREFIX}-{os.getpid()}-*")), "worker groups left behind"


def test_programs_share_no_random_state_and_find_preloaded_modules_intact():
    """The server imports common modules once before forking; nothing seeded at import time is shared."""
    source = ("import random, typing, math, re\nfrom typing import List\n"
              "print(random.random(), typing.List is List, math.sqrt(4.0), bool(re.fullmatch('a+', 'aa')))" + REPORT)
    outcomes = run_many([Program(source)] * 4, workers=2)
    assert all(o.passed for o in outcomes), outcomes
    draws = [o.stdout.split()[0] for o in outcomes]
    assert len(set(draws)) == 4 and all(o.stdout.split()[1:] == ["True", "2.0", "True"] for o in outcomes)


def test_replies_that_arrive_together_are_both_read():
    """A quick program's "started" and "done" often reach the pipe in one write; "done" must not be missed."""
    from codepeft.sandbox.runner import SandboxServer

    read_end, write_end = os.pipe()
    os.write(write_end, b"started 12\ndone 0\n")
    server = object.__new__(SandboxServer)
    server._replies, server._pending = os.fdopen(read_end, "rb"), b""
    try:
        assert server._reply(None) == "started 12"
        assert server._reply(0.5) == "done 0"
        assert server._reply(0.05) is None
    finally:
        server._replies.close()
        os.close(write_end)


def test_parallel_runs_are_faster_than_serial():
    programs = [Program("import time\ntime.sleep(0.5)" + REPORT)] * 4
    started = time.monotonic()
    outcomes = run_many(programs, workers=4, timeout=5)
    assert all(o.passed for o in outcomes)
    assert time.monotonic() - started < 4 * 0.5 + 0.5


def test_humaneval_completion_and_whole_function():
    tests = {"kind": "humaneval", "prompt": "def add(a, b):\n    \"\"\"Sum.\"\"\"\n",
             "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"}
    assert _run("    return a + b\n", tests).passed
    assert _run("def add(a, b):\n    return b + a\n", tests).passed
    wrong = _run("    return a - b\n", tests)
    assert wrong.status == "failed" and wrong.reason.startswith("AssertionError")


def test_mbpp_reference_solutions_pass_and_wrong_ones_fail(data_dir):
    rows = [json.loads(line) for line in (data_dir / "mbpp" / "mbpp.jsonl").open()][10:40]
    programs, wrong = [], []
    for row in rows:
        tests = {"kind": "mbpp", "setup": row["test_setup_code"], "asserts": row["test_list"]}
        programs.append(build_program(row["code"], tests))
        wrong.append(build_program(row["code"] + "\n\ndef _(): pass\n" + "raise SystemExit(0)\n", tests))
    outcomes = run_many(programs + wrong, timeout=10)
    assert [o.status for o in outcomes[: len(rows)]] == ["passed"] * len(rows), [o.reason for o in outcomes]
    assert not any(o.passed for o in outcomes[len(rows):])


def test_assert_kind_with_setup():
    tests = {"kind": "assert", "setup": "import math", "asserts": ["assert area(1) == math.pi", "assert area(0) == 0"]}
    assert _run("def area(r):\n    return math.pi * r * r\n", tests).passed
    assert not _run("def area(r):\n    return 3.14 * r * r\n", tests).passed


def test_apps_stdin_real_problem(data_dir):
    rows = [json.loads(line) for line in (data_dir / "apps" / "apps_test_10.jsonl").open()]
    row = next(r for r in rows if r["problem_id"] == 4655)
    io = json.loads(row["input_output"])
    tests = {"kind": "apps-stdin", "inputs": io["inputs"], "outputs": io["outputs"]}
    solution = "q = int(input())\nfor _ in range(q):\n    print(sum(map(int, input().split())) // 2)\n"
    assert _run(solution, tests).passed
    reading_all = "import sys\nlines = sys.stdin.read().split('\\n')\nfor l in lines[1:]:\n    " \
                  "print(sum(map(int, l.split())) // 2) if l.strip() else None\n"
    assert _run(reading_all, tests).passed
    wrong = _run(solution.replace("// 2", "// 3"), tests)
    assert wrong.status == "failed" and "test 0: expected" in wrong.reason


def test_apps_stdin_whitespace_normalisation_and_crashes():
    tests = {"kind": "apps-stdin", "inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}
    assert _run("a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()\n", tests).passed
    assert _run("a, b = map(int, input().split())\nprint(' ', a + b)\n", tests).passed
    crash = _run("raise ValueError('boom')", tests)
    assert crash.status == "failed" and "ValueError: boom" in crash.reason
    slow = _run("while True: pass", tests, timeout=1)
    assert slow.status in {"timed out", "failed"} and not slow.passed


def test_apps_stdin_times_each_input_on_its_own():
    """As APPS does: every input gets the time-out, so three 0.6 s inputs pass under a 1 s time-out."""
    tests = {"kind": "apps-stdin", "inputs": ["1\n", "2\n", "3\n"], "outputs": ["1\n", "2\n", "3\n"]}
    slow_but_fine = "import time\ntime.sleep(0.6)\nprint(input())\n"
    assert _run(slow_but_fine, tests, timeout=1).passed
    hangs_on_two = "import time\nx = input()\nif x == '2':\n    time.sleep(60)\nprint(x)\n"
    stuck = _run(hangs_on_two, tests, timeout=1)
    assert (stuck.status, stuck.reason) == ("failed", "AssertionError: test 1: time-out after 1 s")


def test_apps_call_function_solution_class_and_leniency():
    tests = {"kind": "apps-call", "fn_name": "pair", "inputs": [[1, 2], [3, 4]], "outputs": [[1, 2], [[3, 4]]]}
    assert _run("def pair(a, b):\n    return (a, b)\n", tests).passed  # tuple == list, and [[x]] accepts x
    method = "class Solution:\n    def pair(self, a, b):\n        return [a, b]\n"
    assert _run(method, tests).passed
    wrong = _run("def pair(a, b):\n    return [b, a]\n", tests)
    assert wrong.status == "failed" and "test 0: expected" in wrong.reason
    missing = _run("def other():\n    pass\n", tests)
    assert missing.status == "failed" and "NameError" in missing.reason


def test_doctest_kind_body_and_whole_function():
    tests = {"kind": "doctest", "setup": "import math", "header": "def hyp(a, b):",
             "entry_point": "hyp", "doctest": ">>> hyp(3, 4)\n5.0\n>>> hyp(0, 0)\n0.0\n"}
    assert _run("return math.sqrt(a * a + b * b)", tests).passed
    assert _run("    return math.hypot(a, b)\n", tests).passed
    assert _run("def hyp(a, b):\n    return float(math.hypot(a, b))\n", tests).passed
    wrong = _run("return a + b", tests)
    assert wrong.status == "failed" and "doctest examples failed" in wrong.reason


def test_unknown_test_kind_is_a_user_error():
    with pytest.raises(CodepeftError, match="unknown test kind 'pytest'"):
        build_program("x = 1", {"kind": "pytest"})


def test_recursion_errors_are_failed_with_their_reason_even_past_the_output_cap():
    """Issue #16 point 6: one label for a RecursionError, ``failed``, its reason kept, also when the traceback
    is longer than the output kept (mutual recursion is not folded into "previous line repeated")."""
    mutual = "def f(n):\n    return g(n + 1)\n\n\ndef g(n):\n    return f(n + 1)\n"
    raw = run_program(Program(mutual + "f(0)\n" + REPORT))
    assert raw.stderr.endswith("[... output cut]"), len(raw.stderr)
    assert raw.status == "failed" and raw.reason.startswith("RecursionError: maximum recursion depth"), raw.reason
    tests = {"kind": "humaneval", "prompt": "def add(a, b):\n", "entry_point": "add",
             "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}
    for candidate in ("    return f(a)\n\n" + mutual, "    return 5\n\n" + mutual + "f(0)\n"):  # in a call, at import
        outcome = _run(candidate, tests)
        assert outcome.status == "failed" and outcome.reason.startswith("RecursionError: maximum recursion"), outcome


def test_only_plain_values_cross_from_the_candidate_to_the_checker():
    """The wire format the checker decodes: genuine plain values in, the same types out, anything else refused."""
    from collections import Counter, OrderedDict, defaultdict, deque

    from codepeft.sandbox._bootstrap import NotPlain, decode, encode

    values = [None, True, 3, 2**100, -0.5, float("inf"), "é", b"\x00\xff", [1, (2, {3})], {(1, 2): frozenset({1})},
              1 + 2j, Counter("aab"), OrderedDict(a=1), defaultdict(None, {1: 2}), deque([1, 2]), int]
    for value in values:
        back = decode(json.loads(json.dumps(encode(value))))
        assert back == value and type(back) is type(value), value

    class Sneaky(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    for bad in (Sneaky(1), [Sneaky(1)], object(), (x for x in []), type("Local", (), {})):
        with pytest.raises(NotPlain):
            encode(bad)
    for forged in (["x", 1], ["T", "open"], ["l", "ab"], {"a": 1}):
        with pytest.raises(NotPlain):
            decode(forged)
