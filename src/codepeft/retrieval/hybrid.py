"""Hybrid retrieval: reciprocal-rank fusion (RRF) of the BM25 and dense rankings.

Each pool item scores ``sum over retrievers of 1 / (RRF_K + rank)`` (rank from 1); fusing ranks
rather than raw scores needs no calibration between BM25 scores and cosine similarities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codepeft.retrieval.bm25 import BM25Index
from codepeft.retrieval.dense import DenseIndex

#: The constant of Cormack et al. (2009), used by most RRF implementations.
RRF_K = 60


def ranks(scores: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of every column in each row; ties broken by lower index first."""
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    out[rows, order] = np.arange(1, scores.shape[1] + 1)[None, :]
    return out


def reciprocal_rank_fusion(*score_matrices: np.ndarray, k: int = RRF_K) -> np.ndarray:
    """Fused scores of several ``(queries, pool)`` score matrices."""
    return sum(1.0 / (k + ranks(s)) for s in score_matrices)


class HybridIndex:
    """BM25 and dense fused by reciprocal rank."""

    name = "hybrid"

    def __init__(self, lexical: BM25Index, dense: DenseIndex) -> None:
        self.lexical = lexical
        self.dense = dense
        self.size = lexical.size

    @classmethod
    def open(cls, texts: Sequence[str], embedding_model: str | None = None) -> HybridIndex:
        return cls(BM25Index.open(texts), DenseIndex.open(texts, embedding_model))

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return reciprocal_rank_fusion(self.lexical.scores(queries), self.dense.scores(queries))

    def masked_scores(self, queries: Sequence[str], exclude: Sequence[set[int]]) -> np.ndarray:
        """Fusion of rankings from which the excluded items were removed first (they take no rank)."""
        from codepeft.retrieval import mask

        return reciprocal_rank_fusion(
            mask(self.lexical.scores(queries), exclude), mask(self.dense.scores(queries), exclude)
        )
