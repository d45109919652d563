"""``jsonl``: the user's own data set, a JSON Lines file or a JSON list (``jsonl:FILE`` or ``path=FILE``).

Each part of an example is read from a field: the ``*_field`` option names it, else the first of
``FIELD_NAMES`` that the file's rows have, so the usual layouts load without options (plain
``intent``/``code``/``tests``; MBPP's ``text`` or ``prompt``, ``test_list``, ``test_imports``; APPS's
``question``, ``solutions``, ``input_output``, ``starter_code``, ``fn_name``; MapCoder's
``description`` and ``test_list`` of ``{input, output}`` pairs). Splits come from the path or the rows:

- a path containing ``{split}`` (``data/{split}.jsonl``) reads one file per split;
- otherwise rows with a ``split`` field (``split_field``) are grouped by it (``valid`` and ``dev``
  count as ``validation``);
- otherwise the whole file is the ``test`` split (asking for another split is an error, so a test
  file never silently doubles as the demonstration pool).

The reference code is optional (problem sets without solutions are scored by pass@k only); tests are
optional too, but a file needs one or the other. What the model is asked is the intent, then the
signature (or the function name) when the rows give one, then, with ``prompt_tests=N``, the first N
tests as examples: without them a model has to guess the function name the tests call.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.apps import apps_prompt, apps_tests
from codepeft.data.base import Example, register_task
from codepeft.data.hub import CachedTask, read_located_records, setup_code
from codepeft.errors import CodepeftError

SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}
TEST_KINDS = ("humaneval", "mbpp", "apps-call", "apps-stdin", "assert", "doctest")
#: Where each part is read from when its ``<part>_field`` option is not given: the first name any row has.
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "intent": ("intent", "question", "description", "prompt", "text"),
    "code": ("code", "solutions", "solution"),
    "id": ("id", "task_id", "problem_id"),
    "tests": ("tests", "test_list", "input_output"),
    "setup": ("setup", "test_setup_code", "test_imports"),
    "signature": ("signature", "starter_code"),
    "entry_point": ("entry_point", "fn_name"),
    "split": ("split",),
}
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


def _fix(option: str) -> str:
    return f"pass --data-option {option}=NAME"


def choose_fields(rows: list[dict[str, Any]], options: dict[str, Any], path: Path) -> dict[str, str | None]:
    """The field each part is read from: the option's, else the first of ``FIELD_NAMES`` present in a row."""
    chosen: dict[str, str | None] = {}
    for part, names in FIELD_NAMES.items():
        option = f"{part}_field"
        if option in options:
            name = str(options[option])
            if rows and part != "intent" and not any(name in row for row in rows):
                present = ", ".join(sorted({k for row in rows for k in row})[:16])
                raise CodepeftError(f"no record of {path} has the field {name!r} given by {option} "
                                    f"(fields: {present}): {_fix(option)}")
            chosen[part] = name
        else:
            chosen[part] = next((name for name in names if any(name in row for row in rows)), None)
    return chosen


def reference_code(value: Any, field: str | None, where: str) -> str:
    """The reference: a string, or the first of a list of solutions (APPS keeps that list as a JSON string)."""
    if value is None:
        return ""
    if isinstance(value, str) and field == "solutions" and value.lstrip().startswith("["):
        with contextlib.suppress(json.JSONDecodeError):  # not a JSON list: one solution
            value = json.loads(value)
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str)), "")
    if not isinstance(value, str):
        raise CodepeftError(f"the reference code of {where} is a {type(value).__name__}, not a string: "
                            f"fix the file or {_fix('code_field')}")
    return value.strip("\n")


def call_arguments(text: Any) -> list[Any]:
    """Arguments of one call from a MapCoder-style input: one per line, a Python literal where it reads as one.

    MapCoder's APPS layout joins a call's arguments with newlines (``"0\\n1\\n2"``); a line that is not a
    literal (``apple of banana``) stays text. A number-like string argument cannot be told from a number.
    """
    if isinstance(text, list):
        return text
    arguments = []
    for line in str(text).split("\n"):
        try:
            value = ast.literal_eval(line)
            json.dumps(value)  # sets and other non-JSON values stay text: the harness passes JSON
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = line
        arguments.append(value)
    return arguments


def _io_pairs(pairs: list[dict[str, Any]], entry_point: str | None) -> dict[str, Any]:
    outputs = [pair["output"] for pair in pairs]
    if entry_point:
        return {"kind": "apps-call", "fn_name": entry_point,
                "inputs": [call_arguments(pair["input"]) for pair in pairs], "outputs": outputs}
    return {"kind": "apps-stdin", "inputs": [pair["input"] for pair in pairs], "outputs": outputs}


