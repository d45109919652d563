"""Similarity to the reference: CodeBLEU (``codebleu`` package), BLEU and chrF (``sacrebleu``).

The headline numbers are corpus level (comparable with published results); ``*_per_example`` give
the same metrics sentence by sentence, so a study can bootstrap intervals and pair arms problem by
problem (the mean of sentence scores is not the corpus score: BLEU's n-gram counts are pooled over
the corpus, and a short sentence often has no 4-gram match at all).

The ``codebleu`` package scores the data-flow term as a perfect 1.0 whenever its match is 0, which
happens when the references yield no data-flow at all (common for one-line snippets). We report both:

- ``codebleu``: the headline. When the references have no data-flow the term is left out and the other
  three weights are renormalised; otherwise the term is the real match (0 counts as 0).
- ``codebleu_package``: what ``codebleu.calc_codebleu`` returns, for comparison with published numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

WEIGHTS = (0.25, 0.25, 0.25, 0.25)
COMPONENTS = ("ngram_match_score", "weighted_ngram_match_score", "syntax_match_score", "dataflow_match_score")


def codebleu(predictions: Sequence[str], references: Sequence[str], lang: str = "python") -> dict[str, Any]:
    """Corpus-level CodeBLEU with its four components, in [0, 1], reported both ways (see module doc)."""
    from codebleu import calc_codebleu
    from codebleu.dataflow_match import corpus_dataflow_match
    from codebleu.utils import get_tree_sitter_language

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the package warns through the root logger on every empty data-flow
    try:
        package = calc_codebleu(list(references), list(predictions), lang=lang, weights=WEIGHTS)
        ref_lists = [[r.strip()] for r in references]
        # References matched against themselves score 0 only when they contain no data-flow at all.
        references_have_dataflow = corpus_dataflow_match(
            ref_lists, [r.strip() for r in references], lang, tree_sitter_language=get_tree_sitter_language(lang)
        ) > 0
    finally:
        quiet.setLevel(level)
    components = {name: float(package[name]) for name in COMPONENTS}
    first_three = [components[name] for name in COMPONENTS[:3]]
    if references_have_dataflow:
        headline = sum(w * s for w, s in zip(WEIGHTS, [*first_three, components["dataflow_match_score"]], strict=True))
    else:
        headline = sum(w * s for w, s in zip(WEIGHTS[:3], first_three, strict=True)) / sum(WEIGHTS[:3])
    return {
        "codebleu": headline,
        "codebleu_package": float(package["codebleu"]),
        "codebleu_components": components,
        "codebleu_dataflow": "measured" if references_have_dataflow else "absent in references: term left out",
    }


def codebleu_per_example(predictions: Sequence[str], references: Sequence[str], lang: str = "python") -> list[float]:
    """Sentence-level CodeBLEU of each prediction, with the headline's rule for the data-flow term per reference."""
    from codebleu import calc_codebleu
    from codebleu.dataflow_match import corpus_dataflow_match
    from codebleu.utils import get_tree_sitter_language

    language = get_tree_sitter_language(lang)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    scores: list[float] = []
    try:
        for prediction, reference in zip(predictions, references, strict=True):
            package = calc_codebleu([reference], [prediction], lang=lang, weights=WEIGHTS)
            parts = [float(package[name]) for name in COMPONENTS]
            has_dataflow = corpus_dataflow_match([[reference.strip()]], [reference.strip()], lang,
                                                 tree_sitter_language=language) > 0
            if has_dataflow:
                scores.append(sum(w * s for w, s in zip(WEIGHTS, parts, strict=True)))
            else:
                scores.append(sum(w * s for w, s in zip(WEIGHTS[:3], parts[:3], strict=True)) / sum(WEIGHTS[:3]))
    finally:
        quiet.setLevel(level)
    return scores


def bleu_chrf_per_example(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Sentence BLEU (sacrebleu's default exponential smoothing) and chrF of each prediction, 0-100."""
    import sacrebleu

    pairs = list(zip(predictions, references, strict=True))
    return {"bleu": [float(sacrebleu.sentence_bleu(p, [r]).score) for p, r in pairs],
            "chrf": [float(sacrebleu.sentence_chrf(p, [r]).score) for p, r in pairs]}


def bleu_chrf(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF from ``sacrebleu`` (0-100, default tokenizer and settings)."""
    import sacrebleu

    refs = [list(references)]
    return {"bleu": float(sacrebleu.corpus_bleu(list(predictions), refs).score),
            "chrf": float(sacrebleu.corpus_chrf(list(predictions), refs).score)}
