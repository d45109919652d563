"""``jsonl``: the user's own data set, one JSON object per line (``jsonl:FILE`` or ``path=FILE``).

Field names are options (``intent_field``, ``code_field``, ``id_field``, ``tests_field``,
``setup_field``, ``split_field``). Splits come from the path or the rows:

- a path containing ``{split}`` (``data/{split}.jsonl``) reads one file per split;
- otherwise rows with a ``split`` field (``split_field``) are grouped by it (``valid`` and ``dev``
  count as ``validation``);
- otherwise the whole file is the ``test`` split (asking for another split is an error, so a test
  file never silently doubles as the demonstration pool).

Tests are optional. The tests field may hold a list of assert lines or a string of them (run as an
``assert`` payload, with ``setup_field`` code first), or a dict that already has a ``kind``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.base import Example, register_task
from codepeft.data.hub import CachedTask, read_records, unique_ids
from codepeft.errors import CodepeftError

SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}
TEST_KINDS = ("humaneval", "mbpp", "apps-call", "apps-stdin", "assert", "doctest")


def _tests_payload(value: Any, setup: str, where: str) -> dict[str, Any] | None:
    if value in (None, "", []):
        return None
    if isinstance(value, dict):
        if value.get("kind") not in TEST_KINDS:
            raise CodepeftError(f"tests of {where} have kind {value.get('kind')!r}: use one of "
                                f"{', '.join(TEST_KINDS)}, or give a list of assert lines")
        return value
    if isinstance(value, str):
        value = [line for line in value.splitlines() if line.strip()]
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return {"kind": "assert", "setup": setup, "asserts": value}
    raise CodepeftError(f"tests of {where} must be a list of assert lines, a string or a dict with a kind: "
                        "fix the file")


@register_task
class JsonlTask(CachedTask):
    name = "jsonl"
    description = "your own JSONL file (jsonl:FILE); field names configurable, tests optional"
    tests_optional = True
    splits = ("train", "validation", "test")
    options_help: ClassVar[dict[str, str]] = {
        "path": "the JSONL file, or a pattern with {split} (required; jsonl:FILE sets it)",
        "intent_field": "field with the natural-language intent (default intent)",
        "code_field": "field with the reference code (default code)",
        "id_field": "field with a unique id (default id; the line number when absent)",
        "tests_field": "field with tests (default tests; optional)",
        "setup_field": "field with code run before the asserts (default setup; optional)",
        "split_field": "field naming each row's split (default split; optional)",
    }

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        if not options.get("path"):
            raise CodepeftError("data set 'jsonl' needs a file: use jsonl:FILE.jsonl (or path=FILE)")
        self.path = str(options["path"])
        self.fields = {key: str(options.get(f"{key}_field", key))
                       for key in ("intent", "code", "id", "tests", "setup", "split")}

    def source_dir(self) -> Path | None:
        return Path(".")  # a user file never falls back to the hub

    def _resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        if not candidate.is_absolute() and not candidate.exists() and self.data_dir is not None:
            candidate = self.data_dir / candidate
        return candidate

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        if "{split}" in self.path:
            path = self._resolve(self.path.replace("{split}", split))
            if not path.exists():
                raise CodepeftError(f"data file {path} for split {split!r} of {self.path} does not exist: "
                                    "create it or choose another --split")
            return self._examples(read_records(path), path)
        path = self._resolve(self.path)
        rows = read_records(path)
        split_field = self.fields["split"]
        if any(split_field in r for r in rows):
            rows = [r for r in rows if SPLIT_ALIASES.get(str(r.get(split_field)), str(r.get(split_field))) == split]
        elif split != "test":
            raise CodepeftError(f"{path} has no {split_field!r} field, so all its rows are the 'test' split: use "
                                f"--split test, add a {split_field!r} field, or use a path with {{split}}")
        return self._examples(rows, path)

    def _examples(self, rows: list[dict[str, Any]], path: Path) -> list[Example]:
        intent_key, code_key, id_key = self.fields["intent"], self.fields["code"], self.fields["id"]
        for number, row in enumerate(rows, start=1):
            for option, key in (("intent_field", intent_key), ("code_field", code_key)):
                if key not in row:
                    present = ", ".join(sorted(row)[:12]) or "none"
                    raise CodepeftError(f"record {number} of {path} has no field {key!r} (fields: {present}): "
                                        f"pass {option}=NAME")
        has_ids = "id_field" in self.options or any(id_key in r for r in rows)
        if has_ids:
            missing = next((n for n, r in enumerate(rows, start=1) if id_key not in r), None)
            if missing is not None:
                raise CodepeftError(f"record {missing} of {path} has no id field {id_key!r}: pass id_field=NAME "
                                    "or give every row an id")
            ids = [str(r[id_key]) for r in rows]
            if len(set(ids)) != len(ids):
                raise CodepeftError(f"ids in field {id_key!r} of {path} are not unique: make them unique")
        else:
            ids = unique_ids(f"{path.stem}-{n}" for n in range(len(rows)))
        tests_key, setup_key = self.fields["tests"], self.fields["setup"]
        if "tests_field" in self.options and rows and not any(tests_key in r for r in rows):
            raise CodepeftError(f"no record of {path} has the tests field {tests_key!r}: pass tests_field=NAME")
        return [
            Example(id=ex_id, intent=str(row[intent_key]).strip(), reference=str(row[code_key]).strip("\n"),
                    tests=_tests_payload(row.get(tests_key), str(row.get(setup_key) or ""), f"{ex_id} in {path}"))
            for ex_id, row in zip(ids, rows, strict=True)
        ]