def tests_payload(value: Any, setup: str, where: str, entry_point: str | None = None) -> dict[str, Any] | None:
    """The sandbox payload of a row's tests (see ``Example``), or ``None`` when it has none."""
    if value in (None, "", [], {}):
        return None
    if isinstance(value, str) and value.lstrip().startswith("{"):
        value = apps_tests(value, where)  # APPS keeps input_output as a JSON string
    if isinstance(value, dict) and "kind" not in value and {"inputs", "outputs"} <= set(value):
        value = apps_tests(value if value.get("fn_name") or not entry_point else {**value, "fn_name": entry_point},
                           where)
    if isinstance(value, dict):
        if value.get("kind") not in TEST_KINDS:
            raise CodepeftError(f"tests of {where} have kind {value.get('kind')!r}: use one of "
                                f"{', '.join(TEST_KINDS)}, or give a list of assert lines")
        return value
    if isinstance(value, str):
        value = [line for line in value.splitlines() if line.strip()]
    if isinstance(value, list) and all(isinstance(item, dict) and {"input", "output"} <= set(item) for item in value):
        return _io_pairs(value, entry_point)
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return {"kind": "assert", "setup": setup, "asserts": value}
    raise CodepeftError(f"tests of {where} must be a list of assert lines, a string of them, a list of "
                        "{input, output} pairs, an APPS input_output or a dict with a kind: fix the file")


def prompt_tests_count(value: Any) -> int | None:
    """``prompt_tests``: how many tests the prompt shows (``None``: all)."""
    if str(value).strip().lower() == "all":
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise CodepeftError(f"prompt_tests={value!r} is not a number of tests: pass --data-option prompt_tests=N "
                            "(0: none, the default) or prompt_tests=all")
    return count


def shown_tests(tests: dict[str, Any] | None, count: int | None) -> str:
    """The first ``count`` tests written out for the prompt ('' for none, or for kinds that cannot be shown)."""
    if not tests or count == 0:
        return ""
    kind = tests.get("kind")
    if kind in ("assert", "mbpp"):
        asserts = tests.get("asserts", [])[:count]
        return "Your code should pass these tests:\n" + "\n".join(asserts) if asserts else ""
    pairs = list(zip(tests.get("inputs", []), tests.get("outputs", []), strict=False))[:count]
    if kind == "apps-stdin":
        return "\n".join(f"Example input:\n{_lines(given)}\nExample output:\n{_lines(wanted)}"
                         for given, wanted in pairs)
    if kind == "apps-call":
        calls = []
        for arguments, wanted in pairs:
            wanted = wanted[0] if isinstance(wanted, list) and len(wanted) == 1 else wanted
            calls.append(f"{tests['fn_name']}({', '.join(map(repr, arguments))}) returns {wanted!r}")
        return "Examples:\n" + "\n".join(calls) if calls else ""
    return ""


def _lines(value: Any) -> str:
    return "\n".join(map(str, value)).rstrip("\n") if isinstance(value, list) else str(value).rstrip("\n")


def _text(row: dict[str, Any], field: str | None) -> str:
    value = row.get(field) if field else None
    return value if isinstance(value, str) else ""


