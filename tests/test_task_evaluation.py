"""Evaluation belongs to the task: every scorer asks the task named in the run's config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codepeft.data.base import TASKS, GenericTask, Task, get_task, register_task, task_of_run
from codepeft.metrics import run_summary, score_run
from codepeft.sandbox import Program, build_program

MBPP_REFERENCE = "def add(a, b):\n    return a + b"
MBPP_TABS = "def add(a, b):\r\n\treturn a + b"
MBPP_TESTS = {"kind": "mbpp", "setup": "", "asserts": ["assert add(2, 3) == 5"]}


def _run(path: Path, task: dict[str, Any] | None, records: list[dict[str, Any]]) -> Path:
    path.mkdir(parents=True)
    if task is not None:
        (path / "config.json").write_text(json.dumps({"task": task}))
    (path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_mbpp_tab_indented_candidate_scores_the_same_through_score_run_and_run_summary(tmp_path):
    record = {"id": "mbpp/1", "candidates": [MBPP_TABS], "reference": MBPP_REFERENCE, "tests": MBPP_TESTS}
    run = _run(tmp_path / "run", {"name": "mbpp", "spec": "mbpp", "split": "test", "options": {}}, [record])
    scored = score_run(run, metrics="em")
    assert scored["em@1"] == pytest.approx(100.0)
    assert scored["per_example"]["em"] == [True]
    assert run_summary(run, ks=[1])["em@1"] == pytest.approx(scored["em@1"])
    assert scored["notes"] == []


def test_a_run_without_config_is_scored_with_the_generic_defaults(tmp_path):
    record = {"id": "1", "candidates": [MBPP_TABS], "reference": MBPP_REFERENCE, "tests": None}
    run = _run(tmp_path / "run", None, [record])
    scored = score_run(run)
    assert scored["em@1"] == pytest.approx(0.0)  # the generic normalisation keeps tabs apart from spaces
    assert "pass@1" not in scored and scored["notes"] == ["pass@k skipped: the records have no tests"]


def test_an_unknown_task_falls_back_to_the_defaults_with_a_note():
    task, note = task_of_run({"task": {"name": "no-such-task", "spec": "no-such-task"}})
    assert isinstance(task, GenericTask)
    assert note is not None and "no-such-task" in note
    assert task_of_run(None)[1] is None and isinstance(task_of_run(None)[0], GenericTask)


def test_the_task_decides_metrics_and_primary_metric():
    mbpp = get_task("mbpp")
    assert mbpp.metrics(has_tests=True) == ("em", "codebleu", "bleu", "passk")
    assert mbpp.metrics(has_tests=False) == ("em", "codebleu", "bleu")
    assert mbpp.primary_metric(mbpp.metrics(True)) == "pass@1"
    assert mbpp.primary_metric(mbpp.metrics(False)) == "codebleu"


@pytest.fixture
def prefixed_task():
    """A task whose candidates are function bodies: its program puts the signature in front."""

    @register_task
    class BodyOnly(Task):
        name = "test-body-only"

        def load(self, split: str) -> list:
            return []

        def program(self, candidate: str, tests: dict[str, Any], *, timeout: float = 10.0) -> Program:
            return build_program("def add(a, b):\n" + candidate, tests, timeout=timeout)

    yield BodyOnly
    TASKS.pop(BodyOnly.name)


def test_score_run_builds_programs_through_the_task(tmp_path, prefixed_task):
    record = {"id": "1", "candidates": ["    return a + b"], "reference": "    return a + b", "tests": MBPP_TESTS}
    task = {"name": prefixed_task.name, "spec": prefixed_task.name, "options": {}}
    scored = score_run(_run(tmp_path / "task", task, [record]), metrics="passk", timeout=5, workers=1)
    assert scored["pass@1"] == pytest.approx(100.0)
    # The same record without its task: the body alone does not define add, so the test fails.
    plain = score_run(_run(tmp_path / "plain", None, [record]), metrics="passk", timeout=5, workers=1)
    assert plain["pass@1"] == pytest.approx(0.0)
