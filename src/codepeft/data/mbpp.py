"""MBPP: short Python functions from a one-sentence description, each with three asserts.

The official split by ``task_id``: 1-10 ``prompt`` (the few-shot examples), 11-510 ``test``,
511-600 ``validation``, 601-974 ``train`` (hub id ``google-research-datasets/mbpp``, config ``full``,
whose split names are the same). As in the reference study, the model sees the description
followed by the asserts its code must pass (they fix the function's name and signature).

MBPP code uses ``\\r\\n`` line endings and tab indentation: references are stored with ``\\n``
endings and tabs in the indentation expanded to four spaces (only when the result still parses),
and ``normalize`` does the same to candidates before exact match.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path
from typing import Any

from codepeft.data.base import Example, register_task
from codepeft.data.hub import CachedTask, load_hub_rows, read_records, require_fields
from codepeft.data.postprocess import normalize_code

LOCAL_FILE = "mbpp/mbpp.jsonl"
SPLIT_IDS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}
_LEADING_WS = re.compile(r"^[ \t]+", re.MULTILINE)


def clean_mbpp_code(code: str) -> str:
    """``\\n`` line endings, trailing spaces dropped, indentation tabs as four spaces if that still parses."""
    lines = "\n".join(line.rstrip() for line in code.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    expanded = _LEADING_WS.sub(lambda m: m.group(0).replace("\t", "    "), lines)
    if expanded == lines:
        return lines.strip("\n")
    try:
        with warnings.catch_warnings():  # invalid escapes in MBPP code are not our concern
            warnings.simplefilter("ignore")
            ast.parse(expanded)
    except SyntaxError:
        return lines.strip("\n")
    return expanded.strip("\n")


@register_task
class MbppTask(CachedTask):
    name = "mbpp"
    description = "MBPP basic Python programming problems with asserts (official split)"
    splits = ("train", "validation", "test", "prompt")
    has_tests = True
    hub_id = "google-research-datasets/mbpp"

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        path = self.local_path(data_dir, LOCAL_FILE)
        rows = read_records(path)
        return self._examples(rows, split, str(path))

    def load_hub(self, split: str) -> list[Example]:
        return self._examples(load_hub_rows(self.hub_id, split, config="full"), split, f"{self.hub_id} ({split})")

    def _examples(self, rows: list[dict[str, Any]], split: str, source: str) -> list[Example]:
        require_fields(rows, ("task_id", "text", "code", "test_list"), source, "use the MBPP JSONL format")
        wanted = SPLIT_IDS[split]
        return [
            Example(
                id=f"mbpp/{r['task_id']}", intent=r["text"].strip(), reference=clean_mbpp_code(r["code"]),
                tests={"kind": "mbpp", "setup": r.get("test_setup_code") or "", "asserts": list(r["test_list"])},
                meta={"task_id": r["task_id"], "challenge_asserts": list(r.get("challenge_test_list") or [])},
            )
            for r in sorted(rows, key=lambda r: int(r["task_id"]))
            if int(r["task_id"]) in wanted
        ]

    def instruction(self, example: Example) -> str:
        asserts = "\n".join(example.tests["asserts"]) if example.tests else ""
        return f"{example.intent} Your code should pass these tests:\n{asserts}"

    def normalize(self, code: str) -> str:
        return normalize_code(clean_mbpp_code(code))
