"""One program builder per test kind: turn a candidate and its test payload into a runnable ``Program``.

Call-, assert- and standard-input tests (``humaneval``, ``mbpp``, ``assert``, ``apps-call``,
``apps-stdin``) become a program holding only the candidate's code and a *checker* holding the tests:
the sandbox runs the tests in a process of their own that calls into the candidate and accepts plain
values only, so nothing the candidate does in its own process can make a test pass (see
``_bootstrap.py``). ``doctest`` programs run the examples in the candidate's process and pass by a
one-time token written after the last test (see ``runner``). Payload kinds are documented on
``codepeft.data.base.Example``.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any

from codepeft.errors import CodepeftError
from codepeft.sandbox.runner import NONCE_ENV, STATUS_FD_ENV, Program

PROLOGUE = (
    "import os as _cp_os\n"
    f"_cp_token = _cp_os.environ.pop({NONCE_ENV!r}, '')\n"
    f"_cp_status_fd = int(_cp_os.environ.pop({STATUS_FD_ENV!r}, '-1'))\n"
    "del _cp_os\n"
)
EPILOGUE = (
    "\n\nimport os as _cp_os\n"
    "_cp_os.write(_cp_status_fd, _cp_token.encode())\n"
)


def _wrap(body: str, **kwargs: Any) -> Program:
    return Program(source=PROLOGUE + body + EPILOGUE, **kwargs)


def humaneval_program(candidate: str, tests: dict[str, Any]) -> Program:
    """prompt + completion in the program; ``test`` + ``check(entry_point)`` in the checker, as HumanEval's
    own evaluator runs them, with the entry point (and any other function only the candidate defines)
    called in the program. The prompt's helpers (``poly``, ``encode_cyclic``) run in the checker.

    A candidate that is the whole function (it redefines ``entry_point``) works too: the later def wins.
    """
    entry = tests["entry_point"]
    return Program(source=f"{tests['prompt']}{candidate}\n",
                   checker={"prelude": tests["prompt"], "code": f"{tests['test']}\ncheck({entry})\n",
                            "remote": [entry]})


def assert_program(candidate: str, tests: dict[str, Any]) -> Program:
    """Setup code and the candidate in the program; setup and each assert in the checker (MBPP, JSONL)."""
    setup = tests.get("setup") or ""
    asserts = "\n".join(tests.get("asserts") or [])
    return Program(source=f"{setup}\n{candidate}\n", checker={"prelude": setup, "code": f"{asserts}\n"})


APPS_CALL_CHECK = '''
import json as _cp_json


def _cp_plain(value):
    """JSON round trip: tuples become lists, as APPS compares them."""
    try:
        return _cp_json.loads(_cp_json.dumps(value))
    except (TypeError, ValueError):
        return value


_cp_cases = _cp_json.loads(%(cases)s)
_cp_name = _cp_cases["fn_name"]
_cp_found = _cp_defined([_cp_name, "Solution"])
if _cp_found.get(_cp_name) == "callable":
    _cp_fn = _cp_candidate(_cp_name)
elif "Solution" in _cp_found:
    _cp_fn = _cp_candidate("Solution()." + _cp_name)
else:
    raise NameError(f"no function {_cp_name!r} defined")
for _cp_index, (_cp_args, _cp_expected) in enumerate(zip(_cp_cases["inputs"], _cp_cases["outputs"])):
    _cp_got = _cp_plain(_cp_fn(*_cp_args))
    _cp_ok = _cp_got == _cp_expected or (
        isinstance(_cp_expected, list) and len(_cp_expected) > 0 and _cp_got == _cp_expected[0])
    assert _cp_ok, f"test {_cp_index}: expected {str(_cp_expected)[:200]}, got {str(_cp_got)[:200]}"
'''


def apps_call_program(candidate: str, tests: dict[str, Any]) -> Program:
    """Call ``fn_name`` (a function, or a method of ``Solution``) on each input and compare as APPS does."""
    cases = json.dumps({"fn_name": tests["fn_name"], "inputs": tests["inputs"], "outputs": tests["outputs"]})
    return Program(source=candidate + "\n", checker={"code": APPS_CALL_CHECK % {"cases": repr(cases)}, "link": False})


APPS_STDIN_CHECK = '''
import json as _cp_json


def _cp_lines(text):
    return [line.rstrip() for line in text.strip().splitlines()]


def _cp_same(got, expected):
    if _cp_lines(got) == _cp_lines(expected):
        return True
    return got.split() == expected.split()


_cp_cases = _cp_json.loads(%(cases)s)
for _cp_index, (_cp_input, _cp_expected) in enumerate(zip(_cp_cases["inputs"], _cp_cases["outputs"])):
    if isinstance(_cp_input, list):
        _cp_input = "\\n".join(map(str, _cp_input))
    if isinstance(_cp_expected, list):
        _cp_expected = "\\n".join(map(str, _cp_expected))
    _cp_status, _cp_out, _cp_err = _cp_run(_cp_input, _cp_cases["timeout"])
    if _cp_status is None:
        raise AssertionError(f"test {_cp_index}: time-out after {_cp_cases['timeout']:g} s")
    assert _cp_status == 0, f"test {_cp_index}: exit status {_cp_status}: {_cp_err.strip()[-300:]}"
    assert _cp_same(_cp_out, _cp_expected), (
        f"test {_cp_index}: expected {_cp_expected.strip()[:200]!r}, got {_cp_out.strip()[:200]!r}")
'''


#: wall-clock seconds an APPS standard-input program gets beyond its inputs' time-outs (start-up, comparisons)
APPS_STDIN_SLACK = 5.0


def apps_stdin_program(candidate: str, tests: dict[str, Any], timeout: float = 10.0) -> Program:
    """Run the candidate as a script once per input; the checker compares stdout after normalisation.

    Each input has its own ``timeout`` (as APPS times each test), so the program as a whole gets
    ``timeout`` per input plus ``APPS_STDIN_SLACK``. Lines are compared after stripping trailing
    spaces and surrounding blank lines; failing that, the whitespace-separated tokens are compared
    (APPS accepts both). The expected outputs never enter the candidate's process.
    """
    cases = json.dumps({"inputs": tests["inputs"], "outputs": tests["outputs"], "timeout": timeout})
    return Program(source="", files={"solution.py": candidate},
                   checker={"code": APPS_STDIN_CHECK % {"cases": repr(cases)}, "link": False},
                   timeout=timeout * max(1, len(tests["inputs"])) + APPS_STDIN_SLACK)


DOCTEST_HARNESS = '''

import doctest as _cp_doctest

_cp_globals = {k: v for k, v in globals().items() if not k.startswith("_cp_")}
_cp_test = _cp_doctest.DocTestParser().get_doctest(%(doctest)s, _cp_globals, %(name)s, "<doctest>", 0)
_cp_runner = _cp_doctest.DocTestRunner(verbose=False)
_cp_result = _cp_runner.run(_cp_test)
assert _cp_result.attempted > 0, "the doctest has no examples"
assert _cp_result.failed == 0, f"{_cp_result.failed} of {_cp_result.attempted} doctest examples failed"
'''


def doctest_program(candidate: str, tests: dict[str, Any]) -> Program:
    """setup + the function (the candidate, or header + the candidate as its body), then its doctest."""
    stripped = candidate.lstrip()
    if stripped.startswith(("def ", "async def ")):
        function = candidate
    else:
        body = candidate if candidate[:1] in (" ", "\t") else textwrap.indent(candidate, "    ")
        function = f"{tests['header'].rstrip()}\n{body}"
    harness = DOCTEST_HARNESS % {"doctest": repr(tests["doctest"]), "name": repr(tests.get("entry_point", "f"))}
    return _wrap(f"{tests.get('setup') or ''}\n{function}\n{harness}")


BUILDERS: dict[str, Callable[..., Program]] = {
    "humaneval": humaneval_program,
    "mbpp": assert_program,
    "assert": assert_program,
    "apps-call": apps_call_program,
    "apps-stdin": apps_stdin_program,
    "doctest": doctest_program,
}


def build_program(candidate: str, tests: dict[str, Any], *, timeout: float = 10.0) -> Program:
    """The program that checks ``candidate`` against ``tests`` (a payload with a ``kind``)."""
    kind = tests.get("kind")
    if kind not in BUILDERS:
        raise CodepeftError(f"unknown test kind {kind!r}: expected one of {', '.join(BUILDERS)}")
    if kind == "apps-stdin":
        return apps_stdin_program(candidate, tests, timeout=timeout)
    return BUILDERS[kind](candidate, tests)
