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
            remove(cleanup)
        if err.errno == errno.ENOSPC:
            reason, fix = "no space left on device", "free space and rerun to resume"
        else:
            reason, fix = err.strerror or str(err), "check that its folder is writable and rerun"
        raise CodepeftError(f"cannot write {what}: {reason}; files saved before are kept: {fix}") from None


def remove(path: Path) -> None:
    """Remove a file or a directory tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """The one atomic write: yields a temporary sibling of ``path`` to fill (a file or a directory).

    When the block ends normally the temporary replaces ``path`` by rename, so a kill or a full disk
    never leaves half a file or directory that looks whole (a directory being replaced is kept until
    its successor is in place). When the block fails the temporary is removed; an ``OSError`` becomes
    the one-line error of ``writing``.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    remove(tmp)
    with writing(path, cleanup=tmp):
        try:
            yield tmp
        except BaseException:
            remove(tmp)
            raise
        if tmp.is_dir() and path.exists():
            old = path.with_name(f".old-{path.name}")
            remove(old)
            path.rename(old)
            tmp.rename(path)
            remove(old)
        else:
            os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` (see ``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any, *, overwrite: bool = True) -> None:
    """Atomic write (temp file + rename) so a kill never leaves half a file behind."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CodepeftError(f"{path} already exists: pass --force to overwrite it")
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Atomically write ``records``, one JSON line each."""
    write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise CodepeftError(f"{path} not found: check the run directory")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CodepeftError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None


class RunDir:
    """One run directory and the one policy every stage (train, evaluate, score, study) applies to it.

    - *resume*: a stage finds its own files (``has``, ``read``) and continues from them;
    - *refuse*: a finished result, or one made by a different request, is never replaced silently
      (``refuse_finished``, ``changed``): the error says to pass ``--force`` or choose another directory;
    - *force*: the stage removes exactly the files it produces (``clear``) or the whole run (``wipe``);
    - *finish*: every file is written atomically (``write``), so "finished" is only ever read from a
      whole file.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def existing(cls, path: Path | str, hint: str) -> RunDir:
        """A run directory that must already exist (``hint`` says which command writes it)."""
        run = cls(path)
        if not run.path.is_dir():
            raise CodepeftError(f"run directory {run.path} not found: {hint}")
        return run

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def read(self, name: str) -> Any | None:
        """A JSON file of the run, or ``None`` when it is missing or unreadable (a killed write)."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write(self, name: str, obj: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / name, obj)

    def refuse_finished(self, finished: bool, force: bool, what: str, fix: str, name: str | None = None) -> None:
        """Raise the one-line "already finished" error (about the run, or its file ``name``) unless ``force``."""
        if finished and not force:
            raise CodepeftError(f"{self.path / name if name else self.path} {what}: {fix}")

    def clear(self, *names: str) -> None:
        """Remove the named files or folders (what a stage produces, before it starts over)."""
        for name in names:
            remove(self.path / name)

    def wipe(self) -> None:
        """Remove the whole run (``--force`` on a study run)."""
        remove(self.path)

    @staticmethod
    def changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        """Keys whose values differ between two requests (compared as JSON)."""
        keys = sorted(set(old) | set(new))
        return [k for k in keys if json.dumps(old.get(k), sort_keys=True, default=str) !=
                json.dumps(new.get(k), sort_keys=True, default=str)]


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


def saved_generations(run_dir: Path) -> list[tuple[str, float]]:
    """(id, seconds) of each record already in a run's generations file; empty when there is none.

    What a killed attempt left behind: its records carry the generation time they took, which the
    attempt itself never got to add to the run's timings."""
    path = Path(run_dir) / GENERATIONS
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        records = read_generations(path).records
    except CodepeftError:
        return []
    return [(str(r["id"]), float(r.get("seconds") or 0.0)) for r in records]


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

