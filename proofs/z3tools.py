"""z3 helpers: prove a statement by refuting its negation; carry sympy expressions to z3.

Every z3 query in ``proofs`` goes through ``prove`` or ``witness`` so that the verdict
vocabulary is the same everywhere: 'proved' (negation unsat), 'refuted' (a
counterexample model), 'unknown' (timeout or incomplete theory).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy
import z3

#: Per-query timeout; every query of the suite finishes in well under a second.
TIMEOUT_MS = 20000


@dataclass(frozen=True)
class Proof:
    """Result of ``prove``: status and, when refuted, the counterexample as text."""

    status: str
    model: str = ""

    @property
    def proved(self) -> bool:
        return self.status == "proved"


def prove(premises: list, goal, timeout_ms: int = TIMEOUT_MS) -> Proof:
    """Prove ``premises -> goal`` for all values of the free variables.

    Example:
        >>> x = z3.Real("x")
        >>> prove([x > 1], x * x > x).status
        'proved'
    """
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    solver.add(*premises)
    solver.add(z3.Not(goal))
    result = solver.check()
    if result == z3.unsat:
        return Proof("proved")
    if result == z3.sat:
        return Proof("refuted", str(solver.model()))
    return Proof("unknown", solver.reason_unknown())


def witness(constraints: list, timeout_ms: int = TIMEOUT_MS) -> dict | None:
    """A model satisfying ``constraints`` as {name: int | Fraction}, or None if unsat.

    Raises:
        RuntimeError: when z3 answers unknown.
    """
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    solver.add(*constraints)
    result = solver.check()
    if result == z3.unsat:
        return None
    if result != z3.sat:
        raise RuntimeError(f"z3 returned unknown: {solver.reason_unknown()}")
    model = solver.model()
    return {d.name(): _exact(model[d]) for d in model.decls()}


def _exact(value):
    if z3.is_int_value(value):
        return value.as_long()
    if z3.is_rational_value(value):
        return Fraction(value.numerator_as_long(), value.denominator_as_long())
    return str(value)


def to_z3(expr: sympy.Expr, env: dict):
    """Translate a rational sympy expression (+, *, integer powers, Min, Max) to z3.

    Args:
        expr: the sympy expression.
        env: symbol name -> z3 expression.

    Raises:
        ValueError: for a symbol missing from ``env`` or an unsupported operation.

    Example:
        >>> x = sympy.Symbol("x")
        >>> to_z3(x**2 / 2 + 1, {"x": z3.Real("x")})
        ToReal(1) + 1/2*x*x
    """
    if expr.is_Symbol:
        if expr.name not in env:
            raise ValueError(f"no z3 variable for symbol {expr.name}")
        return env[expr.name]
    if expr.is_Integer:
        return z3.IntVal(int(expr))
    if expr.is_Rational:
        return z3.RealVal(Fraction(int(expr.p), int(expr.q)))
    args = [to_z3(a, env) for a in expr.args]
    if expr.is_Add:
        return sum(args[1:], args[0])
    if expr.is_Mul:
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if expr.is_Pow and expr.exp.is_Integer:
        n = int(expr.exp)
        base = args[0]
        power = base
        for _ in range(abs(n) - 1):
            power = power * base
        if n > 0:
            return power
        return 1 / (z3.ToReal(power) if z3.is_int(power) else power)
    if isinstance(expr, (sympy.Min, sympy.Max)):
        pick = (lambda a, b: z3.If(a <= b, a, b)) if isinstance(expr, sympy.Min) else (
            lambda a, b: z3.If(a >= b, a, b))
        out = args[0]
        for a in args[1:]:
            out = pick(out, a)
        return out
    raise ValueError(f"cannot translate {type(expr).__name__} to z3: {expr}")


def reals(names: str) -> dict:
    """{name: z3.Real(name)} for space-separated names."""
    return {n: z3.Real(n) for n in names.split()}
