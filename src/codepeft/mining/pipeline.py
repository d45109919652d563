"""``mine``: a target's Python sources -> filtered, deduplicated, split examples and a summary."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from codepeft.data.base import Example
from codepeft.errors import CodepeftError
from codepeft.mining.dedup import deduplicate
from codepeft.mining.extract import Candidate, FileResult, extract_file
from codepeft.mining.filters import FILTER_REASONS, FilterSettings, drop_reason
from codepeft.mining.split import SPLIT_NAMES, split_by_file
from codepeft.mining.walk import SourceSet, resolve_target
from codepeft.rundir import write_jsonl, write_text

# Below this many files a process pool costs more than it saves.
_POOL_MIN_FILES = 32


class MineSettings(FilterSettings):
    """Everything that decides which examples a target yields and where they go."""

    seed: int = 0
    near_dup_threshold: float = Field(0.9, gt=0, description="token 3-gram Jaccard at or above which a function "
                                                             "is a near duplicate; above 1 disables")
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    workers: int = Field(2, ge=1)
    verify_doctests: bool = Field(False, description="run each doctest on its reference in the sandbox and keep "
                                                      "only those that pass (opt-in: it runs the mined code)")


@dataclass
class MiningSummary:
    """Counts from one mining run (written as ``OUT.summary.json``)."""

    target: str
    kind: str
    root: str
    license: str | None
    files_found: int = 0
    files_read: int = 0
    files_skipped: dict[str, int] = field(default_factory=dict)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    functions_found: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0
    with_doctests: int = 0
    doctests_failing_on_reference: int | None = None  # only counted with verify_doctests
    splits: dict[str, int] = field(default_factory=dict)
    split_files: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def intent_for(candidate: Candidate) -> str:
    """The request for a function: its signature, where it lives, and its docstring's summary."""
    if candidate.is_method:
        owner = candidate.qualname.rsplit(".", 1)[0]
        place = f"the method `{candidate.signature}` of class `{owner}` in module `{candidate.module}`"
    else:
        place = f"the function `{candidate.signature}` in module `{candidate.module}`"
    return f"Write the body of {place}: {candidate.summary}"


def doctest_payload(candidate: Candidate, file: FileResult) -> dict[str, Any] | None:
    """Doctest tests for module-level functions only (a method's doctests need an instance to exist)."""
    if not candidate.has_doctest or candidate.is_method:
        return None
    return {"kind": "doctest", "setup": file.setup, "header": candidate.header,
            "entry_point": candidate.name, "doctest": candidate.docstring}


def read_files(sources: SourceSet, workers: int) -> list[FileResult]:
    """Parse every file, in a pool of ``workers`` processes for large targets; input order is kept."""
    jobs = [(path, sources.root) for path in sources.files]
    if workers <= 1 or len(jobs) < _POOL_MIN_FILES:
        return [_extract_or_report(path, root) for path, root in jobs]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with multiprocessing.get_context(method).Pool(min(workers, os.cpu_count() or 1)) as pool:
        return pool.starmap(_extract_or_report, jobs, chunksize=8)


def _extract_or_report(path: Path, root: Path) -> FileResult:
    """``extract_file``, with any unforeseen failure on one odd file reported as a skip, not a traceback."""
    try:
        return extract_file(path, root)
    except Exception as err:  # one strange file must not end a run over thousands
        relpath = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        return FileResult(str(path), relpath, "", skipped="failed", detail=f"{type(err).__name__}: {err}")


