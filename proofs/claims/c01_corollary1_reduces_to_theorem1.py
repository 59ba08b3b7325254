"""c01: Corollary 1 at a1 = a2 = 1 is Theorem 1, for every p; it is strictly smaller otherwise."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

from capacity import bounds
from capacity.symbolic import S, corollary1_expr, theorem1_expr
from proofs.claims._common import GRID, PS, box_premises, is_zero, z3_vars
from proofs.framework import Evidence, claim
from proofs.z3tools import prove

import z3


@claim("c01", "Corollary 1's bound at a1 = a2 = 1 equals Theorem 1's for every p, and is strictly "
       "smaller whenever a1 < 1 or a2 < 1 (a statement about the upper bounds, not the capacities)",
       paper="holds",
       page="c01_corollary1_reduces_to_theorem1.md")
def check(corollary1=bounds.corollary1, theorem1=bounds.theorem1) -> Evidence:
    """Symbolic identity, z3 strictness on the box, exhaustive grid."""
    ev = Evidence()
    cor = corollary1(S.a1, S.a2, S.d1, S.d2, S.p)
    thm = theorem1(S.d1, S.d2, S.p)
    ev.check("sympy", "corollary1(1, 1, d1, d2, p) - theorem1(d1, d2, p) == 0 for symbolic p",
             is_zero(cor.subs({S.a1: 1, S.a2: 1}) - thm))
    ev.check("sympy", "the cached expressions the other claims use (capacity.symbolic) are the "
             "functions checked here", is_zero(corollary1_expr() - cor) and is_zero(theorem1_expr() - thm))
    v = z3_vars()
    c_z = corollary1(v["a1"], v["a2"], v["d1"], v["d2"], v["p"])
    t_z = theorem1(v["d1"], v["d2"], v["p"])
    strict = prove(box_premises(v) + [z3.Or(v["a1"] < 1, v["a2"] < 1)], c_z < t_z)
    ev.check("z3", "for all real d1, d2 >= 1, p >= 2, (a1, a2) in [0,1]^2 with a1 < 1 or a2 < 1: "
             "Corollary 1 < Theorem 1", strict.proved, strict.status + " " + strict.model)
    bad = [(d1, d2, p) for d1, d2, p in product(range(1, GRID + 1), range(1, GRID + 1), PS)
           if corollary1(1, 1, d1, d2, p) != theorem1(d1, d2, p)
           or any(corollary1(Fraction(x, d1), Fraction(y, d2), d1, d2, p) >= theorem1(d1, d2, p)
                  for x in range(d1 + 1) for y in range(d2 + 1) if (x, y) != (d1, d2))]
    ev.check("exhaustive", f"every d1, d2 <= {GRID}, p in {PS}, every integer count pair: "
             "equal at full retention, strictly smaller elsewhere", not bad, f"violations: {bad[:3]}")
    return ev
