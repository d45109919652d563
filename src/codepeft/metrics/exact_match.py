"""Exact match at k: a reference is matched at k if it equals one of the first k candidates."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from codepeft.data.postprocess import normalize_code

DEFAULT_KS = (1, 2, 5, 10)


def exact_match_at_k(
    candidates: Sequence[Sequence[str]],
    references: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    normalize: Callable[[str], str] = normalize_code,
) -> dict[str, float]:
    """``{"em@1": ..., "em@2": ...}`` in percent, for each k that every example has candidates for.

    Candidates and references go through the same ``normalize``; comparison is plain string
    equality, so code with ``<``, ``>``, ``|`` or regex metacharacters is compared as it is.
    """
    if len(candidates) != len(references):
        raise ValueError("one list of candidates per reference")
    if not references:
        return {}
    available = min(len(c) for c in candidates)
    scores: dict[str, float] = {}
    for k in ks:
        if k > available:
            continue
        hits = sum(
            normalize(ref) in {normalize(c) for c in cands[:k]}
            for cands, ref in zip(candidates, references, strict=True)
        )
        scores[f"em@{k}"] = 100.0 * hits / len(references)
    return scores


def exact_match_per_example(
    candidates: Sequence[Sequence[str]], references: Sequence[str], normalize: Callable[[str], str] = normalize_code
) -> list[bool]:
    """Top-1 match per example (kept for bootstrap confidence intervals)."""
    return [bool(c) and normalize(c[0]) == normalize(r) for c, r in zip(candidates, references, strict=True)]
