"""c02: the ReLU forms the paper prints are the general forms at p = 2."""

from __future__ import annotations

from capacity import bounds
from capacity.symbolic import S
from proofs.claims._common import is_zero
from proofs.framework import Evidence, claim


@claim("c02", "The printed ReLU forms of Theorem 1 and Corollaries 1-2 equal the general "
       "forms at p = 2", paper="holds", page="c02_relu_forms.md")
def check(corollary1_relu=bounds.corollary1_relu, corollary2_relu=bounds.corollary2_relu,
          theorem1_relu=bounds.theorem1_relu) -> Evidence:
    """Three sympy identities."""
    ev = Evidence()
    a1, a2, d1, d2 = S.a1, S.a2, S.d1, S.d2
    ev.check("sympy", "theorem1(d1, d2, 2) == 2 d1 d2 + d2 + 2 (theorem1_relu)",
             is_zero(bounds.theorem1(d1, d2, 2) - theorem1_relu(d1, d2)))
    ev.check("sympy", "corollary1(a1, a2, d1, d2, 2) == a1 (1 + a2) d1 d2 + a2 d2 + 2 (corollary1_relu)",
             is_zero(bounds.corollary1(a1, a2, d1, d2, 2) - corollary1_relu(a1, a2, d1, d2)))
    ev.check("sympy", "corollary2(a1, a2, d1, d2, 2) == 2 a1 a2 d1 d2 + a2 d2 + 2 (corollary2_relu)",
             is_zero(bounds.corollary2(a1, a2, d1, d2, 2) - corollary2_relu(a1, a2, d1, d2)))
    return ev
