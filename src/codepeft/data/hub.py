"""Loading helpers shared by the built-in tasks: a local file under ``--data-dir`` or the same data
set from the Hugging Face hub, JSON/JSONL reading with one-line errors, and a cached task base class.

Where the data comes from: the task's ``data_dir`` if given, else ``home.default_data_dir()``
(``$CODEPEFT_DATA_DIR`` or ``../shared/data``), else the hub through ``datasets.load_dataset``.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.base import Example, Task
from codepeft.errors import CodepeftError, first_line

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when the user asked the Hugging Face libraries to stay offline."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub_rows(hub_id: str, split: str, config: str | None = None) -> list[dict[str, Any]]:
    """Rows of one split of a hub data set, or a one-line error saying to pass ``--data-dir``."""
    return [dict(row) for row in load_hub_dataset(hub_id, split, config)]


def load_hub_dataset(hub_id: str, split: str, config: str | None = None) -> Any:
    """One split of a hub data set as a ``datasets.Dataset`` (same errors as ``load_hub_rows``)."""
    fix = "pass --data-dir DIR with a local copy (see docs/data.md)"
    if hub_offline():
        raise CodepeftError(f"cannot load data set {hub_id!r} from the Hugging Face hub while offline "
                            f"(HF_HUB_OFFLINE is set): {fix}")
    try:
        import datasets

        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:  # any hub, network or loading-script failure is the same user problem
        reason = first_line(err, 160)
        raise CodepeftError(f"cannot load data set {hub_id!r} (split {split!r}) from the Hugging Face hub "
                            f"({reason}): {fix}") from err


def read_json_list(path: Path) -> list[dict[str, Any]]:
    """A JSON file holding a list of objects."""
    return _read_json_list(path)[0]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A JSON Lines file (``.gz`` allowed): one object per non-blank line."""
    return _read_jsonl(path)[0]


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects or JSON Lines (``.gz`` allowed), whatever the file is named."""
    return read_located_records(path)[0]


def read_located_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a JSON list or JSON Lines file and where each one is (``line 3`` or ``record 3``).

    The format is told by the content, not the name: a ``.json`` file of JSON lines and a ``.jsonl``
    file holding one list both read, as published data sets use either.
    """
    _require_file(path)
    return _read_json_list(path) if _starts_with_list(path) else _read_jsonl(path)


def _starts_with_list(path: Path) -> bool:
    try:
        with _open_text(path) as handle:
            while chunk := handle.read(4096):
                stripped = chunk.lstrip()
                if stripped:
                    return stripped.startswith("[")
    except (UnicodeDecodeError, OSError, EOFError) as err:
        reason = first_line(err, 120)
        raise CodepeftError(f"data file {path} cannot be read ({reason}): fix or replace the file") from err
    return False


def _read_json_list(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    _require_file(path)
    try:
        with _open_text(path) as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as err:
        reason = first_line(err, 120)
        raise CodepeftError(f"data file {path} is not valid JSON ({reason}): fix or replace the file") from err
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise CodepeftError(f"data file {path} must hold a JSON list of objects: fix or replace the file")
    return data, [f"record {n}" for n in range(1, len(data) + 1)]


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    _require_file(path)
    rows: list[dict[str, Any]] = []
    where: list[str] = []
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CodepeftError(f"data file {path} line {number} is not valid JSON ({first_line(err, 120)}): "
                                        "fix the line or the file") from err
                if not isinstance(row, dict):
                    raise CodepeftError(f"data file {path} line {number} is not a JSON object: "
                                        "write one object per line")
                rows.append(row)
                where.append(f"line {number}")
    except (UnicodeDecodeError, OSError, EOFError) as err:
        reason = first_line(err, 120)
        raise CodepeftError(f"data file {path} cannot be read ({reason}): fix or replace the file") from err
    return rows, where


def require_fields(rows: Sequence[dict[str, Any]], fields: Iterable[str], source: str, hint: str) -> None:
    """Fail on the first row missing one of ``fields``; ``hint`` says how to fix it."""
    for number, row in enumerate(rows, start=1):
        for name in fields:
            if name not in row:
                present = ", ".join(sorted(row)[:12]) or "none"
                raise CodepeftError(f"record {number} of {source} has no field {name!r} (fields: {present}): {hint}")


def setup_code(value: Any, where: str, fix: str = "fix the file") -> str:
    """Setup run before the tests: code, or a list of lines (MBPP sanitized's ``test_imports``) joined.

    Anything else is an error: a list turned into its ``str`` would run as a no-op expression.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "\n".join(value)
    raise CodepeftError(f"the setup code of {where} is a {type(value).__name__}, not code or a list of code "
                        f"lines: {fix}")


def unique_ids(raw_ids: Iterable[Any]) -> list[str]:
    """Stable string ids; a repeated id gets ``#2``, ``#3``... in order of appearance."""
    seen: Counter[str] = Counter()
    ids = []
    for raw in raw_ids:
        key = str(raw)
        seen[key] += 1
        ids.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return ids


def _require_file(path: Path) -> None:
    if not path.is_file():
        where = "does not exist" if not path.exists() else "is not a file"
        raise CodepeftError(f"data file {path} {where}: pass --data-dir DIR holding the data sets "
                            "(layout in docs/data.md) or fix the path")


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")

class CachedTask(Task):
    """A task that reads each split once per instance, validates its options and refuses empty splits.

    Subclasses implement ``load_local(split, data_dir)`` and ``load_hub(split)``; ``options`` lists
    the accepted option names (anything else is a one-line error).
    """

    options_help: ClassVar[dict[str, str]] = {}

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        unknown = sorted(set(options) - set(self.options_help))
        if unknown:
            accepted = ", ".join(sorted(self.options_help)) or "none"
            raise CodepeftError(f"data set {self.name!r} has no option {unknown[0]!r}: accepted options: {accepted} "
                                "(--data-option KEY=VALUE)")
        self._cache: dict[str, list[Example]] = {}

    def source_dir(self) -> Path | None:
        """Where local files are read from, or ``None`` for the hub."""
        if self.data_dir is not None:
            if not self.data_dir.is_dir():
                raise CodepeftError(f"data directory {self.data_dir} does not exist: pass --data-dir DIR "
                                    "holding the data sets (layout in docs/data.md)")
            return self.data_dir
        from codepeft import home

        found = home.default_data_dir()
        if found is not None and not found.is_dir() and os.environ.get("CODEPEFT_DATA_DIR"):
            raise CodepeftError(f"CODEPEFT_DATA_DIR={found} is not a directory: point it at the data sets "
                                "or unset it to use the Hugging Face hub")
        return found if found is not None and found.is_dir() else None

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        if split not in self._cache:
            directory = self.source_dir()
            examples = self.load_local(split, directory) if directory is not None else self.load_hub(split)
            if not examples:
                raise CodepeftError(f"split {split!r} of data set {self.name!r} is empty: "
                                    f"check the data file and the task options ({self.options or 'none'})")
            self._cache[split] = examples
        return list(self._cache[split])

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        raise NotImplementedError

    def load_hub(self, split: str) -> list[Example]:
        raise NotImplementedError

    def local_path(self, data_dir: Path, relative: str) -> Path:
        """A file under ``data_dir``, or a one-line error naming it and the expected layout."""
        path = data_dir / relative
        if not path.is_file():
            raise CodepeftError(f"data file {relative} for data set {self.name!r} not found under {data_dir}: "
                                "pass --data-dir DIR holding the data sets (layout in docs/data.md)")
        return path
