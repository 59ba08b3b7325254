"""c04: Corollary 1 - Corollary 2 = a1 (1 - a2) d1 d2 (p - 1) >= 0, zero iff a1 = 0 or a2 = 1."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import z3

from capacity import bounds
from capacity.symbolic import S
from proofs.claims._common import GRID, PS, box_premises, is_zero, z3_vars
from proofs.framework import Evidence, claim
from proofs.z3tools import prove


def gap_expr():
    """The gap as the claim states it (the paper prints it for p = 2 only)."""
    return S.a1 * (1 - S.a2) * S.d1 * S.d2 * (S.p - 1)


@claim("c04", "Corollary 1 - Corollary 2 = a1 (1 - a2) d1 d2 (p - 1), >= 0 on the box, "
       "0 exactly when a1 = 0 or a2 = 1", paper="holds with conditions",
       page="c04_linearization_pruning_gap.md")
def check(corollary1=bounds.corollary1, corollary2=bounds.corollary2) -> Evidence:
    """sympy identity; z3 sign and zero set on the box; exhaustive grid."""
    ev = Evidence()
    a1, a2, d1, d2, p = S.a1, S.a2, S.d1, S.d2, S.p
    gap = corollary1(a1, a2, d1, d2, p) - corollary2(a1, a2, d1, d2, p)
    ev.check("sympy", "corollary1 - corollary2 == a1 (1 - a2) d1 d2 (p - 1)", is_zero(gap - gap_expr()))
    v = z3_vars()
    g = (corollary1(v["a1"], v["a2"], v["d1"], v["d2"], v["p"])
         - corollary2(v["a1"], v["a2"], v["d1"], v["d2"], v["p"]))
    nonneg = prove(box_premises(v), g >= 0)
    ev.check("z3", "gap >= 0 for all reals on the box (d1, d2 >= 1, p >= 2)", nonneg.proved, nonneg.status)
    zero_set = prove(box_premises(v), (g == 0) == z3.Or(v["a1"] == 0, v["a2"] == 1))
    ev.check("z3", "gap == 0 <=> (a1 == 0 or a2 == 1) on the box", zero_set.proved, zero_set.status)
    bad = [(d1, d2, p, x, y) for d1, d2, p in product(range(1, GRID + 1), range(1, GRID + 1), PS)
           for x in range(d1 + 1) for y in range(d2 + 1)
           if (corollary1(Fraction(x, d1), Fraction(y, d2), d1, d2, p)
               - corollary2(Fraction(x, d1), Fraction(y, d2), d1, d2, p)) != (p - 1) * x * (d2 - y)]
    ev.check("exhaustive", f"every integer count pair, d1, d2 <= {GRID}, p in {PS}: "
             "gap == (p - 1) x (d2 - y) in retained counts", not bad, f"violations: {bad[:3]}")
    ev.note("The paper writes the gap as a1 (1 - a2) d1 d2, which is the p = 2 case; for general p "
            "it carries the factor (p - 1). Equality of the bounds also holds when a1 = 0, not only "
            "when a2 = 1.")
    return ev
