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
    bad = _networks(sharp_pieces)
    ev.check("exact", "every kept-count vector of 1-3 layers (counts <= 4, 3, 2), p = 2: the zigzag network "
             "that keeps them (one linearized carrier per layer) reaches sharp_pieces(kept) pieces; "
             "pruning its carriers leaves a network within the pruned bound whose kept() and retained() "
             "are the same counts and whose bounds_report gives the same sharp bound when every layer "
             "keeps a ReLU, and which is constant (1 piece) when a layer keeps none; counted exactly", not bad, f"violations: {bad[:3]}")
    ev.note("The linearization-vs-pruning gap a1 (1 - a2) d1 d2 (p - 1) of Corollaries 1-2 is an "
            "artefact of loose counting: Corollary 1 overcounts the sharp bound by (p-1) x (d2-1) and "
            "Corollary 2 by (p-1) x (y-1). Under the sharp bound prod((p-1) x_l + 1), which depends on "
            "the kept counts only, both have the same bound whenever every layer keeps at least one "
            "ReLU; the only difference left is that a layer pruned to width 0 makes the output constant.")
    return ev


def _prune_carriers(net):
    """The network with every linearized neuron pruned (zero weight row and bias)."""
    from dataclasses import replace

    layers = tuple(replace(layer, weight=tuple(row if m else (0,) * len(row)
                                               for row, m in zip(layer.weight, layer.mask)),
                           bias=tuple(b if m else 0 for b, m in zip(layer.bias, layer.mask)))
                   for layer in net.layers)
    return replace(net, layers=layers)


def _networks(sharp_pieces) -> list:
    """Linearized zigzag networks and their pruned versions, counted exactly."""
    from capacity.pieces import bounds_report, count_pieces
    from capacity.witnesses import zigzag_network

    bad = []
    for depth, top in ((1, 4), (2, 3), (3, 2)):
        for kept in product(range(top + 1), repeat=depth):
            lin = zigzag_network(kept)
            pruned = _prune_carriers(lin)
            sharp = sharp_pieces(kept)
            pieces = count_pieces(pruned).pieces
            if all(kept):
                same = (lin.retained() == pruned.kept() == pruned.retained() == kept
                        and bounds_report(lin)["sharp"]["pieces"] == bounds_report(pruned)["sharp"]["pieces"]
                        == sharp)
            else:  # a layer pruned to width 0 cuts the signal: what feeds it is pruned too
                same = pieces == 1 and all(k == 0 for k, x in zip(pruned.kept(), kept) if x == 0)
            if not (same and pieces <= pruned_sharp(kept, 2, sharp_pieces) and count_pieces(lin).pieces == sharp):
                bad.append(kept)
    return bad
