"""c19: "capacity is strictly smaller" (Section 5) and "retains capacity only if ..." (Section 1)."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import z3

from capacity import bounds, exhaustive
from proofs.framework import Evidence, claim
from proofs.z3tools import prove


def undecided_cases(limit: int = 6, corollary1_counts=bounds.corollary1_counts) -> list[tuple]:
    """(d1, d2, x, y), x < d1 or y < d2, where the linearized network's Corollary 1 bound is at
    least the sharp capacity bound of the full network: comparing these upper bounds cannot show
    that linearizing lowers the capacity."""
    return [(d1, d2, x, y) for d1, d2 in product(range(1, limit + 1), repeat=2)
            for x in range(d1 + 1) for y in range(d2 + 1)
            if (x, y) != (d1, d2) and corollary1_counts(x, y, d1, d2) >= bounds.sharp_capacity([d1, d2])]


@claim("c19", "Not theorems as stated: 'the capacity of a linearized network is strictly smaller' "
       "(Section 5) compares upper bounds only; 'contractive networks retain capacity only if fewer "
       "layer-2 neurons are linearized' (Section 1) holds for neither the paper's optimum nor the sharp "
       "one without conditions", paper="not a theorem as stated", page="c19_capacity_comparisons.md")
def check(corollary1_counts=bounds.corollary1_counts) -> Evidence:
    """z3 and enumeration: what the bounds show, and what they cannot."""
    ev = Evidence()
    cases = undecided_cases(corollary1_counts=corollary1_counts)
    ev.check("exhaustive", f"widths <= 6, p = 2: in {len(cases)} linearized cases (first {cases[:1]} as "
             "(d1, d2, x, y)) Corollary 1's bound for the linearized network is >= the sharp capacity "
             "bound of the full one, which is >= its capacity: no comparison of these upper bounds "
             "orders the two capacities, and the paper gives no lower bound", bool(cases)
             and all(corollary1_counts(d1, d2, d1, d2) == bounds.theorem1(d1, d2) for d1, d2, _, _ in cases))
    d1, d2, b = z3.Reals("d1 d2 B")
    t = z3.Real("t")
    clamp = lambda d: z3.If(d < t, d, t)  # noqa: E731
    water = [d2 >= 1, d1 >= d2, t >= 0, clamp(d1) + clamp(d2) == b]
    sharp = prove(water, d1 - clamp(d1) >= d2 - clamp(d2))
    ev.check("z3", "sharp bound (water-filling, c11), all reals: when d1 >= d2, layer 1 linearizes at least "
             "as many neurons as layer 2 at every budget", sharp.proved, sharp.status + " " + sharp.model)
    contra = _paper_contractive_counterexample(corollary1_counts)
    ev.check("exhaustive", "paper's bound (Corollary 1), integers: the smallest contractive (d1 > d2) "
             f"case where every integer optimum linearizes more in layer 2 is {contra} as (d1, d2, B) "
             "(c08: at interior optima layer 1 linearizes more iff d1 > 2 d2 - 1)", contra is not None)
    ev.note("'Corollary 1 shows that the memorization capacity of a selectively linearized network is "
            "strictly smaller' is shown for the upper bound only (c01); without a lower bound on the "
            "capacity of the original network the capacities are not compared. Section 1's 'in "
            "contractive networks selective linearization retains capacity only if fewer neurons in the "
            "second layer are linearized': every linearization lowers the bound (c01), so no choice "
            "'retains' it; read as the optimal allocation, it needs d1 > 2 d2 - 1 under the paper's "
            f"bound (counterexample {contra}) and holds in the weak form (at least as many) under the "
            "sharp bound.")
    return ev


def _paper_contractive_counterexample(corollary1_counts, limit: int = 14):
    """Smallest (d1, d2, B), d1 > d2, whose integer Corollary 1 optima all linearize more in layer 2."""
    for total in range(3, 2 * limit):
        for d2 in range(1, (total + 1) // 2):
            d1 = total - d2
            for b in range(total + 1):
                winners, _ = exhaustive.argmax_all(
                    [d1, d2], b, lambda a: corollary1_counts(Fraction(a[0]), Fraction(a[1]), d1, d2))
                if all(d1 - x < d2 - y for x, y in winners):
                    return (d1, d2, b)
    return None
