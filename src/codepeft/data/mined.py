"""The ``mined`` data set: a JSONL written by ``codepeft mine`` (``mined:PATH`` or ``mined:NAME``).

Splits come from each line's ``split`` field. A bare ``NAME`` is looked up as
``$CODEPEFT_HOME/mined/NAME.jsonl``. The model writes a function body; a candidate that is a whole
``def`` is reduced to its body (docstring dropped) so it is compared like for like with the reference.
"""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.base import Example, Task, register_task
from codepeft.errors import CodepeftError


def function_body(code: str) -> str:
    """The body of ``code`` when it is one (possibly decorated) ``def``, docstring removed; else ``code`` dedented."""
    stripped = textwrap.dedent(code).strip("\n")
    if not stripped.startswith(("def ", "async def ", "@")):
        return stripped
    try:
        tree = ast.parse(stripped)
    except SyntaxError:
        return stripped
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef | ast.AsyncFunctionDef):
        return stripped
    node = tree.body[0]
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if not body:
        return ""
    lines = stripped.splitlines()
    if body[0].lineno == node.lineno:  # `def f(): return x` on one line
        return ast.get_source_segment(stripped, body[0]) or stripped
    return textwrap.dedent("\n".join(lines[body[0].lineno - 1: body[-1].end_lineno])).strip("\n")


@register_task
class MinedTask(Task):
    """Function bodies mined from a Python codebase, with doctests as tests where present."""

    name: ClassVar[str] = "mined"
    description: ClassVar[str] = "functions mined from Python sources by `codepeft mine` (mined:PATH.jsonl)"
    has_tests: ClassVar[bool] = True
    options_help: ClassVar[dict[str, str]] = {"path": "the mined JSONL, or NAME for $CODEPEFT_HOME/mined/NAME.jsonl "
                                                      "(mined:PATH sets it)"}

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        unknown = sorted(set(options) - set(self.options_help))
        if unknown:
            raise CodepeftError(f"data set 'mined' has no option {unknown[0]!r}: its only option is path "
                                "(mined:PATH.jsonl sets it)")
        self._records: list[dict[str, Any]] | None = None

    @property
    def path(self) -> Path:
        raw = self.options.get("path")
        if not raw:
            raise CodepeftError("the mined data set needs a file: use --dataset mined:PATH.jsonl "
                                "(written by `codepeft mine TARGET -o PATH.jsonl`)")
        path = Path(str(raw)).expanduser()
        if not path.exists() and "/" not in str(raw) and not str(raw).endswith(".jsonl"):
            from codepeft.home import codepeft_home

            registered = codepeft_home() / "mined" / f"{raw}.jsonl"
            if registered.exists():
                return registered
        return path

    def _all(self) -> list[dict[str, Any]]:
        if self._records is None:
            path = self.path
            if not path.is_file():
                raise CodepeftError(f"mined data set {str(path)!r} not found: create it with "
                                    f"`codepeft mine TARGET -o {path}`")
            records = []
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        missing = {"id", "intent", "reference"} - set(record)
                        if missing:
                            raise KeyError(", ".join(sorted(missing)))
                    except (json.JSONDecodeError, KeyError, TypeError) as err:  # TypeError: not an object
                        raise CodepeftError(f"{path} line {number} is not a mined example ({err}): "
                                            "regenerate it with `codepeft mine`") from err
                    records.append(record)
            self._records = records
        return self._records

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        return [Example(id=r["id"], intent=r["intent"], reference=r["reference"], tests=r.get("tests"),
                        meta=r.get("meta") or {}) for r in self._all() if r.get("split", "train") == split]

    def postprocess(self, generation: str) -> str:
        return function_body(super().postprocess(generation))
