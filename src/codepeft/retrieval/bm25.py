"""Lexical retrieval: BM25 over the intents, through ``bm25s`` (sparse, precomputed scores)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from codepeft.retrieval.cache import cached, index_dir, texts_checksum

#: Robertson's BM25 with the usual k1/b: the variant ``rank_bm25.BM25Okapi`` implements, so the
#: two rank the same way (see benchmarks/retrieval.py).
BM25_METHOD = "robertson"
K1 = 1.5
B = 0.75
_WORD = re.compile(r"[a-z0-9]+")


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


STOPWORDS = _stopwords()


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric words without English stop words (``snake_case`` splits into words)."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BM25Index:
    """BM25 scores of queries against a fixed list of texts."""

    name = "bm25"
    model_key = f"{BM25_METHOD}-k{K1}-b{B}-words-stopen"

    def __init__(self, engine) -> None:
        self.engine = engine
        self.size = int(engine.scores["num_docs"])

    @classmethod
    def build(cls, texts: Sequence[str]) -> BM25Index:
        """A bm25s index of ``texts``, its score matrix computed in one vectorized pass.

        bm25s builds its matrix with a Python loop per document (fast only with numba); the same
        Robertson weights computed with numpy make a build several times faster. The result is a
        plain ``bm25s.BM25`` (saved, loaded and scored by bm25s), checked against bm25s's own
        ``index()`` in tests/test_retrieval.py.
        """
        import bm25s

        # A document with no words still needs a row: an empty-token placeholder keeps indices aligned.
        documents = [tokenize(t) or [""] for t in texts]
        vocab: dict[str, int] = {}
        token_ids = [vocab.setdefault(word, len(vocab)) for words in documents for word in words]
        lengths = np.array([len(words) for words in documents], dtype=np.int64)
        n_docs, n_vocab = len(documents), len(vocab)
        doc_ids = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
        # One key per (token, document) pair; sorted keys are already in CSC order (by token, then document).
        keys, tf = np.unique(np.asarray(token_ids, dtype=np.int64) * n_docs + doc_ids, return_counts=True)
        token, doc = keys // n_docs, keys % n_docs
        df = np.bincount(token, minlength=n_vocab)
        idf = np.log(np.maximum((n_docs - df + 0.5) / (df + 0.5), 1.0))  # Robertson, never negative
        tfc = tf / (K1 * ((1 - B) + B * lengths[doc] / lengths.mean()) + tf)
        engine = bm25s.BM25(k1=K1, b=B, method=BM25_METHOD)
        engine.scores = {
            "data": (idf[token] * tfc).astype(np.float32),
            "indices": doc.astype(np.int32),
            "indptr": np.concatenate([[0], np.cumsum(df)]).astype(np.int64),
            "num_docs": n_docs,
        }
        engine.vocab_dict = vocab
        engine.unique_token_ids_set = set(vocab.values())
        engine.nonoccurrence_array = None
        return cls(engine)

    @classmethod
    def build_with_bm25s_loop(cls, texts: Sequence[str]) -> BM25Index:
        """The same index through ``bm25s.BM25.index`` (the reference the fast build is tested against)."""
        import bm25s

        engine = bm25s.BM25(k1=K1, b=B, method=BM25_METHOD)
        engine.index([tokenize(t) or [""] for t in texts], show_progress=False)
        return cls(engine)

    @classmethod
    def open(cls, texts: Sequence[str]) -> BM25Index:
        """The cached index of ``texts``, built on first use."""
        import bm25s

        directory = index_dir(cls.name, cls.model_key, texts_checksum(texts))
        return cached(
            directory,
            build=lambda d: cls.build(texts).engine.save(str(d), show_progress=False),
            load=lambda d: cls(bm25s.BM25.load(str(d), show_progress=False)),
        )

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), size)`` BM25 scores: one sparse product of query-term counts and the index."""
        from scipy.sparse import csr_matrix

        vocab = self.engine.vocab_dict
        rows, cols = [], []
        for row, query in enumerate(queries):
            ids = [vocab[w] for w in tokenize(query) if w in vocab]
            rows.extend([row] * len(ids))
            cols.extend(ids)
        stored = self.engine.scores  # per token, the BM25 weight of every document containing it
        term_doc = csr_matrix(
            (stored["data"], stored["indices"], stored["indptr"]), shape=(len(stored["indptr"]) - 1, self.size)
        )
        # A word repeated in the query counts once per occurrence, as in bm25s and rank_bm25.
        query_term = csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(queries), term_doc.shape[0])
        )
        return np.asarray((query_term @ term_doc).todense(), dtype=np.float32)
