"""c17: Theorem 1 and Corollary 1 as statements about networks."""

from __future__ import annotations

from fractions import Fraction

import z3

from capacity import bounds
from capacity.pieces import count_pieces
from proofs.claims._networks import activation_p, sample
from proofs.framework import Evidence, claim
from proofs.z3tools import prove


@claim("c17", "Theorem 1 and Corollary 1 hold for networks: pieces <= sharp (c14) <= Corollary 1 - 1 "
       "<= Theorem 1 - 1, and capacity <= pieces + 1 (c15); fractional a_l d_l (read as floors) only "
       "loosen Corollary 1; both bound the capacity from above only", paper="holds",
       page="c17_theorem1_networks.md")
def check(theorem1=bounds.theorem1, corollary1=bounds.corollary1) -> Evidence:
    """z3 for the chain of bounds and the monotonicity; exact counts on two-layer networks."""
    ev = Evidence()
    r = {n: z3.Real(n) for n in ("d1", "d2", "x", "y", "p")}
    box = [r["d1"] >= 1, r["d2"] >= 1, r["p"] >= 2, 0 <= r["x"], r["x"] <= r["d1"],
           0 <= r["y"], r["y"] <= r["d2"]]
    cor1 = corollary1(r["x"] / r["d1"], r["y"] / r["d2"], r["d1"], r["d2"], r["p"])
    thm1 = theorem1(r["d1"], r["d2"], r["p"])
    sharp = bounds.sharp_pieces([r["x"], r["y"]], r["p"])
    chain = prove(box, z3.And(sharp <= cor1 - 1, cor1 <= thm1))
    ev.check("z3", "for all real widths >= 1, p >= 2 and retained counts in the box: sharp pieces <= "
             "Corollary 1 - 1 and Corollary 1 <= Theorem 1", chain.proved, chain.status + " " + chain.model)
    a1, a2, b1, b2 = z3.Reals("a1 a2 b1 b2")
    box2 = [r["d1"] >= 1, r["d2"] >= 1, r["p"] >= 2, 0 <= b1, b1 <= a1, a1 <= 1, 0 <= b2, b2 <= a2, a2 <= 1]
    mono = prove(box2, corollary1(b1, b2, r["d1"], r["d2"], r["p"]) <= corollary1(a1, a2, r["d1"], r["d2"], r["p"]))
    ev.check("z3", "Corollary 1 is nondecreasing in a1 and a2 on the box (all reals): the neurons "
             "k in [a_l d_l] of its statement are floor(a_l d_l), and the bound at a_l is at least the "
             "bound at floor(a_l d_l) / d_l", mono.proved, mono.status + " " + mono.model)
    bad = []
    for n, net in enumerate(sample(200, 17, depth=2)):
        (d1, d2), (x, y), p = net.widths, net.retained(), activation_p(net)
        pieces = count_pieces(net).pieces
        if (pieces > corollary1(Fraction(x, d1), Fraction(y, d2), d1, d2, p) - 1
                or pieces > theorem1(d1, d2, p) - 1):
            bad.append(n)
    ev.check("exact", "200 seeded random two-layer networks (widths <= 4, all three activations, masks, "
             "pruned neurons): pieces <= Corollary 1 - 1 and <= Theorem 1 - 1, counted exactly",
             not bad, f"violations: {bad[:3]}")
    ev.note("Theorem 1 and Corollary 1 are correct upper bounds on the memorization capacity of "
            "networks (by the sharp bound, c14, and capacity <= pieces + 1, c15), but not tight "
            "(c10). They bound the capacity from above only: no statement here, or in the paper, "
            "says how large the capacity is.")
    return ev
