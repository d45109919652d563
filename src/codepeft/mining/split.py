"""Seeded train/validation/test split by file: all functions of one file land in the same split."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from codepeft.errors import CodepeftError

SPLIT_NAMES = ("train", "validation", "test")


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> fractions that sum to 1 (train, validation, test)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 0 for v in values) or not 0.999 <= sum(values) <= 1.001:
        raise CodepeftError(f"--split {text!r} is not three non-negative fractions summing to 1: "
                            "use e.g. --split 0.8,0.1,0.1 (train,validation,test)")
    return values  # type: ignore[return-value]


def split_by_file(files: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Map each file to a split so the function counts approach ``fractions``.

    ``files`` has one entry per function (its file). Files are shuffled with ``seed`` and each goes,
    whole, to the split furthest below its target share, so no file is split across sides.
    """
    sizes = Counter(files)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    total = sum(sizes.values())
    assigned = dict.fromkeys(SPLIT_NAMES, 0)
    mapping: dict[str, str] = {}
    for file in order:
        deficits = {name: fraction * total - assigned[name]
                    for name, fraction in zip(SPLIT_NAMES, fractions, strict=True) if fraction > 0}
        chosen = max(deficits, key=lambda name: (deficits[name], -SPLIT_NAMES.index(name)))
        mapping[file] = chosen
        assigned[chosen] += sizes[file]
    return mapping
