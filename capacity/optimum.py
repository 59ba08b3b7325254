"""Optimal per-layer ReLU retention for a budget, exactly.

Two objectives:

* the paper's: Corollary 1's capacity bound for two hidden layers, maximised on the
  budget line x + y = B (x = a1 d1, y = a2 d2 retained ReLUs) *inside the box*
  0 <= x <= d1, 0 <= y <= d2. Along the line the bound is a strictly concave quadratic
  in y, so its maximiser is the unconstrained critical point (Theorem 2, generalised
  to any p) clamped into the feasible interval of y, and the integer maximiser is the
  floor or the ceiling of that point (both when they tie).
* the sharp one: prod_l ((p-1) x_l + 1) for any number of layers, maximised under
  sum x_l = B, 0 <= x_l <= d_l. Its logarithm is a sum of strictly concave functions of
  one variable each, so the maximiser is water-filling: x_l = min(d_l, t) at the level t
  where the counts add up to B; integer maximisers give floor(t) to every uncapped
  layer and one more ReLU to any r of them.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from fractions import Fraction
from itertools import combinations, islice
from math import comb, floor

from capacity.bounds import corollary1_counts, sharp_capacity
from capacity.exact import Exact, as_count

#: How many tied integer optima ``sharp_optimum`` lists at most (it always counts all).
MAX_LISTED_TIES = 1000


# Named tuples rather than dataclasses: importing dataclasses costs the command ~15 ms.
class PaperOptimum(
    namedtuple("PaperOptimum", "alpha retained interior active value integer_retained integer_value")
):
    """Maximiser of Corollary 1's capacity bound on x + y = B inside the box.

    Attributes:
        alpha: retention fractions (a1, a2) at the continuous optimum.
        retained: retained ReLU counts (x, y) at the continuous optimum.
        interior: True when the paper's closed form lies in [0, 1]^2 (it is the optimum).
        active: which box constraint binds, or "interior".
        value: Corollary 1's capacity bound at the continuous optimum.
        integer_retained: every integer (x, y) that maximises the bound, sorted.
        integer_value: the bound at an integer optimum.
    """

    __slots__ = ()


class SharpOptimum(
    namedtuple("SharpOptimum", "alpha retained level value integer_retained integer_ties integer_value")
):
    """Maximiser of the sharp bound prod((p-1) x_l + 1) under sum x_l = B, x_l <= d_l.

    Attributes:
        alpha: retention fractions x_l / d_l at the continuous optimum.
        retained: retained counts at the continuous optimum (water-filling).
        level: the water level t; x_l = min(d_l, t).
        value: sharp capacity bound at the continuous optimum.
        integer_retained: integer optima, at most ``MAX_LISTED_TIES`` of them, sorted.
        integer_ties: how many integer optima there are in all.
        integer_value: sharp capacity bound at an integer optimum.
    """

    __slots__ = ()


def _tidy(value: Fraction) -> Exact:
    return value.numerator if value.denominator == 1 else value


def check_problem(widths: Sequence[object], budget: object, p: object = 2) -> tuple[list[int], int, int]:
    """Validate widths (>= 1), budget (0..sum of widths) and p (>= 2); return them as ints.

    Raises:
        ValueError: with a message naming the offending value.

    Example:
        >>> check_problem([50000, 5000], 10000)
        ([50000, 5000], 10000, 2)
    """
    if len(widths) == 0:
        raise ValueError("at least one layer width is needed")
    dims = [as_count(d, f"width of layer {i + 1}", minimum=1) for i, d in enumerate(widths)]
    b = as_count(budget, "budget", minimum=0)
    total = sum(dims)
    if b > total:
        raise ValueError(f"budget {b} exceeds the {total} neurons of the network")
    return dims, b, as_count(p, "p", minimum=2)


def closed_form(d1: int, d2: int, budget: int, p: int = 2) -> tuple[Fraction, Fraction]:
    """The Lagrangian critical point of Theorem 2, for any p, ignoring the box.

    For p = 2 it is the paper's a1 = (B + d2 - 1) / (2 d1), a2 = (B - d2 + 1) / (2 d2).
    In general y* = ((p-1) B + 1 - d2) / (2 (p-1)) and x* = B - y*.

    Example:
        >>> closed_form(50000, 5000, 10000)
        (Fraction(14999, 100000), Fraction(5001, 10000))
    """
    (d1, d2), b, p = check_problem([d1, d2], budget, p)
    y = Fraction((p - 1) * b + 1 - d2, 2 * (p - 1))
    return (b - y) / d1, y / d2


def closed_form_feasible(d1: int, d2: int, budget: int, p: int = 2) -> bool:
    """True when both fractions of the closed form lie in [0, 1].

    Example:
        >>> closed_form_feasible(50000, 5000, 10000), closed_form_feasible(100, 10, 50)
        (True, False)
    """
    return all(0 <= a <= 1 for a in closed_form(d1, d2, budget, p))


def _paper_objective(d1: int, d2: int, p: int):
    return lambda y, b: corollary1_counts(b - y, y, d1, d2, p)


def paper_optimum(d1: int, d2: int, budget: int, p: int = 2) -> PaperOptimum:
    """Maximise Corollary 1's bound over x + y = budget, 0 <= x <= d1, 0 <= y <= d2.

    Args:
        d1, d2: hidden-layer widths (>= 1).
        budget: total retained activations B, 0 <= B <= d1 + d2.
        p: number of linear pieces of the activation (ReLU: 2).

    Returns:
        A ``PaperOptimum`` with the continuous and every integer optimum.

    Raises:
        ValueError: for non-integers, widths < 1, budgets out of range, p < 2.

    Example:
        >>> opt = paper_optimum(50000, 5000, 10000)
        >>> opt.retained, opt.integer_retained
        ((Fraction(14999, 2), Fraction(5001, 2)), [(7499, 2501), (7500, 2500)])
    """
    (d1, d2), b, p = check_problem([d1, d2], budget, p)
    a1_star, a2_star = closed_form(d1, d2, b, p)
    y_star = a2_star * d2
    lo, hi = max(0, b - d1), min(d2, b)
    y = min(max(y_star, Fraction(lo)), Fraction(hi))
    objective = _paper_objective(d1, d2, p)
    candidates = sorted({floor(y), -floor(-y)})
    values = {c: objective(c, b) for c in candidates}
    best = max(values.values())
    x = b - y
    return PaperOptimum(
        alpha=(Fraction(x) / d1, Fraction(y) / d2),
        retained=(_tidy(Fraction(x)), _tidy(y)),
        interior=lo <= y_star <= hi,
        active=_active_constraint(y_star, lo, hi, b, d1),
        value=objective(y, b),
        integer_retained=sorted((b - c, c) for c, v in values.items() if v == best),
        integer_value=int(best),
    )


def _active_constraint(y_star: Fraction, lo: int, hi: int, b: int, d1: int) -> str:
    """Name the box constraint that binds at the clamped optimum (proofs: c16).

    Below the segment, y = max(0, B - d1): a2 = 0 when B <= d1, else a1 = 1. Above it: x* >= 0
    always, so y* > min(d2, B) means y* > d2 and a2 = 1; a1 = 0 never binds.
    """
    if lo <= y_star <= hi:
        return "interior"
    if y_star < lo:
        return "a2 = 0 (layer 2 keeps no ReLU)" if b <= d1 else "a1 = 1 (layer 1 keeps every ReLU)"
    return "a2 = 1 (layer 2 keeps every ReLU)"


def water_level(widths: Sequence[int], budget: int) -> Fraction:
    """The level t with sum_l min(d_l, t) = budget (0 <= budget <= sum of widths).

    Example:
        >>> water_level([50000, 5000], 10000), water_level([50000, 5000], 52000)
        (Fraction(5000, 1), Fraction(47000, 1))
    """
    dims, b, _ = check_problem(widths, budget)
    filled = 0
    ordered = sorted(dims)
    for i, d in enumerate(ordered[:-1]):
        level = Fraction(b - filled, len(ordered) - i)
        if level <= d:
            return level
        filled += d
    return Fraction(b - filled)  # the widest layer takes the rest: b <= sum of widths


def sharp_optimum(widths: Sequence[int], budget: int, p: int = 2) -> SharpOptimum:
    """Maximise prod_l ((p-1) x_l + 1) under sum x_l = budget, 0 <= x_l <= d_l.

    Args:
        widths: the hidden-layer widths d_l (>= 1), any number of layers.
        budget: total retained activations, 0 <= budget <= sum of widths.
        p: number of linear pieces of the activation (the allocation does not depend on it).

    Returns:
        A ``SharpOptimum``; ties are counted in ``integer_ties`` and at most
        ``MAX_LISTED_TIES`` of them are listed.

    Raises:
        ValueError: as ``check_problem``.

    Example:
        >>> opt = sharp_optimum([50000, 5000], 10000)
        >>> opt.integer_retained, opt.integer_value
        ([(5000, 5000)], 25010002)
    """
    dims, b, p = check_problem(widths, budget, p)
    level = water_level(dims, b)
    retained = tuple(_tidy(min(Fraction(d), level)) for d in dims)
    q = floor(level)
    base = [min(d, q) for d in dims]
    extra = b - sum(base)
    open_layers = [i for i, d in enumerate(dims) if d > q]
    ties = comb(len(open_layers), extra)
    listed = []
    for chosen in islice(combinations(open_layers, extra), MAX_LISTED_TIES):
        chosen = set(chosen)  # a tuple's `in` would make each tie cost layers * extra
        listed.append(tuple(x + (i in chosen) for i, x in enumerate(base)))
    return SharpOptimum(
        alpha=tuple(Fraction(x) / d for x, d in zip(retained, dims)),
        retained=retained,
        level=_tidy(level),
        value=sharp_capacity(retained, p),
        integer_retained=sorted(listed),
        integer_ties=ties,
        integer_value=sharp_capacity(listed[0], p),
    )
