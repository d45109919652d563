"""Benchmark: codepeft's MinHash near-duplicate removal vs the same pipeline on ``datasketch``.

Input: the token lists of every function ``codepeft mine stdlib`` extracts (before filters), so both
see the same real code. Both sides drop exact duplicates the same way, build 64-permutation MinHash
signatures, look candidates up in 8 bands x 8 rows and confirm a candidate with the exact Jaccard of
token 3-grams (threshold 0.9); only the signature + LSH index differ (numpy multiply-shift here,
``datasketch.MinHash`` + ``MinHashLSH`` there). Prints the median seconds of ``--repeats`` runs side by
side and whether the kept indices are identical.

    .venv/bin/pip install datasketch==2.0.0   # only for this benchmark
    .venv/bin/python benchmarks/dedup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from codepeft.mining.dedup import deduplicate, jaccard, shingles
from codepeft.mining.pipeline import read_files
from codepeft.mining.walk import resolve_target

THRESHOLD = 0.9


def datasketch_deduplicate(token_lists: Sequence[Sequence[str]], threshold: float) -> tuple[list[int], int, int]:
    """The same contract as ``deduplicate``, the signatures and band index from datasketch."""
    from datasketch import MinHash, MinHashLSH

    keep, exact_dropped, _ = deduplicate(token_lists, threshold=2.0)  # exact pass only (identical on both)
    index = MinHashLSH(num_perm=64, params=(8, 8))
    sets: dict[int, set[int]] = {}
    survivors: list[int] = []
    near_dropped = 0
    for item in keep:
        shingle_set = shingles(token_lists[item])
        signature = MinHash(num_perm=64, seed=1)
        signature.update_batch([value.to_bytes(4, "little") for value in shingle_set])
        if any(jaccard(shingle_set, sets[other]) >= threshold for other in sorted(index.query(signature))):
            near_dropped += 1
            continue
        sets[item] = shingle_set
        survivors.append(item)
        index.insert(item, signature)
    return survivors, exact_dropped, near_dropped


def timed(function: Callable, token_lists: list, repeats: int) -> tuple[float, tuple[list[int], int, int]]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function(token_lists, THRESHOLD)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = read_files(resolve_target("stdlib"), workers=2)
    token_lists = [candidate.tokens for file in files for candidate in file.candidates]
    ours_seconds, ours = timed(deduplicate, token_lists, args.repeats)
    theirs_seconds, theirs = timed(datasketch_deduplicate, token_lists, args.repeats)
    table = Table(title=f"near-duplicate removal, {len(token_lists)} stdlib functions, median of {args.repeats}")
    for column in ("implementation", "seconds", "functions/s", "exact dropped", "near dropped", "vs codepeft"):
        table.add_column(column, justify="left" if column == "implementation" else "right")
    for name, seconds, (_, exact, near) in (("codepeft (numpy MinHash)", ours_seconds, ours),
                                            ("datasketch 2.0.0 MinHash + MinHashLSH", theirs_seconds, theirs)):
        table.add_row(name, f"{seconds:.2f}", f"{len(token_lists) / seconds:.0f}", str(exact), str(near),
                      f"{seconds / ours_seconds:.2f}x")
    console = Console()
    console.print(table)
    console.print(f"identical kept indices: {ours[0] == theirs[0]} "
                  f"({len(set(ours[0]) ^ set(theirs[0]))} indices differ)")


if __name__ == "__main__":
    main()
