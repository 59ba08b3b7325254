"""c10: along any line, a partially linearized FNN has at most prod_l ((p-1) x_l + 1) pieces."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import z3

from capacity import bounds
from capacity.symbolic import S, sharp_pieces_expr
from proofs.claims._common import is_zero
from proofs.framework import Evidence, claim
from proofs.z3tools import prove

#: 1-D input, layer 1 = (ReLU t, linear t), layer 2 = (ReLU(2 relu(t) - t - 1), linear relu(t)).
#: Breakpoints -1, 0, 1: 4 pieces = the sharp bound for x = (1, 1); Corollary 1 allows 5.
WITNESS = {
    "layers": [
        {"weight": [[1], [1]], "bias": [0, 0], "mask": [1, 0]},
        {"weight": [[2, -1], [1, 0]], "bias": [-1, 0], "mask": [1, 0]},
    ],
    "output": {"weight": [1, 1], "bias": 0},
}


def induction_step(p, k, x, k_next):
    """Premise of the step: a kept neuron adds at most (p-1) breakpoints per interval."""
    return k_next <= k + (p - 1) * x * (k + 1)


@claim("c10", "Sharp bound: along any line at most prod_l ((p-1) x_l + 1) pieces (any depth); "
       "Corollary 1's pieces exceed it by (p-1) x (d2-1), strictly iff x >= 1 and d2 >= 2",
       paper="new", page="c10_sharp_bound.md")
def check(sharp_pieces=bounds.sharp_pieces, step_premise=induction_step) -> Evidence:
    """z3 for the induction, sympy for the gap, z3 and enumeration for its sign, a witness.

    ``step_premise`` is the premise of the induction; it is itself checked against Lemma 1
    per neuron (c13) and against networks that attain it, so a stronger, false premise fails.
    """
    ev = Evidence()
    # real variables: the statements hold for all reals in range, so for the integers too,
    # and nonlinear real arithmetic is decidable (z3's nlsat answers these at once)
    p, k, x, k_next, tight = z3.Reals("p K x K_next P")
    _check_premise(ev, step_premise, p, k, x)
    step = prove([p >= 2, k >= 0, x >= 0, tight >= 1, k + 1 <= tight, step_premise(p, k, x, k_next)],
                 k_next + 1 <= tight * sharp_pieces([x], p))
    ev.check("z3", "induction step (all reals, so all integers): K + 1 <= P and K' <= K + (p-1) x (K+1) imply "
             "K' + 1 <= P ((p-1) x + 1)", step.proved, step.status + " " + step.model)
    xs, ks = z3.Reals("x1 x2 x3 x4"), z3.Reals("K1 K2 K3 K4")
    chain, prev = [p >= 2], z3.RealVal(0)
    for xl, kl in zip(xs, ks):
        chain += [xl >= 0, kl >= 0, step_premise(p, prev, xl, kl)]
        prev = kl
    unrolled = prove(chain, ks[-1] + 1 <= sharp_pieces(xs, p))
    ev.check("z3", "unrolled for 4 layers from K0 = 0 (the input line has no breakpoint): "
             "pieces <= sharp_pieces([x1..x4], p)", unrolled.proved, unrolled.status)
    cor1_pieces = bounds.corollary1_counts(S.x, S.y, S.d1, S.d2, S.p) - 1
    sharp = sharp_pieces([S.x, S.y], S.p)
    ev.check("sympy", "Corollary 1's pieces - sharp_pieces([x, y]) == (p-1) x (d2-1)",
             is_zero(cor1_pieces - sharp - (S.p - 1) * S.x * (S.d2 - 1))
             and is_zero(sharp - sharp_pieces_expr()))
    ev.check("sympy", "Theorem 1's pieces - sharp_pieces([d1, d2]) == (p-1) d1 (d2-1)",
             is_zero(bounds.theorem1(S.d1, S.d2, S.p) - 1 - sharp_pieces([S.d1, S.d2], S.p)
                     - (S.p - 1) * S.d1 * (S.d2 - 1)))
    r = {n: z3.Real(n) for n in ("d1", "d2", "x", "y", "p")}
    box = [r["d1"] >= 1, r["d2"] >= 1, r["p"] >= 2, 0 <= r["x"], r["x"] <= r["d1"],
           0 <= r["y"], r["y"] <= r["d2"]]
    c1 = bounds.corollary1_counts(r["x"], r["y"], r["d1"], r["d2"], r["p"]) - 1
    sh = sharp_pieces([r["x"], r["y"]], r["p"])
    t1_ = bounds.theorem1(r["d1"], r["d2"], r["p"]) - 1
    below = prove(box, z3.And(sh <= c1, sh <= t1_))
    strict = prove(box, (sh < c1) == z3.And(r["x"] > 0, r["d2"] > 1))
    ev.check("z3", "for all real widths >= 1, counts in the box, p >= 2: sharp <= Corollary 1 "
             "and sharp <= Theorem 1 (pieces)", below.proved, below.status + " " + below.model)
    ev.check("z3", "sharp < Corollary 1 <=> x > 0 and d2 > 1 (for integers: x >= 1 and d2 >= 2)", strict.proved, strict.status + " " + strict.model)
    bad = [(d1, d2, x, y, pp) for d1, d2, pp in product(range(1, 9), range(1, 9), (2, 3, 4))
           for x in range(d1 + 1) for y in range(d2 + 1)
           if bounds.corollary1_counts(x, y, d1, d2, pp) - 1 - sharp_pieces([x, y], pp)
           != (pp - 1) * x * (d2 - 1)]
    ev.check("exhaustive", "every integer (d1, d2 <= 8, counts in the box, p in 2..4): the gap is "
             "exactly (p-1) x (d2-1)", not bad, f"violations: {bad[:3]}")
    _check_witness(ev, sharp_pieces)
    return ev


def _check_premise(ev: Evidence, step_premise, p, k, x) -> None:
    """The premise is what Lemma 1 per neuron gives (c13), and real networks reach it."""
    from proofs.claims._networks import layer_counts
    from proofs.claims.c13_lemma1_per_neuron import per_neuron_bound
    from capacity.witnesses import zigzag_network

    lemma = prove([p >= 2, k >= 0, x >= 0], step_premise(p, k, x, k + x * per_neuron_bound(p, k)))
    ev.check("z3", "the premise K' <= K + (p-1) x (K+1) admits the worst case of Lemma 1 per neuron "
             "(c13: each of the x kept neurons adds (p-1)(K+1) breakpoints), for all reals",
             lemma.proved, lemma.status + " " + lemma.model)
    reached = []
    for retained in ((1, 1), (3, 2), (2, 1, 2)):
        counts = layer_counts(zigzag_network(retained))
        reached += [bool(step_premise(2, counts[i], xl, counts[i + 1])) for i, xl in enumerate(retained)]
    ev.check("exact", "the zigzag networks with retained (1, 1), (3, 2), (2, 1, 2) satisfy the premise at "
             "every layer, counted exactly (they reach it: a stronger premise excludes them)",
             all(reached), f"{reached}")


def _check_witness(ev: Evidence, sharp_pieces) -> None:
    """Count the witness's pieces exactly with capacity.pieces, when that module is present."""
    try:
        from capacity.pieces import count_pieces, network_from_dict
    except ImportError:
        return
    got = count_pieces(network_from_dict(WITNESS))
    cor1 = bounds.corollary1_counts(1, 1, 2, 2) - 1
    ev.check("exact", f"witness d1 = d2 = 2, one ReLU kept per layer: capacity.pieces counts "
             f"{got.pieces} pieces (breakpoints {[str(Fraction(t)) for t in got.breakpoints]}) = "
             f"sharp bound {sharp_pieces([1, 1])} < Corollary 1's {cor1}: Corollary 1 is not tight",
             got.pieces == sharp_pieces([1, 1]) < cor1)
