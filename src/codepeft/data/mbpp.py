"""MBPP: short Python functions from a one-sentence description, each with three asserts.

The official split by ``task_id``: 1-10 ``prompt`` (the few-shot examples), 11-510 ``test``,
511-600 ``validation``, 601-974 ``train`` (hub id ``google-research-datasets/mbpp``, config ``full``,
whose split names are the same). As in the reference study, the model sees the description
followed by the asserts its code must pass (they fix the function's name and signature).

Two variants: ``full`` (974 problems, ``mbpp/mbpp.jsonl``: ``text``, ``test_setup_code``) and
``sanitized`` (427 hand-checked problems, ``mbpp/sanitized-mbpp.json``, a JSON list: ``prompt``,
``test_imports`` as a list of lines), chosen with ``variant=``; ``path=FILE`` reads a file of either
layout. The sanitized problems keep their ``task_id``, so the same id ranges split them.

MBPP code uses ``\\r\\n`` line endings and tab indentation: references are stored with ``\\n``
endings and tabs in the indentation expanded to four spaces (only when the result still parses),
and ``normalize`` does the same to candidates before exact match.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.base import Example, register_task
from codepeft.data.hub import CachedTask, load_hub_rows, read_records, require_fields, setup_code
from codepeft.data.postprocess import normalize_code
from codepeft.errors import CodepeftError

LOCAL_FILES = {"full": "mbpp/mbpp.jsonl", "sanitized": "mbpp/sanitized-mbpp.json"}
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
    options_help: ClassVar[dict[str, str]] = {
        "variant": "full (974 problems, default) or sanitized (427 hand-checked ones)",
        "path": "read this MBPP file instead (either variant's fields; JSON list or JSONL)",
    }

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.variant = str(options.get("variant", "full"))
        if self.variant not in LOCAL_FILES:
            raise CodepeftError(f"unknown MBPP variant {self.variant!r}: pass --data-option variant=full "
                                "or variant=sanitized")

    def source_dir(self) -> Path | None:
        return Path(".") if self.options.get("path") else super().source_dir()

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        given = self.options.get("path")
        path = Path(str(given)).expanduser() if given else self.local_path(data_dir, LOCAL_FILES[self.variant])
        return self._examples(read_records(path), split, str(path))

    def load_hub(self, split: str) -> list[Example]:
        rows = load_hub_rows(self.hub_id, split, config=self.variant)
        return self._examples(rows, split, f"{self.hub_id} ({self.variant}, {split})")

    def _examples(self, rows: list[dict[str, Any]], split: str, source: str) -> list[Example]:
        require_fields(rows, ("task_id", "code", "test_list"), source, "use the MBPP format (full or sanitized)")
        for number, row in enumerate(rows, start=1):
            if "text" not in row and "prompt" not in row:
                raise CodepeftError(f"record {number} of {source} has no field 'text' (full MBPP) or 'prompt' "
                                    "(sanitized MBPP): use the MBPP format")
        wanted = SPLIT_IDS[split]
        return [
            Example(
                id=f"mbpp/{r['task_id']}", intent=str(r["text"] if "text" in r else r["prompt"]).strip(),
                reference=clean_mbpp_code(r["code"]),
                tests={"kind": "mbpp", "asserts": list(r["test_list"]),
                       "setup": setup_code(r.get("test_setup_code") or r.get("test_imports"),
                                           f"mbpp/{r['task_id']} in {source}")},
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
