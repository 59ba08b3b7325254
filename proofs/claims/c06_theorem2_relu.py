"""c06: Theorem 2 (p = 2): critical point, bordered Hessian, global optimality, region."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import sympy

from capacity import bounds, optimum
from capacity.symbolic import S, corollary1_expr
from proofs import paper
from proofs.claims._common import is_zero
from proofs.claims._theorem2 import check_theorem2
from proofs.framework import Evidence, claim


@claim("c06", "Theorem 2 (ReLU): the critical point, det of the bordered Hessian = 2 d1^2 d2^2, "
       "global optimality, and the exact region where the closed form is feasible",
       paper="holds with conditions", page="c06_theorem2_relu.md")
def check(optimum_fn=optimum.paper_optimum) -> Evidence:
    """sympy derivation, z3 optimality and region, exhaustive optima."""
    ev = Evidence()
    objective = corollary1_expr(relu=True)
    ev.check("sympy", "A.3's objective a1 a2 d1 d2 + a1 d1 d2 + a2 d2 + 1 is Corollary 1 (ReLU) "
             "minus 1 (pieces, not capacity): same maximiser",
             is_zero(paper.a3_objective() - (objective - 1)))
    d = check_theorem2(ev, objective, 2, lambda a1, a2, d1, d2, p: bounds.corollary1_relu(a1, a2, d1, d2),
                       optimum_fn=optimum_fn, grid=7, ps=(2,))
    alpha1, alpha2 = paper.theorem2_alpha()
    ev.check("sympy", "the critical point is the paper's a1 = (B + d2 - 1)/(2 d1), a2 = (B - d2 + 1)/(2 d2)",
             is_zero(d.a1 - alpha1) and is_zero(d.a2 - alpha2))
    ev.check("sympy", "the computed bordered Hessian is A.3's matrix H, and det H = 2 d1^2 d2^2",
             d.hessian == paper.a3_hessian()
             and is_zero(paper.a3_hessian().det() - 2 * S.d1**2 * S.d2**2)
             and is_zero(d.det - 2 * S.d1**2 * S.d2**2), f"det = {d.det}")
    region = (sympy.simplify(d.b_low - (S.d2 - 1)) == 0,
              is_zero(d.b_high[0] - (3 * S.d2 - 1)), is_zero(d.b_high[1] - (2 * S.d1 - S.d2 + 1)))
    ev.check("sympy", "for p = 2 the region is d2 - 1 <= B <= min(3 d2 - 1, 2 d1 - d2 + 1)", all(region))
    not_sufficient = _first(lambda d1, d2, b: b > d2 and not optimum.closed_form_feasible(d1, d2, b))
    not_necessary = _first(lambda d1, d2, b: b <= d2 and optimum.closed_form_feasible(d1, d2, b))
    ev.check("exhaustive", "Theorem 2's hypothesis B > d2 is neither sufficient nor necessary: smallest "
             f"(d1, d2, B) with B > d2 and the closed form outside [0,1]^2: {not_sufficient} "
             f"(alpha = {_alpha(not_sufficient)}); with B <= d2 and inside: {not_necessary}",
             not_sufficient is not None and not_necessary is not None)
    ev.note("Theorem 2 ignores the box 0 <= a <= 1. Its closed form is the maximiser exactly when "
            "d2 - 1 <= B <= min(3 d2 - 1, 2 d1 - d2 + 1); the hypothesis B > d2 is neither "
            f"sufficient (e.g. (d1, d2, B) = {not_sufficient}) nor necessary (e.g. {not_necessary}). "
            "Outside the region the maximiser is the critical point clamped to the feasible segment. "
            "The bordered-Hessian determinant 2 d1^2 d2^2 > 0 is right, but it only shows a local "
            "maximum; global optimality follows from strict concavity along the budget line.")
    return ev


def _first(predicate, limit: int = 6):
    """Smallest (d1, d2, B) by d1 + d2, then B, with 0 <= B <= d1 + d2 satisfying ``predicate``."""
    for total in range(2, 2 * limit + 1):
        for d1, d2 in product(range(1, limit + 1), repeat=2):
            if d1 + d2 == total:
                for b in range(total + 1):
                    if predicate(d1, d2, b):
                        return (d1, d2, b)
    return None


def _alpha(case):
    if case is None:
        return None
    return tuple(str(Fraction(a)) for a in optimum.closed_form(*case))
