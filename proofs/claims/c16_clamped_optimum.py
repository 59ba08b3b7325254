"""c16: Theorem 2 outside its region: which box face binds, and when integer optima tie."""

from __future__ import annotations

import random
from fractions import Fraction
from itertools import product

import sympy
import z3

from capacity import optimum
from capacity.symbolic import S
from proofs.claims._common import is_zero
from proofs.framework import Evidence, claim
from proofs.z3tools import prove

#: Seeded sample of large problems checked against the rule.
LARGE_SAMPLE = 300


def y_star(d1, d2, b, p):
    """The critical point's layer-2 count ((p-1) B + 1 - d2) / (2 (p-1)) (c07)."""
    return Fraction((p - 1) * b + 1 - d2, 2 * (p - 1))


def expected_active(d1, d2, b, p) -> str:
    """The face that binds, from the conditions on B (not from the clamping code)."""
    q = Fraction(d2 - 1, p - 1)
    if b < q and b <= d1:
        return "a2 = 0 (layer 2 keeps no ReLU)"
    if b > 2 * d1 - q:  # with B <= d1 this would imply B < q, caught above
        return "a1 = 1 (layer 1 keeps every ReLU)"
    if b > 2 * d2 + q:
        return "a2 = 1 (layer 2 keeps every ReLU)"
    return "interior"


def expected_ties(d1, d2, b, p) -> int:
    """Integer optima: two exactly when interior, (p-1) | (d2-1) and B - (d2-1)/(p-1) is odd."""
    interior = expected_active(d1, d2, b, p) == "interior"
    return 2 if interior and (d2 - 1) % (p - 1) == 0 and (b - (d2 - 1) // (p - 1)) % 2 else 1


@claim("c16", "Clamped optima (Theorem 2 outside its region): a1 = 0 never binds; a2 = 0 binds iff "
       "B < (d2-1)/(p-1) and B <= d1, a1 = 1 iff B > 2 d1 - (d2-1)/(p-1) (otherwise), a2 = 1 iff "
       "B > 2 d2 + (d2-1)/(p-1); integer optima are unique except at interior points with "
       "(p-1) | (d2-1) and B - (d2-1)/(p-1) odd, where two tie", paper="holds with conditions",
       page="c16_clamped_optimum.md")
def check(optimum_fn=optimum.paper_optimum) -> Evidence:
    """z3 for the faces (all reals), sympy for the tie rule, the package on grids and samples."""
    ev = Evidence()
    d1, d2, b, p = z3.Reals("d1 d2 B p")
    ys = ((p - 1) * b + 1 - d2) / (2 * (p - 1))
    q = (d2 - 1) / (p - 1)
    box = [d1 >= 1, d2 >= 1, p >= 2, b >= 0, b <= d1 + d2]
    faces = prove(box, z3.And(ys <= b, (ys < 0) == (b < q), (ys > d2) == (b > 2 * d2 + q),
                              (ys < b - d1) == (b > 2 * d1 - q)))
    ev.check("z3", "for all real d1, d2 >= 1, p >= 2, 0 <= B <= d1 + d2: y* <= B (x* >= 0: a1 = 0 never "
             "binds); y* < 0 iff B < (d2-1)/(p-1); y* > d2 iff B > 2 d2 + (d2-1)/(p-1); y* < B - d1 "
             "iff B > 2 d1 - (d2-1)/(p-1)", faces.proved, faces.status + " " + faces.model)
    both = prove(box, z3.Not(z3.And(ys > d2, z3.Or(ys < 0, ys < b - d1))))
    ev.check("z3", "and the critical point never leaves the segment on both sides at once, so exactly "
             "one face binds when it is outside", both.proved, both.status)
    two_y = sympy.simplify(2 * ((S.p - 1) * S.B + 1 - S.d2) / (2 * (S.p - 1)))
    ev.check("sympy", f"2 y* = {two_y} = B - (d2-1)/(p-1): the floor and the ceiling of y* tie (c06: only "
             "they can) iff 2 y* is an odd integer; a clamped point is an integer end, so its integer "
             "optimum is unique", is_zero(two_y - (S.B - (S.d2 - 1) / (S.p - 1))))
    bad = [case for case in product(range(1, 9), range(1, 9), range(0, 17), (2, 3, 4))
           if case[2] <= case[0] + case[1] and not _agrees(optimum_fn, *case)]
    ev.check("exhaustive", "every d1, d2 <= 8, 0 <= B <= d1 + d2, p in (2, 3, 4): paper_optimum's active "
             "label is the face given by these conditions and it lists 2 integer optima exactly when "
             "the tie rule says so", not bad, f"{len(bad)} mismatches, first: {bad[:3]}")
    rng, big = random.Random(16), []
    for _ in range(LARGE_SAMPLE):
        w1, w2 = (rng.randint(1, 10 ** rng.randint(1, 30)) for _ in range(2))
        case = (w1, w2, rng.randint(0, w1 + w2), rng.choice((2, 3, 5)))
        if not _agrees(optimum_fn, *case):
            big.append(case)
    ev.check("exact", f"{LARGE_SAMPLE} seeded random problems with widths up to 10^30: the same (sampled)",
             not big, f"{len(big)} mismatches, first: {big[:1]}")
    ev.note("Theorem 2 says nothing about budgets outside its region. There the optimum sits on a face "
            "of the box: a2 = 0 for small budgets, a2 = 1 for large ones when layer 2 is narrow, a1 = 1 "
            "when layer 1 is narrow; a1 = 0 is never optimal. The paper's worked example (B = d2 "
            "mod 2, p = 2) is one of the interior cases with two tied integer optima.")
    return ev


def _agrees(optimum_fn, d1, d2, b, p) -> bool:
    got = optimum_fn(d1, d2, b, p)
    return (got.active == expected_active(d1, d2, b, p) and got.interior == (got.active == "interior")
            and len(got.integer_retained) == expected_ties(d1, d2, b, p))
