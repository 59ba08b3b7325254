"""Small helpers shared by the claim modules."""

from __future__ import annotations

from fractions import Fraction

import sympy
import z3

from capacity.symbolic import S


def is_zero(expr: sympy.Expr) -> bool:
    """True when ``expr`` is identically zero as a rational function."""
    return sympy.simplify(sympy.together(sympy.expand(expr))) == 0


def z3_vars(kind=z3.Real) -> dict:
    """z3 variables named like capacity.symbolic.S (d1 d2 a1 a2 x y B p)."""
    return {name: kind(name) for name in vars(S)}


def box_premises(v: dict, p_min: int = 2) -> list:
    """Widths >= 1, p >= p_min, fractions in [0, 1]."""
    return [v["d1"] >= 1, v["d2"] >= 1, v["p"] >= p_min,
            0 <= v["a1"], v["a1"] <= 1, 0 <= v["a2"], v["a2"] <= 1]


def count_box(v: dict) -> list:
    """Retained counts in the box 0 <= x <= d1, 0 <= y <= d2, widths >= 1, p >= 2."""
    return [v["d1"] >= 1, v["d2"] >= 1, v["p"] >= 2,
            0 <= v["x"], v["x"] <= v["d1"], 0 <= v["y"], v["y"] <= v["d2"]]


#: Small integer grid for exhaustive cross-checks: widths 1..GRID, p in PS.
GRID = 8
PS = (2, 3, 4)


def exact_eval(expr: sympy.Expr, env: dict):
    """Evaluate a rational sympy expression exactly on ints / Fractions (no floats anywhere).

    Raises:
        ValueError: for an operation other than +, *, integer powers, Min, Max.

    Example:
        >>> exact_eval(S.B / 2 + 1, {"B": 3})
        Fraction(5, 2)
    """
    if expr.is_Symbol:
        return env[expr.name]
    if expr.is_Rational:
        return Fraction(int(expr.p), int(expr.q))
    args = [exact_eval(a, env) for a in expr.args]
    if expr.is_Add:
        return sum(args, Fraction(0))
    if expr.is_Mul:
        out = Fraction(1)
        for a in args:
            out *= a
        return out
    if expr.is_Pow and expr.exp.is_Integer:
        return Fraction(args[0]) ** int(expr.exp)
    if isinstance(expr, sympy.Min):
        return min(args)
    if isinstance(expr, sympy.Max):
        return max(args)
    raise ValueError(f"cannot evaluate {type(expr).__name__} exactly: {expr}")
