"""EM@k: the first k of ranked candidates, and for sampled candidates the unbiased estimate over all n."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest

from codepeft.metrics import exact_match_at_k, exact_match_per_example, run_summary, score_run

# Problem 1: the reference "a" is the 2nd and 3rd of three candidates; problem 2: "b" is the first only.
CANDIDATES = [["x", "a", "a"], ["b", "c", "d"]]
REFERENCES = ["a", "b"]


def _brute_force_em(candidates: list[str], reference: str, k: int) -> float:
    """Share of the k-subsets of the samples that hold the reference."""
    subsets = list(combinations(candidates, k))
    return sum(reference in s for s in subsets) / len(subsets)


def test_ranked_candidates_match_among_the_first_k():
    scores = exact_match_at_k(CANDIDATES, REFERENCES, ks=(1, 2, 3, 5))
    assert scores == {"em@1": pytest.approx(50.0), "em@2": pytest.approx(100.0), "em@3": pytest.approx(100.0)}
    assert exact_match_per_example(CANDIDATES, REFERENCES) == [0.0, 1.0]


def test_sampled_candidates_are_estimated_over_all_samples():
    scores = exact_match_at_k(CANDIDATES, REFERENCES, ks=(1, 2, 3, 5), sampled=True)
    for k in (1, 2, 3):
        expected = sum(_brute_force_em(c, r, k) for c, r in zip(CANDIDATES, REFERENCES, strict=True)) / 2
        assert scores[f"em@{k}"] == pytest.approx(100.0 * expected)
    assert scores["em@1"] == pytest.approx(50.0) and scores["em@2"] == pytest.approx(100.0 * (1 + 2 / 3) / 2)
    assert "em@5" not in scores  # more than the 3 samples each problem has
    assert exact_match_per_example(CANDIDATES, REFERENCES, sampled=True) == pytest.approx([2 / 3, 1 / 3])


def _run(path: Path, strategy: str) -> Path:
    path.mkdir(parents=True)
    task = {"name": "conala", "spec": "conala", "split": "test", "options": {}}
    (path / "config.json").write_text(json.dumps({"task": task, "generation": {"strategy": strategy, "n": 3}}))
    records = [{"id": str(i), "candidates": c, "reference": r, "tests": None}
               for i, (c, r) in enumerate(zip(CANDIDATES, REFERENCES, strict=True))]
    (path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize(("strategy", "em1_per_example", "em2"), [
    ("sample", [2 / 3, 1 / 3], 100.0 * (1 + 2 / 3) / 2),
    ("beam", [0.0, 1.0], 100.0),
])
def test_score_run_reads_how_the_candidates_were_generated(tmp_path, strategy, em1_per_example, em2):
    run = _run(tmp_path / strategy, strategy)
    scored = score_run(run, metrics="em", ks=(1, 2))
    assert scored["per_example"]["em"] == pytest.approx(em1_per_example)
    assert scored["em@2"] == pytest.approx(em2)
    assert scored["em_at_k"] == ("unbiased estimate over all n samples" if strategy == "sample"
                                 else "first k of the ranked candidates")
    assert run_summary(run, ks=[1, 2])["em@2"] == pytest.approx(em2)
