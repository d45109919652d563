"""In-context learning (``icl``): k random training examples as demonstrations.

As in the reference study, one seeded draw serves the whole test split; ``per_example_draw`` gives
each test example its own draw instead, seeded by (seed, example id) so a resumed or limited run
sees the same demonstrations. A query never sees itself or an exact duplicate of itself (overlapping
splits). Several seeds are several runs (``--param seed=N`` each, or a study's ``seeds:`` list);
``seeds_summary`` reduces their scores to mean and spread.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from codepeft.data.base import Example
from codepeft.errors import CodepeftError
from codepeft.methods.base import MethodParams, register_method
from codepeft.methods.prompting import Demonstrations, PromptMethod
from codepeft.retrieval import self_matches

#: The reference study's defaults (peft-llm-code, generate.py: num_icl_examples=3, icl_seed=42).
REFERENCE_K = 3
REFERENCE_SEED = 42


class ICLParams(MethodParams):
    k: int = Field(REFERENCE_K, ge=0, description="demonstrations per prompt")
    seed: int = Field(REFERENCE_SEED, description="seed of the random draw")
    per_example_draw: bool = Field(False, description="a fresh draw for every test example instead of one fixed set")


def check_pool(method: str, pool: Sequence[Example], k: int) -> None:
    """One-line errors for a pool that cannot supply ``k`` demonstrations."""
    if k < 0:
        raise CodepeftError(f"method {method!r}: k={k} is negative: pass k >= 0 (k=0 is zero-shot)")
    if k > 0 and not pool:
        raise CodepeftError(
            f"method {method!r}: the demonstration pool is empty: choose a pool split with examples (pool_split=train)"
        )
    if k > len(pool):
        raise CodepeftError(
            f"method {method!r}: k={k} is larger than the pool ({len(pool)} examples): pass k <= {len(pool)}"
        )


def _example_seed(seed: int, example_id: str) -> list[int]:
    """A stable per-example seed (Python's ``hash`` of a str changes between processes)."""
    digest = hashlib.sha256(example_id.encode()).digest()
    return [seed & 0xFFFFFFFF, int.from_bytes(digest[:8], "little")]


def _first_allowed(order: np.ndarray, excluded: set[int], k: int) -> list[int]:
    picked: list[int] = []
    for index in order:
        if int(index) not in excluded:
            picked.append(int(index))
            if len(picked) == k:
                break
    return picked


@register_method
class ICL(PromptMethod):
    name = "icl"
    description = "In-context learning: k random training examples (seeded) before the query."
    Params = ICLParams

    def select(self, queries: Sequence[Example], pool: Sequence[Example], params: ICLParams) -> list[list[Example]]:
        check_pool(self.name, pool, params.k)
        if params.k == 0:
            return [Demonstrations() for _ in queries]
        excluded = self_matches(queries, pool)
        shared_order = None if params.per_example_draw else np.random.default_rng(params.seed).permutation(len(pool))
        chosen: list[list[Example]] = []
        for query, skip in zip(queries, excluded, strict=True):
            order = shared_order
            if order is None:
                order = np.random.default_rng(_example_seed(params.seed, query.id)).permutation(len(pool))
            # With the fixed set, a query that is itself in the set gets the next items of the same
            # permutation in its place, so the set changes only where it would leak the answer.
            chosen.append(Demonstrations(pool[i] for i in _first_allowed(order, skip, params.k)))
        return chosen


def seeds_summary(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of one score across seeds (std 0.0 for a single seed)."""
    if not values:
        raise CodepeftError("seeds_summary needs at least one value: run at least one seed")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)
