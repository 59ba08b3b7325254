"""Brute-force optima over every integer allocation: the independent check for small sizes.

These enumerate all allocations, so they are only for widths of a few dozen at most;
``capacity.optimum`` computes the same optima in closed form for any size.
"""

from __future__ import annotations

from itertools import product
from typing import Callable, Iterator, Sequence

from capacity.bounds import corollary1_counts, sharp_capacity


def allocations(widths: Sequence[int], budget: int) -> Iterator[tuple[int, ...]]:
    """Every integer vector 0 <= x_l <= d_l with sum x_l = budget.

    Example:
        >>> list(allocations([2, 1], 2))
        [(1, 1), (2, 0)]
    """
    *head, last = widths
    for prefix in product(*(range(d + 1) for d in head)):
        rest = budget - sum(prefix)
        if 0 <= rest <= last:
            yield (*prefix, rest)


def argmax_all(widths: Sequence[int], budget: int, objective: Callable) -> tuple[list[tuple[int, ...]], object]:
    """All allocations maximising ``objective(allocation)``, sorted, and the maximum.

    Example:
        >>> argmax_all([2, 2], 2, lambda a: a[0] * a[1])
        ([(1, 1)], 1)
    """
    best, winners = None, []
    for alloc in allocations(widths, budget):
        value = objective(alloc)
        if best is None or value > best:
            best, winners = value, [alloc]
        elif value == best:
            winners.append(alloc)
    return sorted(winners), best


def paper_integer_optima(d1: int, d2: int, budget: int, p: int = 2):
    """Every integer (x, y) maximising Corollary 1's bound, by enumeration."""
    return argmax_all([d1, d2], budget, lambda a: corollary1_counts(a[0], a[1], d1, d2, p))


def sharp_integer_optima(widths: Sequence[int], budget: int, p: int = 2):
    """Every integer allocation maximising the sharp capacity bound, by enumeration."""
    return argmax_all(widths, budget, lambda a: sharp_capacity(a, p))
