"""c07: Theorem 2 for any number p of activation pieces."""

from __future__ import annotations

import sympy

from capacity import bounds, optimum
from capacity.symbolic import S, corollary1_expr
from proofs.claims._common import is_zero
from proofs.claims._theorem2 import check_theorem2
from proofs.framework import Evidence, claim


@claim("c07", "Theorem 2 for any p: y* = ((p-1) B + 1 - d2) / (2 (p-1)), feasible iff "
       "(d2-1)/(p-1) <= B <= min(2 d2 + (d2-1)/(p-1), 2 d1 - (d2-1)/(p-1))",
       paper="new", page="c07_theorem2_general_p.md")
def check(optimum_fn=optimum.paper_optimum) -> Evidence:
    """The c06 derivation with p symbolic; exhaustive for p = 2, 3, 4."""
    ev = Evidence()
    d = check_theorem2(ev, corollary1_expr(), S.p, bounds.corollary1, optimum_fn=optimum_fn,
                       grid=6, ps=(2, 3, 4))
    q, d1, d2, b = S.p - 1, S.d1, S.d2, S.B
    ev.check("sympy", "y* = a2* d2 == ((p-1) B + 1 - d2) / (2 (p-1)) and x* = B - y*",
             is_zero(d.a2 * d2 - (q * b + 1 - d2) / (2 * q)) and is_zero(d.a1 * d1 + d.a2 * d2 - b))
    ev.check("sympy", "region: (d2-1)/(p-1) <= B <= min(2 d2 + (d2-1)/(p-1), 2 d1 - (d2-1)/(p-1))",
             is_zero(d.b_low - (d2 - 1) / q) and is_zero(d.b_high[0] - (2 * d2 + (d2 - 1) / q))
             and is_zero(d.b_high[1] - (2 * d1 - (d2 - 1) / q)))
    ev.check("sympy", "at p = 2 everything reduces to the paper's Theorem 2",
             is_zero(d.a1.subs(S.p, 2) - (b + d2 - 1) / (2 * d1))
             and is_zero(d.a2.subs(S.p, 2) - (b - d2 + 1) / (2 * d2)))
    det_expected = 2 * q**2 * d1**2 * d2**2
    ev.check("sympy", "bordered Hessian determinant == 2 (p-1)^2 d1^2 d2^2",
             is_zero(sympy.expand(d.det - det_expected)), f"det = {d.det}")
    return ev
