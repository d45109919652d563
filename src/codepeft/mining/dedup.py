"""Exact and near-duplicate removal over normalised code tokens.

Exact: a hash of the body's tokens without comments or layout. Near: Jaccard similarity of the sets of
token 3-grams, found with MinHash signatures and locality-sensitive hashing (bands), then confirmed
with the exact Jaccard, so the threshold is applied exactly and only candidate pairs are compared.
The first item (input order) of every group of duplicates is kept, so the result is deterministic.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

NUM_PERM = 64
BANDS = 8  # 8 bands x 8 rows: a pair at Jaccard 0.9 is checked with p ~ 0.99, at 0.5 with p ~ 0.03
_rng = np.random.default_rng(20240601)
# Multiply-shift hashing: odd 64-bit multipliers, products wrap modulo 2**64, the high 32 bits are the hash.
_A = _rng.integers(0, np.iinfo(np.uint64).max, NUM_PERM, dtype=np.uint64, endpoint=True) | np.uint64(1)
_B = _rng.integers(0, np.iinfo(np.uint64).max, NUM_PERM, dtype=np.uint64, endpoint=True)


def exact_key(tokens: Sequence[str]) -> str:
    return hashlib.blake2b("\x00".join(tokens).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def shingles(tokens: Sequence[str], size: int = 3) -> set[int]:
    """Hashed token n-grams (the whole token list when shorter than ``size``)."""
    if len(tokens) < size:
        return {zlib.crc32("\x00".join(tokens).encode("utf-8", "surrogatepass"))}
    return {zlib.crc32("\x00".join(tokens[i:i + size]).encode("utf-8", "surrogatepass"))
            for i in range(len(tokens) - size + 1)}


def minhash(shingle_set: set[int]) -> np.ndarray:
    values = np.fromiter(shingle_set, dtype=np.uint64, count=len(shingle_set))
    with np.errstate(over="ignore"):
        hashed = (np.outer(_A, values) + _B[:, None]) >> np.uint64(32)
    return hashed.min(axis=1)


def jaccard(a: set[int], b: set[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def deduplicate(token_lists: Sequence[Sequence[str]], threshold: float = 0.9) -> tuple[list[int], int, int]:
    """Indices to keep, exact duplicates dropped, near duplicates dropped (``threshold`` > 1 disables near)."""
    keep: list[int] = []
    seen_exact: set[str] = set()
    exact_dropped = 0
    for index, tokens in enumerate(token_lists):
        key = exact_key(tokens)
        if key in seen_exact:
            exact_dropped += 1
            continue
        seen_exact.add(key)
        keep.append(index)
    if threshold > 1.0:
        return keep, exact_dropped, 0
    rows = NUM_PERM // BANDS
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    sets: dict[int, set[int]] = {}
    survivors: list[int] = []
    near_dropped = 0
    for index in keep:
        shingle_set = shingles(token_lists[index])
        signature = minhash(shingle_set)
        band_keys = [(band, signature[band * rows:(band + 1) * rows].tobytes()) for band in range(BANDS)]
        candidates = {other for key in band_keys for other in buckets.get(key, ())}
        if any(jaccard(shingle_set, sets[other]) >= threshold for other in sorted(candidates)):
            near_dropped += 1
            continue
        sets[index] = shingle_set
        survivors.append(index)
        for key in band_keys:
            buckets[key].append(index)
    return survivors, exact_dropped, near_dropped
