"""The run directory format: ``config.json``, ``environment.json``, ``generations.jsonl``, ``metrics.json``,
and the safe writes every stage uses (one atomic JSON write, one guard for failed writes).

Generation writes it, scoring reads it; scoring never needs the model. It sits below every concern
that reads or writes run directories (generation, training, metrics, study, report). Each line of
``generations.jsonl`` is one example::

    {"id", "prompt", "candidates": [code, ...], "raw": [text, ...], "reference", "tests",
     "prompt_tokens", "new_tokens": [...], "seconds"}
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codepeft.errors import CodepeftError

GENERATIONS = "generations.jsonl"
CONFIG = "config.json"
ENVIRONMENT = "environment.json"
METRICS = "metrics.json"


@contextlib.contextmanager
def writing(what: Path, cleanup: Path | None = None) -> Iterator[None]:
    """Turn a failed write (full disk, permissions) into a one-line error; remove the partial ``cleanup``."""
    try:
        yield
    except OSError as err:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        reason = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        raise CodepeftError(
            f"cannot write {what}: {reason}; files saved before are kept: free space and rerun to resume"
        ) from None


def write_json(path: Path, obj: Any, *, overwrite: bool = True) -> None:
    """Atomic write (temp file + rename) so a kill never leaves half a file behind."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CodepeftError(f"{path} already exists: pass --force to overwrite it")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise CodepeftError(f"{path} not found: check the run directory")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CodepeftError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None


@dataclass
class GenerationsFile:
    """Records of a ``generations.jsonl``; ``truncated`` is set when its last line was cut off."""

    records: list[dict[str, Any]]
    truncated: bool = False


def append_generations(run_dir: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records, one flushed line each, so a killed run keeps all finished examples."""
    with open(Path(run_dir) / GENERATIONS, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as handle:
        yield from enumerate(handle, start=1)


def read_generations(run_dir_or_file: Path) -> GenerationsFile:
    """Read a generations file (or a run directory holding one).

    A malformed line in the middle is an error; a malformed *last* line is what a killed run leaves
    behind, so it is dropped and reported through ``truncated``.
    """
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / GENERATIONS
    if not path.exists():
        raise CodepeftError(f"no generations file at {path}: run `codepeft evaluate` first")
    lines = [(n, line) for n, line in iter_lines(path) if line.strip()]
    records: list[dict[str, Any]] = []
    truncated = False
    for index, (lineno, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "id" not in record or "candidates" not in record:
                raise ValueError("missing 'id' or 'candidates'")
        except (json.JSONDecodeError, ValueError) as err:
            if index == len(lines) - 1:
                truncated = True
                break
            raise CodepeftError(f"{path} line {lineno} is malformed ({err}): regenerate the run") from None
        records.append(record)
    if not records and not truncated:
        raise CodepeftError(f"{path} is empty: regenerate the run")
    return GenerationsFile(records, truncated)

