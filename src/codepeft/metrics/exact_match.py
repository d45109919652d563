"""Exact match at k: does one of k candidates equal the reference?

Ordered candidates (greedy, beams ranked by score) are matched at k when one of the first k equals
the reference, as the reference study's EM@k over 10 beams. Sampled candidates are exchangeable
draws, so EM@k is estimated as pass@k is: from the c of all n samples that match, the unbiased
chance that k drawn hold one (``estimator.py``); using only the first k would throw away n - k
samples and leave EM@1 resting on one draw per problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from codepeft.data.postprocess import normalize_code
from codepeft.metrics.estimator import DEFAULT_KS, hits_at_ks

EM_RANKED = "first k of the ranked candidates"
EM_SAMPLED = "unbiased estimate over all n samples"
# Part of a study's scoring settings, so runs scored by an earlier rule are rescored when a study resumes.
EM_AT_K_RULE = f"{EM_RANKED}; {EM_SAMPLED}"


def candidate_matches(
    candidates: Sequence[Sequence[str]], references: Sequence[str], normalize: Callable[[str], str] = normalize_code
) -> list[list[bool]]:
    """Per example, whether each candidate equals the reference after the same ``normalize``.

    Comparison is plain string equality, so code with ``<``, ``>``, ``|`` or regex metacharacters is
    compared as it is.
    """
    if len(candidates) != len(references):
        raise ValueError("one list of candidates per reference")
    matches = []
    for cands, ref in zip(candidates, references, strict=True):
        target = normalize(ref)
        matches.append([normalize(c) == target for c in cands])
    return matches


def exact_match_at_k(
    candidates: Sequence[Sequence[str]],
    references: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    normalize: Callable[[str], str] = normalize_code,
    sampled: bool = False,
) -> dict[str, float]:
    """``{"em@1": ..., "em@2": ...}`` in percent, for each k that every example has candidates for.

    ``sampled``: the candidates are independent samples (estimate over all n), else they are ranked
    (match among the first k).
    """
    return em_at_k_of_matches(candidate_matches(candidates, references, normalize), ks, sampled)


def exact_match_per_example(
    candidates: Sequence[Sequence[str]], references: Sequence[str], normalize: Callable[[str], str] = normalize_code,
    sampled: bool = False,
) -> list[float]:
    """EM@1 of each example, for bootstrap intervals and paired tests: the share of its samples that match
    (``sampled``), else whether its first candidate matches (1.0 or 0.0)."""
    return em_per_example_of_matches(candidate_matches(candidates, references, normalize), sampled)


def em_at_k_of_matches(matches: Sequence[Sequence[bool]], ks: Sequence[int], sampled: bool) -> dict[str, float]:
    """``exact_match_at_k`` from ``candidate_matches``' output (a scorer needing both EM views compares once)."""
    if sampled:
        return hits_at_ks(matches, ks, "em")
    if not matches:
        return {}
    available = min(len(m) for m in matches)
    return {f"em@{k}": 100.0 * sum(any(m[:k]) for m in matches) / len(matches) for k in ks if k <= available}


def em_per_example_of_matches(matches: Sequence[Sequence[bool]], sampled: bool) -> list[float]:
    """``exact_match_per_example`` from ``candidate_matches``' output."""
    if sampled:
        return [sum(m) / len(m) if m else 0.0 for m in matches]
    return [float(bool(m) and m[0]) for m in matches]
