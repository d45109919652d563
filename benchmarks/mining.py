"""Benchmark: mine the whole installed standard library.

Prints files/s and functions/s and the counts for ``codepeft mine stdlib`` with 1 and 2 parsing
processes, side by side with a floor measured in the same run: reading and ``ast.parse``-ing the same
files and nothing else. Each configuration runs ``--repeats`` times; the table shows medians.
Goal: the whole standard library in under a minute on 2 cores.

    .venv/bin/python benchmarks/mining.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import statistics
import time

from rich.console import Console
from rich.table import Table

from codepeft.mining import MineSettings, mine, resolve_target
from codepeft.mining.extract import read_source


def parse_only(files) -> float:
    started = time.perf_counter()
    for path in files:
        with contextlib.suppress(SyntaxError, UnicodeDecodeError, ValueError):
            ast.parse(read_source(path))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = resolve_target("stdlib").files
    table = Table(title=f"mining the standard library ({len(files)} files), median of {args.repeats}")
    for column in ("configuration", "seconds", "files/s", "functions/s", "vs 1 process"):
        table.add_column(column, justify="right" if column != "configuration" else "left")
    floor = statistics.median(parse_only(files) for _ in range(args.repeats))
    summaries = {}
    for workers in (1, 2):
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            _, summary = mine("stdlib", MineSettings(workers=workers))
            runs.append(time.perf_counter() - started)
        summaries[workers] = (statistics.median(runs), summary)
    base_seconds = summaries[1][0]
    table.add_row("floor: read + ast.parse only", f"{floor:.2f}", f"{len(files) / floor:.0f}", "-",
                  f"{base_seconds / floor:.2f}x")
    for workers, (seconds, summary) in summaries.items():
        table.add_row(f"codepeft mine stdlib, {workers} process(es)", f"{seconds:.2f}",
                      f"{summary.files_found / seconds:.0f}", f"{summary.functions_found / seconds:.0f}",
                      f"{base_seconds / seconds:.2f}x")
    console = Console()
    console.print(table)
    summary = summaries[2][1]
    counts = Table(title="counts (2 processes)")
    counts.add_column("count")
    counts.add_column("value", justify="right")
    for key in ("files_found", "files_read", "functions_found", "exact_duplicates", "near_duplicates", "kept",
                "with_doctests"):
        counts.add_row(key, str(getattr(summary, key)))
    for key, value in summary.files_skipped.items():
        counts.add_row(f"files skipped: {key}", str(value))
    for key, value in summary.dropped.items():
        counts.add_row(f"dropped: {key}", str(value))
    for key, value in summary.splits.items():
        counts.add_row(f"split {key}", f"{value} ({summary.split_files[key]} files)")
    console.print(counts)
    verdict = "meets" if summaries[2][0] < 60 else "MISSES"
    console.print(f"goal (< 60 s on 2 cores): {verdict} it at {summaries[2][0]:.1f} s")


if __name__ == "__main__":
    main()