@register_task
class JsonlTask(CachedTask):
    name = "jsonl"
    description = "your own JSONL/JSON file (jsonl:FILE); fields found or named, reference and tests optional"
    tests_optional = True
    splits = ("train", "validation", "test")
    options_help: ClassVar[dict[str, str]] = {
        "path": "the JSONL or JSON file, or a pattern with {split} (required; jsonl:FILE sets it)",
        **{f"{part}_field": f"field with the {part.replace('_', ' ')} (default: the first of "
                            f"{', '.join(names)} present)" for part, names in FIELD_NAMES.items()},
        "prompt_tests": "show the first N tests in the prompt as examples (default 0; all: every test)",
    }

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        if not options.get("path"):
            raise CodepeftError("data set 'jsonl' needs a file: use jsonl:FILE.jsonl (or --data-option path=FILE)")
        self.path = str(options["path"])
        self.prompt_tests = prompt_tests_count(options.get("prompt_tests", 0))

    def source_dir(self) -> Path | None:
        return Path(".")  # a user file never falls back to the hub

    def _resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        if not candidate.is_absolute() and not candidate.exists() and self.data_dir is not None:
            candidate = self.data_dir / candidate
        return candidate

    def has_split(self, split: str) -> bool:
        """A ``{split}`` file that exists, or rows of the split (a file without split fields is all ``test``)."""
        if split not in self.splits:
            return False
        if "{split}" in self.path:
            return self._resolve(self.path.replace("{split}", split)).exists()
        rows, _ = read_located_records(self._resolve(self.path))
        field = choose_fields(rows, self.options, self._resolve(self.path))["split"]
        if field is None:
            return split == "test"
        return any(SPLIT_ALIASES.get(str(r.get(field)), str(r.get(field))) == split for r in rows)

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        if "{split}" in self.path:
            path = self._resolve(self.path.replace("{split}", split))
            if not path.exists():
                raise CodepeftError(f"data file {path} for split {split!r} of {self.path} does not exist: "
                                    "create it or choose another --split")
            rows, where = read_located_records(path)
            return self._examples(rows, where, choose_fields(rows, self.options, path), path)
        path = self._resolve(self.path)
        rows, where = read_located_records(path)
        fields = choose_fields(rows, self.options, path)
        split_field = fields["split"]
        if split_field is not None:
            keep = [SPLIT_ALIASES.get(str(r.get(split_field)), str(r.get(split_field))) == split for r in rows]
            rows = [r for r, k in zip(rows, keep, strict=True) if k]
            where = [w for w, k in zip(where, keep, strict=True) if k]
        elif split != "test":
            raise CodepeftError(f"{path} has no 'split' field, so all its rows are the 'test' split: use "
                                "--split test, add a 'split' field, or use a path with {split}")
        return self._examples(rows, where, fields, path)

    def _ids(self, rows: list[dict[str, Any]], where: list[str], field: str | None, path: Path) -> list[str]:
        if field is None:
            return [f"{path.stem}-{n}" for n in range(len(rows))]
        first: dict[str, str] = {}
        for row, place in zip(rows, where, strict=True):
            if field not in row:
                raise CodepeftError(f"{place} of {path} has no id field {field!r}: give every row an id or "
                                    f"{_fix('id_field')}")
            key = str(row[field])
            if key in first:
                raise CodepeftError(f"{place} of {path} repeats the id {key!r} of {first[key]}: make the ids in "
                                    f"field {field!r} unique")
            first[key] = place
        return list(first)

    def _examples(self, rows: list[dict[str, Any]], where: list[str], fields: dict[str, str | None],
                  path: Path) -> list[Example]:
        intent_field = fields["intent"] or "intent"
        for row, place in zip(rows, where, strict=True):
            if intent_field not in row:
                present = ", ".join(sorted(row)[:12]) or "none"
                raise CodepeftError(f"{place} of {path} has no field {intent_field!r} (fields: {present}): "
                                    f"{_fix('intent_field')}")
        if rows and fields["code"] is None and fields["tests"] is None:
            raise CodepeftError(f"the records of {path} have neither reference code "
                                f"({', '.join(FIELD_NAMES['code'])}) nor tests ({', '.join(FIELD_NAMES['tests'])}): "
                                "pass --data-option code_field=NAME or --data-option tests_field=NAME")
        ids = self._ids(rows, where, fields["id"], path)
        return [self._example(row, ex_id, f"{ex_id} ({place} of {path})", fields)
                for row, ex_id, place in zip(rows, ids, where, strict=True)]

    def _example(self, row: dict[str, Any], ex_id: str, where: str, fields: dict[str, str | None]) -> Example:
        signature = _text(row, fields["signature"])
        entry_point = _text(row, fields["entry_point"]) or next(iter(_DEF.findall(signature)), "")
        setup = setup_code(row.get(fields["setup"]) if fields["setup"] else None, where,
                           f"fix the file or {_fix('setup_field')}")
        tests = tests_payload(row.get(fields["tests"]) if fields["tests"] else None, setup, where, entry_point or None)
        if tests and tests.get("kind") == "apps-call":
            entry_point = tests["fn_name"]
        meta = {key: value for key, value in (("signature", signature), ("entry_point", entry_point)) if value}
        code_field = fields["code"]
        return Example(id=ex_id, intent=str(row[fields["intent"] or "intent"]).strip(),
                       reference=reference_code(row.get(code_field) if code_field else None, code_field, where),
                       tests=tests, meta=meta)

    def instruction(self, example: Example) -> str:
        """The intent; the signature, or else the function's name; then the first ``prompt_tests`` tests."""
        tests = example.tests or {}
        signature, entry_point = example.meta.get("signature", ""), example.meta.get("entry_point", "")
        shown = shown_tests(tests, self.prompt_tests)
        if tests.get("kind") in ("apps-call", "apps-stdin"):  # as the built-in apps task asks
            question = f"{example.intent}\n{shown}" if shown else example.intent
            return apps_prompt(question, signature, tests["kind"] == "apps-call")
        parts = [example.intent]
        if signature.strip():
            parts.append(f"Use this signature:\n{signature.strip()}")
        elif entry_point:
            parts.append(f"Name the function `{entry_point}`.")
        if shown:
            parts.append(shown)
        return "\n".join(parts)
