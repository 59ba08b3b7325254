"""c08: in what sense "the optimal retention ratio is inversely proportional to its width" holds."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import sympy
import z3

from capacity import optimum
from capacity.symbolic import S, corollary1_expr
from proofs.claims._common import is_zero
from proofs.claims._theorem2 import derive
from proofs.framework import Evidence, claim
from proofs.z3tools import prove


@claim("c08", "Retention ratio vs width, at interior optima: x* is free of d1 (so a1* = x*/d1 is "
       "proportional to 1/d1 at fixed d2, B); a2* is not proportional to 1/d2; layer 1 linearizes more "
       "iff (p-1)(d1 - d2) > d2 - 1 (ReLU: d1 > 2 d2 - 1); at clamped optima the last can fail",
       paper="holds with conditions", page="c08_inverse_proportionality.md")
def check(optimum_fn=optimum.paper_optimum) -> Evidence:
    """sympy on the derived critical point; z3 on the interior region; exhaustive grid."""
    ev = Evidence()
    d = derive(corollary1_expr())
    d1, d2, q = S.d1, S.d2, S.p - 1
    x_star, y_star = sympy.simplify(d.a1 * d1), sympy.simplify(d.a2 * d2)
    ev.check("sympy", f"retained counts x* = {x_star}, y* = {y_star} do not depend on d1; "
             "so a1* = x*/d1 is exactly proportional to 1/d1 for fixed d2, B, p",
             sympy.diff(x_star, d1) == 0 and sympy.diff(y_star, d1) == 0)
    slope = sympy.simplify(sympy.diff(y_star, d2))
    ev.check("sympy", f"a2* d2 = y* depends on d2 (d y*/d d2 = {slope} != 0), so a2* is not "
             "proportional to 1/d2; nor is a1* a function of d1 alone (x* depends on d2)",
             slope != 0 and sympy.diff(x_star, d2) != 0)
    first, second = optimum.closed_form(50000, 5000, 10000), optimum.closed_form(50000, 4000, 10000)
    ratio = second[1] / first[1]
    ev.check("exact", f"d1 = 50000, B = 10000: a2* is {first[1]} at d2 = 5000 and {second[1]} at "
             f"d2 = 4000 (both feasible); the ratio is {ratio}, not 5/4",
             optimum.closed_form_feasible(50000, 4000, 10000) and ratio != Fraction(5, 4))
    more = sympy.simplify((d1 - x_star) - (d2 - y_star))
    ev.check("sympy", f"(d1 - x*) - (d2 - y*) = {more}: at the optimum layer 1 linearizes more "
             "neurons than layer 2 iff d1 > d2 + (d2 - 1)/(p - 1) (p = 2: d1 > 2 d2 - 1)",
             is_zero(more - (d1 - d2 - (d2 - 1) / q)))
    v = {n: z3.Real(n) for n in ("d1", "d2", "B", "x", "y")}
    p = z3.Real("p")
    region = [v["d1"] >= 1, v["d2"] >= 1, p >= 2, v["x"] + v["y"] == v["B"],
              2 * (p - 1) * v["y"] == (p - 1) * v["B"] + 1 - v["d2"],
              0 <= v["x"], v["x"] <= v["d1"], 0 <= v["y"], v["y"] <= v["d2"]]
    iff = prove(region, (v["d1"] - v["x"] > v["d2"] - v["y"])
                == ((p - 1) * (v["d1"] - v["d2"]) > v["d2"] - 1))
    ev.check("z3", "for every interior optimum (any real widths >= 1, p >= 2): layer 1 linearizes "
             "more <=> (p - 1)(d1 - d2) > d2 - 1", iff.proved, iff.status + " " + iff.model)
    contractive = optimum_fn(12, 10, 12)
    lin = (12 - contractive.retained[0], 10 - contractive.retained[1])
    ev.check("exact", f"a contractive network where layer 2 linearizes more: d1 = 12, d2 = 10, B = 12 "
             f"(interior) keeps {contractive.retained}, linearizes {tuple(str(Fraction(t)) for t in lin)}",
             contractive.interior and lin[0] < lin[1])
    clamped = _first_clamped_exception(optimum_fn)
    ev.check("exhaustive", "at clamped optima the equivalence fails: the smallest (d1, d2, B) by d1 + d2 "
             f"whose optimum is clamped and where 'layer 1 linearizes more' differs from d1 > 2 d2 - 1 is "
             f"{clamped} (p = 2)", clamped is not None)
    bad = []
    for d2_, b_, p_ in product(range(1, 9), range(0, 20), (2, 3)):
        interior = [optimum_fn(d1_, d2_, b_, p_) for d1_ in range(1, 16)
                    if b_ <= d1_ + d2_ and optimum.closed_form_feasible(d1_, d2_, b_, p_)]
        if len({o.retained for o in interior}) > 1:
            bad.append((d2_, b_, p_))
    ev.check("exhaustive", "for every d2 <= 8, B < 20, p in (2, 3): all interior optima over d1 <= 15 "
             "retain the same counts (x*, y*)", not bad, f"violations: {bad[:3]}")
    ev.note("'The optimal retention ratio is inversely proportional to its width' holds only for "
            "layer 1, only at fixed d2 and B, and only at interior optima: the retained counts "
            "x* = (B + d2 - 1)/2, y* = (B - d2 + 1)/2 (ReLU; any p: c07) do not depend on d1. a2* = (B - d2 + 1)/(2 d2) is not proportional "
            "to 1/d2. 'In contractive networks linearizing more neurons in the first layer is "
            "beneficial' needs d1 > 2 d2 - 1, not just d1 > d2 (d1 = 12, d2 = 10, B = 12 linearizes "
            "3/2 in layer 1 and 17/2 in layer 2). At clamped optima the criterion can fail, e.g. "
            f"(d1, d2, B) = {clamped}.")
    return ev


def _first_clamped_exception(optimum_fn, limit: int = 6):
    """Smallest clamped (d1, d2, B) where 'layer 1 linearizes more' != d1 > 2 d2 - 1 (p = 2)."""
    for total in range(2, 2 * limit + 1):
        for d1 in range(1, total):
            d2 = total - d1
            for b in range(total + 1):
                opt = optimum_fn(d1, d2, b)
                more = d1 - opt.retained[0] > d2 - opt.retained[1]
                if not opt.interior and more != (d1 > 2 * d2 - 1):
                    return (d1, d2, b)
    return None
