"""The bounds as sympy expressions, built from the same functions that evaluate them.

Nothing here retypes a formula: every expression is ``capacity.bounds.<name>`` called on
sympy symbols, so a proof about an expression is a proof about the evaluator. Expressions
are cached; ``to_exact`` is the single way back from sympy numbers to int / Fraction.

Example:
    >>> from capacity.symbolic import S, corollary1_expr
    >>> from capacity.symbolic import theorem1_expr
    >>> corollary1_expr().subs({S.a1: 1, S.a2: 1}).equals(theorem1_expr())
    True
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from types import SimpleNamespace

import sympy

from capacity import bounds

#: The symbols of DESIGN.md's notation; widths and p are positive, fractions are real.
S = SimpleNamespace(
    d1=sympy.Symbol("d1", positive=True),
    d2=sympy.Symbol("d2", positive=True),
    a1=sympy.Symbol("a1", real=True),
    a2=sympy.Symbol("a2", real=True),
    x=sympy.Symbol("x", real=True),
    y=sympy.Symbol("y", real=True),
    B=sympy.Symbol("B", real=True),
    p=sympy.Symbol("p", positive=True),
)


@lru_cache(maxsize=None)
def theorem1_expr(relu: bool = False) -> sympy.Expr:
    """Theorem 1 in d1, d2, p (or its ReLU form as the paper states it)."""
    if relu:
        return sympy.expand(bounds.theorem1_relu(S.d1, S.d2))
    return sympy.expand(bounds.theorem1(S.d1, S.d2, S.p))


@lru_cache(maxsize=None)
def corollary1_expr(relu: bool = False) -> sympy.Expr:
    """Corollary 1 in a1, a2, d1, d2, p (or its ReLU form as the paper states it)."""
    if relu:
        return sympy.expand(bounds.corollary1_relu(S.a1, S.a2, S.d1, S.d2))
    return sympy.expand(bounds.corollary1(S.a1, S.a2, S.d1, S.d2, S.p))


@lru_cache(maxsize=None)
def corollary2_expr(relu: bool = False) -> sympy.Expr:
    """Corollary 2 in a1, a2, d1, d2, p (or its ReLU form as the paper states it)."""
    if relu:
        return sympy.expand(bounds.corollary2_relu(S.a1, S.a2, S.d1, S.d2))
    return sympy.expand(bounds.corollary2(S.a1, S.a2, S.d1, S.d2, S.p))


@lru_cache(maxsize=None)
def sharp_pieces_expr(layers: int = 2) -> sympy.Expr:
    """prod_l ((p-1) x_l + 1) in symbols x1..xL (x, y for two layers) and p."""
    xs = (S.x, S.y) if layers == 2 else sympy.symbols(f"x1:{layers + 1}", real=True)
    return sympy.expand(bounds.sharp_pieces(xs, S.p))


def to_exact(value: sympy.Expr) -> int | Fraction:
    """Convert a sympy number to int or Fraction; refuse anything that is not rational.

    Raises:
        ValueError: when ``value`` is not a rational number.

    Example:
        >>> to_exact(sympy.Rational(14999, 2))
        Fraction(14999, 2)
    """
    value = sympy.nsimplify(value) if isinstance(value, sympy.Float) else sympy.sympify(value)
    if not value.is_Rational:
        raise ValueError(f"not an exact rational number: {value}")
    if value.q == 1:
        return int(value.p)
    return Fraction(int(value.p), int(value.q))
