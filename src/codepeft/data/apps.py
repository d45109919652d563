"""APPS (``codeparrot/apps``): programming problems with input/output tests.

Two kinds of problem: call-based (the row's ``input_output`` has ``fn_name``; the program defines
that function, often inside the starter code's ``class Solution``) and standard-input (the program
reads stdin and prints). The prompt follows the reference study and the APPS paper: the question,
the starter code, then ``Use Call-Based format`` or ``Use Standard Input format``. (The reference
study's script printed the two format lines the wrong way round; here call-based problems say
call-based.) Locally only ``apps/apps_test_10.jsonl`` (10 test problems) exists; the hub has
train and test, and, as in the reference study, the train split shuffled with seed 42
(``Dataset.shuffle``) gives validation (its first 500 problems) and train (the rest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.base import Example, register_task
from codepeft.data.hub import CachedTask, load_hub_dataset, load_hub_rows, read_records, require_fields, unique_ids
from codepeft.errors import CodepeftError

DIFFICULTIES = ("introductory", "interview", "competition")
LOCAL_FILES = {"test": "apps/apps_test_10.jsonl"}
VALIDATION_SIZE, VALIDATION_SEED = 500, 42


def apps_prompt(question: str, starter_code: str, call_based: bool) -> str:
    """The problem as the model sees it."""
    parts = [question.strip()]
    if starter_code.strip():
        parts.append(starter_code.rstrip())
    parts.append("Use Call-Based format" if call_based else "Use Standard Input format")
    return "\n".join(parts)


def apps_tests(raw: Any, source: str) -> dict[str, Any] | None:
    """The test payload of an ``input_output`` value (a JSON string or a dict with inputs and outputs)."""
    if raw in (None, ""):
        return None
    try:
        io = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as err:
        raise CodepeftError(f"input_output of {source} is not valid JSON: fix the data file") from err
    if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
        raise CodepeftError(f"input_output of {source} needs 'inputs' and 'outputs': fix the data file")
    if io.get("fn_name"):
        return {"kind": "apps-call", "fn_name": io["fn_name"], "inputs": io["inputs"], "outputs": io["outputs"]}
    return {"kind": "apps-stdin", "inputs": io["inputs"], "outputs": io["outputs"]}


def _first_solution(raw: Any) -> str:
    if not raw:
        return ""
    try:
        solutions = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return ""
    return solutions[0].strip() if isinstance(solutions, list) and solutions else ""


@register_task
class AppsTask(CachedTask):
    name = "apps"
    description = "APPS programming problems with input/output tests (call-based and stdin)"
    splits = ("train", "validation", "test")
    has_tests = True
    hub_id = "codeparrot/apps"
    options_help: ClassVar[dict[str, str]] = {
        "difficulty": f"keep one difficulty: {', '.join(DIFFICULTIES)} or all (default all)",
    }

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.difficulty = str(options.get("difficulty", "all"))
        if self.difficulty not in (*DIFFICULTIES, "all"):
            raise CodepeftError(f"unknown APPS difficulty {self.difficulty!r}: use one of "
                                f"{', '.join(DIFFICULTIES)} or all")

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        if split not in LOCAL_FILES:
            raise CodepeftError(f"data set 'apps' has no local file for split {split!r} under {data_dir} "
                                f"(only {', '.join(LOCAL_FILES)}): use --split test, or load from the hub")
        path = self.local_path(data_dir, LOCAL_FILES[split])
        return self._examples(read_records(path), str(path))

    def load_hub(self, split: str) -> list[Example]:
        if split == "test":
            rows = load_hub_rows(self.hub_id, "test")
        else:
            shuffled = load_hub_dataset(self.hub_id, "train").shuffle(seed=VALIDATION_SEED)
            chosen = range(VALIDATION_SIZE) if split == "validation" else range(VALIDATION_SIZE, len(shuffled))
            rows = [dict(row) for row in shuffled.select(chosen)]
        return self._examples(rows, f"{self.hub_id} ({split})")

    def _examples(self, rows: list[dict[str, Any]], source: str) -> list[Example]:
        require_fields(rows, ("question", "input_output"), source, "use codeparrot/apps rows (JSONL)")
        if self.difficulty != "all":
            rows = [r for r in rows if r.get("difficulty") == self.difficulty]
        ids = unique_ids(f"apps/{r.get('problem_id', i)}" for i, r in enumerate(rows))
        examples = []
        for ex_id, row in zip(ids, rows, strict=True):
            tests = apps_tests(row["input_output"], f"{ex_id} in {source}")
            starter = row.get("starter_code") or ""
            call_based = tests is not None and tests["kind"] == "apps-call"
            examples.append(Example(
                id=ex_id, intent=apps_prompt(row["question"], starter, call_based),
                reference=_first_solution(row.get("solutions")), tests=tests,
                meta={"difficulty": row.get("difficulty"), "starter_code": starter,
                      "question": row["question"]},
            ))
        return examples