def mine(target: str, settings: MineSettings | None = None) -> tuple[list[dict[str, Any]], MiningSummary]:
    """Mine ``target`` into example records (``Example`` fields plus ``split``) and a summary."""
    settings = settings or MineSettings()
    if settings.min_lines > settings.max_lines:
        raise CodepeftError(f"--min-lines {settings.min_lines} is above --max-lines {settings.max_lines}: "
                            "make the minimum at most the maximum")
    started = time.perf_counter()
    sources = resolve_target(target, include_tests=settings.include_tests)
    summary = MiningSummary(target=target, kind=sources.kind, root=str(sources.root), license=sources.license,
                            settings=settings.model_dump())
    skipped: Counter[str] = Counter(sources.skipped)
    if not sources.files:
        where = "tracked by git in" if sources.kind == "git" else "found in"
        raise CodepeftError(f"no Python files {where} {target!r}"
                            + (f" ({sum(skipped.values())} unreadable entries or symlink loops skipped)"
                               if skipped else "")
                            + ": point codepeft mine at a folder, git checkout or package with .py files")
    results = read_files(sources, settings.workers)
    summary.files_found = len(results)
    dropped: Counter[str] = Counter()
    kept: list[tuple[Candidate, FileResult]] = []
    for file in results:
        if file.skipped:
            skipped[file.skipped] += 1
            summary.skipped_files.append({"file": file.relpath, "reason": file.skipped, "detail": file.detail})
            continue
        summary.files_read += 1
        summary.functions_found += len(file.candidates)
        for candidate in file.candidates:
            reason = drop_reason(candidate, file, settings)
            if reason:
                dropped[reason] += 1
            else:
                kept.append((candidate, file))
    summary.files_skipped = dict(skipped)
    summary.dropped = {reason: dropped[reason] for reason in FILTER_REASONS}

    keep, summary.exact_duplicates, summary.near_duplicates = deduplicate(
        [candidate.tokens for candidate, _ in kept], settings.near_dup_threshold)
    kept = [kept[i] for i in keep]
    mapping = split_by_file([file.relpath for _, file in kept], settings.split, settings.seed)

    records: list[dict[str, Any]] = []
    used_ids: set[str] = set()
    for candidate, file in kept:
        example_id = f"{candidate.module}.{candidate.qualname}"
        if example_id in used_ids:  # the same name defined twice (e.g. under `if sys.platform ...`)
            example_id = f"{example_id}@{candidate.line}"
        used_ids.add(example_id)
        example = Example(
            id=example_id, intent=intent_for(candidate), reference=candidate.reference,
            tests=doctest_payload(candidate, file),
            meta={"file": file.relpath, "line": candidate.line, "qualname": candidate.qualname,
                  "module": candidate.module, "license": sources.license, "signature": candidate.signature,
                  "summary": candidate.summary},
        )
        records.append({**example.to_dict(), "split": mapping[file.relpath]})
    if settings.verify_doctests:
        summary.doctests_failing_on_reference = verify_doctests(records)
    summary.kept = len(records)
    summary.with_doctests = sum(1 for r in records if r["tests"])
    summary.splits = {name: sum(1 for r in records if r["split"] == name) for name in SPLIT_NAMES}
    summary.split_files = {name: sum(1 for s in mapping.values() if s == name) for name in SPLIT_NAMES}
    summary.seconds = round(time.perf_counter() - started, 3)
    return records, summary


def verify_doctests(records: list[dict[str, Any]], timeout: float = 10.0) -> int:
    """Run every doctest on its own reference in the sandbox; drop the tests of those that fail (in place).

    Many docstring examples are illustrations that need module-level helpers or state; a test the
    reference itself fails would only add noise to pass@k.
    """
    from codepeft.sandbox import build_program, run_many

    tested = [record for record in records if record["tests"]]
    outcomes = run_many([build_program(r["reference"], r["tests"]) for r in tested], timeout=timeout)
    failing = 0
    for record, outcome in zip(tested, outcomes, strict=True):
        if not outcome.passed:
            record["tests"] = None
            failing += 1
    return failing


def summary_path(output: Path) -> Path:
    """``data.jsonl`` -> ``data.summary.json``, beside it."""
    return output.with_suffix(".summary.json")


def write_dataset(records: list[dict[str, Any]], summary: MiningSummary, output: Path, force: bool = False) -> None:
    """Write the JSONL and its summary atomically; refuse to replace an existing file unless ``force``."""
    if output.exists() and not force:
        raise CodepeftError(f"{output} already exists: pass --force to overwrite it or choose another -o path")
    if output.is_dir():
        raise CodepeftError(f"{output} is a folder: give a file path such as {output / 'mined.jsonl'}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CodepeftError(f"cannot write {output}: {err.strerror or err}; choose a writable -o path") from err
    write_jsonl(output, records)
    write_text(summary_path(output), json.dumps(summary.to_dict(), indent=2) + "\n")
