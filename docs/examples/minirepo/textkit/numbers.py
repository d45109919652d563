"""Number helpers."""


def clamp(value, low, high):
    """Limit a value to the range [low, high].

    >>> clamp(5, 0, 3)
    3
    >>> clamp(-1, 0, 3)
    0
    """
    if value < low:
        return low
    return min(value, high)


def mean(values):
    """The arithmetic mean of a non-empty list of numbers.

    >>> mean([1, 2, 3, 4])
    2.5
    """
    total = sum(values)
    return total / len(values)


def is_prime(n):
    """Whether n is a prime number.

    >>> [k for k in range(12) if is_prime(k)]
    [2, 3, 5, 7, 11]
    """
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n ** 0.5) + 1))
