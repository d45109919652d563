"""CodeBLEU (both ways), BLEU and chrF against the packages they come from, on the same inputs."""

from __future__ import annotations

import pytest
import sacrebleu
from codebleu import calc_codebleu

from codepeft.metrics.similarity import COMPONENTS, bleu_chrf, codebleu

REFERENCES = [
    "def add(a, b):\n    total = a + b\n    return total",
    "values = [x * 2 for x in range(10)]\nprint(values)",
    "with open(path) as handle:\n    lines = handle.readlines()",
]
PREDICTIONS = [
    "def add(a, b):\n    return a + b",
    "values = [x * 3 for x in range(10)]\nprint(values)",
    "lines = open(path).read().split('\\n')",
]


def test_codebleu_package_value_and_components_match_the_package():
    ours = codebleu(PREDICTIONS, REFERENCES)
    theirs = calc_codebleu(REFERENCES, PREDICTIONS, lang="python", weights=(0.25, 0.25, 0.25, 0.25))
    assert ours["codebleu_package"] == pytest.approx(theirs["codebleu"])
    for name in COMPONENTS:
        assert ours["codebleu_components"][name] == pytest.approx(theirs[name])
    # These references have data-flow and some of it matches: both ways agree.
    assert ours["codebleu_dataflow"] == "measured"
    assert 0 < ours["codebleu_components"]["dataflow_match_score"] < 1
    assert ours["codebleu"] == pytest.approx(ours["codebleu_package"])


def test_identical_code_scores_one_at_corpus_level():
    result = codebleu(REFERENCES, REFERENCES)
    assert result["codebleu"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in result["codebleu_components"].values())


def test_references_without_dataflow_leave_the_term_out():
    # One token each, different: no n-gram matches, the same syntax tree, no data-flow at all.
    result = codebleu(["print(a)"], ["print(b)"])
    components = result["codebleu_components"]
    assert (components["ngram_match_score"], components["syntax_match_score"]) == (0.0, 1.0)
    assert result["codebleu_package"] == pytest.approx(0.25 * 0 + 0.25 * 0 + 0.25 * 1 + 0.25 * 1)  # "perfect" flow
    assert result["codebleu"] == pytest.approx(1 / 3)  # the three measured terms, renormalised
    assert result["codebleu_dataflow"].startswith("absent")


def test_unmatched_dataflow_counts_as_zero_in_the_headline():
    result = codebleu(["print(3)"], ["x = 1\ny = x"])
    components = result["codebleu_components"]
    assert components["dataflow_match_score"] == 0.0 and result["codebleu_dataflow"] == "measured"
    three = 0.25 * (components["ngram_match_score"] + components["weighted_ngram_match_score"]
                    + components["syntax_match_score"])
    assert result["codebleu"] == pytest.approx(three)
    assert result["codebleu_package"] == pytest.approx(three + 0.25)  # the package's trap


def test_bleu_and_chrf_are_sacrebleu_corpus_scores():
    result = bleu_chrf(PREDICTIONS, REFERENCES)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score)
    assert bleu_chrf(REFERENCES, REFERENCES) == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    assert 0 < result["bleu"] < 100
