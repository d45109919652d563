"""The unbiased "at k" estimator over n samples (Chen et al. 2021), shared by pass@k and by EM@k of
sampled candidates: from n samples with c hits, the chance that k drawn without replacement hold one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (1, 2, 5, 10)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct.

    ``1 - C(n-c, k) / C(n, k)``, computed as a product so that large n does not overflow.
    """
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def hits_at_ks(hits: Sequence[Sequence[bool]], ks: Sequence[int], name: str) -> dict[str, float]:
    """``{f"{name}@k": ...}`` in percent, averaged over problems, for each k every problem has samples for."""
    if not hits:
        return {}
    fewest = min(len(samples) for samples in hits)
    scores: dict[str, float] = {}
    for k in ks:
        if 1 <= k <= fewest:
            per_problem = [pass_at_k(len(s), sum(bool(x) for x in s), k) for s in hits]
            scores[f"{name}@{k}"] = 100.0 * float(np.mean(per_problem))
    return scores
