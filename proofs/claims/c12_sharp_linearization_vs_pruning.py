"""c12: under the sharp bound, linearizing and pruning with the same kept counts bound alike."""

from __future__ import annotations

from itertools import product

import z3

from capacity import bounds
from capacity.symbolic import S
from proofs.claims._common import is_zero
from proofs.framework import Evidence, claim
from proofs.z3tools import prove


def pruned_sharp(kept, p=2, sharp_pieces=bounds.sharp_pieces):
    """Sharp pieces bound of the network pruned to widths ``kept`` (all neurons keep sigma).

    A layer pruned to width 0 cuts the signal: the output is constant, one piece.
    """
    return sharp_pieces(kept, p) if all(k >= 1 for k in kept) else 1


@claim("c12", "Under the sharp bound, linearized and pruned networks with the same kept counts "
       "(each layer keeping >= 1) have the same bound: Corollary 1 - Corollary 2 = (p-1) x (d2-y) "
       "is the difference of two overcounts", paper="erratum",
       page="c12_sharp_linearization_vs_pruning.md")
def check(sharp_pieces=bounds.sharp_pieces) -> Evidence:
    """sympy decomposition of the gap; z3 signs over the integers; enumeration over depths."""
    ev = Evidence()
    x, y, d1, d2, p = S.x, S.y, S.d1, S.d2, S.p
    sharp = sharp_pieces([x, y], p)
    over1 = bounds.corollary1_counts(x, y, d1, d2, p) - 1 - sharp
    over2 = bounds.corollary2_counts(x, y, d1, d2, p) - 1 - sharp
    ev.check("sympy", "Corollary 1 overcounts the sharp bound by (p-1) x (d2-1), Corollary 2 by "
             "(p-1) x (y-1); their gap (p-1) x (d2-y) is the difference",
             is_zero(over1 - (p - 1) * x * (d2 - 1)) and is_zero(over2 - (p - 1) * x * (y - 1))
             and is_zero(over1 - over2 - (p - 1) * x * (d2 - y)))
    r = {n: z3.Real(n) for n in ("d1", "d2", "x", "y", "p")}
    box = [r["d1"] >= 1, r["d2"] >= 1, r["p"] >= 2, 0 <= r["x"], r["x"] <= r["d1"],
           0 <= r["y"], r["y"] <= r["d2"]]
    c2 = bounds.corollary2_counts(r["x"], r["y"], r["d1"], r["d2"], r["p"]) - 1
    sh = sharp_pieces([r["x"], r["y"]], r["p"])
    looser = prove(box, (c2 >= sh) == z3.Or(r["y"] >= 1, r["x"] == 0))
    ev.check("z3", "for all reals (so all integers) in the box: Corollary 2's pieces >= sharp <=> y >= 1 or x = 0 "
             "(with y = 0 the pruned net is constant, 1 piece, which Corollary 2 gets right)",
             looser.proved, looser.status + " " + looser.model)
    bad = []
    for depth, top in ((1, 8), (2, 6), (3, 4), (4, 3)):
        for kept in product(range(top + 1), repeat=depth):
            for pp in (2, 3):
                same = pruned_sharp(kept, pp, sharp_pieces) == sharp_pieces(kept, pp)
                if same != (all(k >= 1 for k in kept) or not any(kept)):
                    bad.append((kept, pp))
    ev.check("exhaustive", "every kept-count vector of 1-4 layers (counts <= 8, 6, 4, 3), p in (2, 3): "
             "the linearized and the pruned sharp bounds are equal exactly when every layer keeps "
             "a ReLU (or none does)", not bad, f"violations: {bad[:3]}")
    ev.note("The linearization-vs-pruning gap a1 (1 - a2) d1 d2 (p - 1) of Corollaries 1-2 is an "
            "artefact of loose counting: Corollary 1 overcounts the sharp bound by (p-1) x (d2-1) and "
            "Corollary 2 by (p-1) x (y-1). Under the sharp bound prod((p-1) x_l + 1), which depends on "
            "the kept counts only, both have the same bound whenever every layer keeps at least one "
            "ReLU; the only difference left is that a layer pruned to width 0 makes the output constant.")
    return ev
