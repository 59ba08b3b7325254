"""c03: Corollary 2 is Theorem 1 evaluated at the pruned widths a1 d1, a2 d2."""

from __future__ import annotations

from capacity import bounds
from capacity.symbolic import S
from proofs.claims._common import is_zero
from proofs.framework import Evidence, claim


@claim("c03", "Corollary 2 is Theorem 1 with widths a1 d1, a2 d2", paper="holds",
       page="c03_corollary2_is_theorem1_pruned.md")
def check(corollary2=bounds.corollary2, theorem1=bounds.theorem1) -> Evidence:
    """One sympy identity in symbolic p, and the count form."""
    ev = Evidence()
    a1, a2, d1, d2, p, x, y = S.a1, S.a2, S.d1, S.d2, S.p, S.x, S.y
    ev.check("sympy", "corollary2(a1, a2, d1, d2, p) == theorem1(a1 d1, a2 d2, p)",
             is_zero(corollary2(a1, a2, d1, d2, p) - theorem1(a1 * d1, a2 * d2, p)))
    ev.check("sympy", "corollary2_counts(x, y, d1, d2, p) == theorem1(x, y, p): "
             "the pruned bound depends on the kept counts only",
             is_zero(corollary2(x / d1, y / d2, d1, d2, p) - theorem1(x, y, p))
             and is_zero(bounds.corollary2_counts(x, y, d1, d2, p) - theorem1(x, y, p)))
    return ev
