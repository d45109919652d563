"""Retrieval of demonstrations for RAG: BM25, dense and hybrid indexes over a pool of intents.

``retrieve(name, pool_texts, query_texts, k, exclude=...)`` returns, per query, the indices of the
``k`` most similar pool texts, most similar first, never one of the query's excluded indices.
``self_matches(queries, pool)`` names those exclusions (the query itself or an exact duplicate of
it, so overlapping splits cannot leak the answer). Indexes are cached on disk (``cache.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codepeft.data.base import Example
from codepeft.errors import CodepeftError

RETRIEVERS = ("bm25", "dense", "hybrid")
#: Queries scored per step: bounds memory to ``QUERY_CHUNK x pool`` floats on large pools.
QUERY_CHUNK = 256


def open_index(name: str, pool_texts: Sequence[str], *, embedding_model: str | None = None):
    """The (cached) index of ``pool_texts`` for retriever ``name``."""
    if name == "bm25":
        from codepeft.retrieval.bm25 import BM25Index

        return BM25Index.open(pool_texts)
    if name == "dense":
        from codepeft.retrieval.dense import DenseIndex

        return DenseIndex.open(pool_texts, embedding_model)
    if name == "hybrid":
        from codepeft.retrieval.hybrid import HybridIndex

        return HybridIndex.open(pool_texts, embedding_model)
    raise CodepeftError(f"unknown retriever {name!r}: use one of {', '.join(RETRIEVERS)}")


def _whitespace(text: str) -> str:
    return " ".join(text.split())


def self_matches(queries: Sequence[Example], pool: Sequence[Example]) -> list[set[int]]:
    """Per query, the pool indices that must never be shown to it: same id, or same (intent, reference)."""
    by_id: dict[str, set[int]] = {}
    by_content: dict[tuple[str, str], set[int]] = {}
    for index, item in enumerate(pool):
        by_id.setdefault(item.id, set()).add(index)
        by_content.setdefault((_whitespace(item.intent), _whitespace(item.reference)), set()).add(index)
    return [
        by_id.get(q.id, set()) | by_content.get((_whitespace(q.intent), _whitespace(q.reference)), set())
        for q in queries
    ]


def mask(scores: np.ndarray, exclude: Sequence[set[int]]) -> np.ndarray:
    """``scores`` with each row's excluded columns set to -inf."""
    scores = scores.astype(np.float64, copy=True)
    for row, excluded in enumerate(exclude):
        if excluded:
            scores[row, list(excluded)] = -np.inf
    return scores


def top_k(scores: np.ndarray, k: int, exclude: Sequence[set[int]] | None = None) -> list[list[int]]:
    """Indices of the ``k`` best columns per row, best first, ties to the lower index, skipping excluded.

    Equal to a full stable sort, but partitions first: only rows whose k-th best score is tied with
    a score outside the top k need the per-row tie-break.
    """
    if exclude is not None and any(exclude):
        scores = mask(scores, exclude)
    n_rows, size = scores.shape
    k = min(k, size)
    if k == 0:
        return [[] for _ in range(n_rows)]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    kth = values.min(axis=1)
    # lexsort's last key is primary: score descending, then index ascending.
    order = np.lexsort((part, -values), axis=1)
    best = np.take_along_axis(part, order, axis=1)
    tied_outside = (scores >= kth[:, None]).sum(axis=1) > k
    found: list[list[int]] = []
    for r in range(n_rows):
        row = scores[r]
        if tied_outside[r]:
            candidates = np.flatnonzero(row >= kth[r])
            chosen = candidates[np.lexsort((candidates, -row[candidates]))][:k]
        else:
            chosen = best[r]
        found.append([int(i) for i in chosen if np.isfinite(row[i])])
    return found


def retrieve(
    name: str,
    pool_texts: Sequence[str],
    query_texts: Sequence[str],
    k: int,
    *,
    exclude: Sequence[set[int]] | None = None,
    embedding_model: str | None = None,
) -> list[list[int]]:
    """The ``k`` nearest pool indices for every query, most similar first."""
    if k < 0:
        raise CodepeftError(f"retrieval k={k} is negative: pass k >= 0")
    if not pool_texts:
        raise CodepeftError("cannot retrieve from an empty pool: use a pool split that has examples")
    if k > len(pool_texts):
        raise CodepeftError(
            f"retrieval k={k} is larger than the pool ({len(pool_texts)} examples): pass k <= {len(pool_texts)}"
        )
    index = open_index(name, pool_texts, embedding_model=embedding_model)
    if k == 0:
        return [[] for _ in query_texts]
    exclude = list(exclude) if exclude is not None else [set() for _ in query_texts]
    found: list[list[int]] = []
    for start in range(0, len(query_texts), QUERY_CHUNK):
        chunk = list(query_texts[start:start + QUERY_CHUNK])
        chunk_exclude = exclude[start:start + QUERY_CHUNK]
        # Hybrid removes excluded items before ranking, so they cannot take a rank in the fusion.
        fused = getattr(index, "masked_scores", None)
        scores = fused(chunk, chunk_exclude) if fused else index.scores(chunk)
        found.extend(top_k(scores, k, chunk_exclude))
    return found
