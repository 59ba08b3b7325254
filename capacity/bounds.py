"""Capacity bounds of Section 5 (Theorem 1, Corollaries 1-2) and the sharp bound.

Each bound is written once, as plain arithmetic, so the same function evaluates exactly
on ints/Fractions and builds an expression on sympy symbols (``capacity.symbolic``).

A *capacity bound* N_max means: no network of the architecture memorizes every labelling
of more than N_max points. The paper's bounds come from counting linear pieces along a
line (capacity <= pieces + 1), so each pieces bound is the capacity bound minus one.

Notation: widths d1, d2; retention fractions a1, a2 in [0, 1]; retained ReLU counts
x = a1 d1, y = a2 d2; an activation with p linear pieces (ReLU: p = 2).
"""

from __future__ import annotations

from fractions import Fraction
from math import prod
from collections.abc import Iterable


def _tidy(value):
    """Integral Fractions become ints; anything else (Fraction, sympy) passes through."""
    if isinstance(value, Fraction) and value.denominator == 1:
        return value.numerator
    return value


def theorem1(d1, d2, p=2):
    """Theorem 1 (Yun et al. 2019): capacity <= p(p-1) d1 d2 + (p-1) d2 + 2.

    Example:
        >>> theorem1(3, 2)
        16
    """
    return p * (p - 1) * d1 * d2 + (p - 1) * d2 + 2


def corollary1(a1, a2, d1, d2, p=2):
    """Corollary 1 (linearized): a fraction a_l of layer l keeps its activation.

    a1 a2 d1 d2 p(p-1) + a2 d2 (p-1) + a1 (1 - a2) d1 d2 (p-1) + 2.

    Example:
        >>> from fractions import Fraction
        >>> corollary1(Fraction(1, 2), 1, 4, 3)
        17
    """
    return _tidy(
        a1 * a2 * d1 * d2 * p * (p - 1)
        + a2 * d2 * (p - 1)
        + a1 * (1 - a2) * d1 * d2 * (p - 1)
        + 2
    )


def corollary2(a1, a2, d1, d2, p=2):
    """Corollary 2 (pruned to widths a1 d1, a2 d2): a1 a2 d1 d2 p(p-1) + a2 d2 (p-1) + 2.

    Example:
        >>> corollary2(1, 1, 3, 2) == theorem1(3, 2)
        True
    """
    return _tidy(a1 * a2 * d1 * d2 * p * (p - 1) + a2 * d2 * (p - 1) + 2)


def theorem1_relu(d1, d2):
    """Theorem 1 for ReLU as the paper states it: 2 d1 d2 + d2 + 2."""
    return 2 * d1 * d2 + d2 + 2


def corollary1_relu(a1, a2, d1, d2):
    """Corollary 1 for ReLU as the paper states it: a1 (1 + a2) d1 d2 + a2 d2 + 2."""
    return _tidy(a1 * (1 + a2) * d1 * d2 + a2 * d2 + 2)


def corollary2_relu(a1, a2, d1, d2):
    """Corollary 2 for ReLU as the paper states it: 2 a1 a2 d1 d2 + a2 d2 + 2."""
    return _tidy(2 * a1 * a2 * d1 * d2 + a2 * d2 + 2)


def _ratio(count, width):
    """count / width, exact for ints (Fraction) and symbolic for sympy objects."""
    if isinstance(count, (int, Fraction)) and isinstance(width, int):
        return Fraction(count) / width
    return count / width


def corollary1_counts(x, y, d1, d2, p=2):
    """Corollary 1 with retained counts x = a1 d1 and y = a2 d2 (width d1 cancels).

    Example:
        >>> corollary1_counts(7500, 2500, 50000, 5000)
        56252502
    """
    return corollary1(_ratio(x, d1), _ratio(y, d2), d1, d2, p)


def corollary2_counts(x, y, d1, d2, p=2):
    """Corollary 2 with retained counts x = a1 d1 and y = a2 d2."""
    return corollary2(_ratio(x, d1), _ratio(y, d2), d1, d2, p)


def sharp_pieces(retained: Iterable, p=2):
    """Sharp bound on linear pieces along any line: prod_l ((p-1) x_l + 1).

    Along a line, every pre-activation of layer l+1 breaks only where some activation of
    layers <= l breaks, so breakpoints of earlier layers are shared rather than added once
    per neuron. Linearized (or pruned) neurons add no breakpoints.

    Example:
        >>> sharp_pieces([3, 2])
        12
    """
    return _tidy(prod(((p - 1) * x + 1 for x in retained), start=1))


def sharp_capacity(retained: Iterable, p=2):
    """Capacity bound from the sharp pieces bound: prod_l ((p-1) x_l + 1) + 1.

    Example:
        >>> sharp_capacity([3, 2])
        13
    """
    return sharp_pieces(retained, p) + 1
