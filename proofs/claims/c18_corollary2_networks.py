"""c18: Corollary 2 as a statement about pruned networks, and its stray "+ 2 < N"."""

from __future__ import annotations

import z3

from capacity import bounds
from capacity.pieces import count_pieces
from capacity.symbolic import S
from proofs.claims._common import is_zero
from proofs.claims._networks import activation_p, sample
from proofs.framework import Evidence, claim
from proofs.z3tools import prove


def capacity_from_pieces(pieces):
    """A.1: 'if the pieces are strictly fewer than N - 1, N points cannot be fitted'."""
    return pieces + 1


@claim("c18", "Corollary 2 holds for networks pruned to whole widths a_l d_l (a width 0 included: the "
       "output is then constant); the printed '... + 2 < N' is a stray: it means capacity <= "
       "a1 a2 d1 d2 p(p-1) + a2 d2 (p-1) + 2", paper="holds with conditions",
       page="c18_corollary2_networks.md")
def check(corollary2_counts=bounds.corollary2_counts, to_capacity=capacity_from_pieces) -> Evidence:
    """sympy and z3 for the instantiation and the reading; exact counts on pruned networks."""
    ev = Evidence()
    ev.check("sympy", "Corollary 2 in counts is Theorem 1 at the pruned widths x = a1 d1, y = a2 d2: "
             "a statement about a network only when x and y are whole numbers",
             is_zero(corollary2_counts(S.x, S.y, S.d1, S.d2, S.p) - bounds.theorem1(S.x, S.y, S.p)))
    x, y, p, n, pieces = z3.Ints("x y p N P")
    zero = prove([p >= 2, x >= 0, y >= 0, z3.Or(x == 0, y == 0)],
                 corollary2_counts(x, y, 1, 1, p) - 1 >= 1)
    ev.check("z3", "for all integers p >= 2 and counts x, y >= 0 with x = 0 or y = 0 (Theorem 1 is stated "
             "for widths >= 1): Corollary 2 still allows at least the 1 piece of a constant output",
             zero.proved, zero.status + " " + zero.model)
    bad = []
    for index, net in enumerate(sample(200, 18, depth=2)):
        k1, k2 = net.kept()
        got = count_pieces(net).pieces
        if got > corollary2_counts(k1, k2, *net.widths, activation_p(net)) - 1 or (0 in (k1, k2) and got != 1):
            bad.append(index)
    ev.check("exact", "200 seeded random two-layer networks with pruned neurons (zero rows, zero outgoing "
             "weights): pieces <= Corollary 2 at the kept widths - 1, and exactly 1 when a layer keeps "
             "no neuron", not bad, f"violations: {bad[:3]}")
    reading = prove([], (pieces < n - 1) == (to_capacity(pieces) < n))
    ev.check("z3", "for all integers P, N: A.1's 'P < N - 1' (too few pieces for N alternating labels) is "
             "'capacity bound P + 1 < N': the '< N' printed after Corollary 2 is that condition, so the "
             "corollary reads capacity <= bound", reading.proved, reading.status + " " + reading.model)
    ev.note("Corollary 2 prints '... + 2 < N.' where a bound is meant: read 'the memorization capacity "
            "is no greater than a1 a2 d1 d2 p(p-1) + a2 d2 (p-1) + 2' (no network of that architecture "
            "memorizes N points when the bound is < N). It instantiates Theorem 1, so a1 d1 and a2 d2 "
            "must be whole numbers; a width of 0 is not a two-hidden-layer network, but the bound still "
            "holds there (the output is constant).")
    return ev
