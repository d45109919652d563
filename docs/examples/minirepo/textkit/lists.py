"""List helpers."""


def chunks(items, size):
    """Split a list into consecutive chunks of at most ``size`` items.

    >>> chunks([1, 2, 3, 4, 5], 2)
    [[1, 2], [3, 4], [5]]
    """
    out = []
    for start in range(0, len(items), size):
        out.append(items[start:start + size])
    return out


def unique(items):
    """The items in their first order, without repeats.

    >>> unique([3, 1, 3, 2, 1])
    [3, 1, 2]
    """
    seen = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def rotate(items, k):
    """Rotate a list to the left by k places.

    >>> rotate([1, 2, 3, 4], 1)
    [2, 3, 4, 1]
    >>> rotate([], 3)
    []
    """
    if not items:
        return []
    k %= len(items)
    return items[k:] + items[:k]
