"""c05: Appendix A.1's piece-count sum and its closed form."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import sympy

from capacity.symbolic import S, corollary1_expr
from proofs import paper
from proofs.claims._common import GRID, PS, exact_eval, is_zero
from proofs.framework import Evidence, claim


def lemma1_fold(x: int, y: int, d1: int, d2: int, p: int) -> int:
    """Pieces along a line by applying Lemma 1 neuron by neuron, as the proof of A.1 does.

    Sum of functions with k and l pieces: at most k + l - 1; sigma after k pieces: p k.
    """
    z2 = 1
    for j in range(d1):  # the pre-activation of layer 2 sums d1 layer-1 outputs
        z2 = z2 + (p if j < x else 1) - 1
    out = None
    for k in range(d2):  # the output sums d2 layer-2 outputs
        piece = p * z2 if k < y else z2
        out = piece if out is None else out + piece - 1
    return out


@claim("c05", "Appendix A.1's piece count: the Lemma 1 sum gives the stated closed form "
       "(the printed sum counts one neuron twice)", paper="erratum",
       page="c05_appendix_a1_piece_sum.md")
def check(closed_form=paper.a1_piece_closed_form) -> Evidence:
    """sympy on the sum as printed and as corrected; the fold of Lemma 1 on a grid."""
    ev = Evidence()
    closed = closed_form()
    counts = paper.a1_neuron_pieces()
    pre = counts["pre-activation z2"]
    lemma_pre = 1 + S.a1 * S.d1 * (S.p - 1)  # Lemma 1: a1 d1 terms of p pieces, the rest affine
    ev.check("sympy", "per-neuron counts: z2 has 1 + a1 d1 (p - 1) pieces, sigma(z2) has p times "
             "that, a linear neuron keeps z2's count",
             is_zero(pre - lemma_pre) and is_zero(counts["kept neuron sigma(z2)"] - S.p * lemma_pre)
             and is_zero(counts["linear neuron z2"] - lemma_pre))
    ev.check("sympy", "closed form + 1 == Corollary 1 (capacity = pieces + 1)",
             is_zero(closed + 1 - corollary1_expr()))
    printed = paper.a1_piece_sum(first_index=1)
    excess = sympy.factor(sympy.expand(printed - closed))
    ev.check("sympy", "the sum as printed minus the closed form == a1 d1 p (p - 1) + p - 1 "
             "(not zero: the first kept neuron is counted twice)",
             is_zero(excess - (S.a1 * S.d1 * S.p * (S.p - 1) + S.p - 1)), f"excess = {excess}")
    ev.check("sympy", "with the kept-neuron sum starting at i = 2, the sum equals the closed form",
             is_zero(paper.a1_piece_sum(first_index=2) - closed))
    def closed_at(a1, a2, d1, d2, p):
        return exact_eval(closed, {"a1": a1, "a2": a2, "d1": d1, "d2": d2, "p": p})

    bad = [(d1, d2, p, x, y) for d1, d2, p in product(range(1, GRID + 1), range(1, GRID + 1), PS)
           for x in range(d1 + 1) for y in range(d2 + 1)
           if lemma1_fold(x, y, d1, d2, p) != closed_at(Fraction(x, d1), Fraction(y, d2), d1, d2, p)]
    ev.check("exhaustive", f"Lemma 1 applied neuron by neuron (d1, d2 <= {GRID}, p in {PS}) "
             "gives exactly the closed form", not bad, f"violations: {bad[:3]}")
    ev.note("Appendix A.1 prints a1 d1 p(p-1) + p + sum_{i=1}^{a2 d2}(...) + ...: the leading term "
            "already counts the first kept neuron, so the sum exceeds the stated closed form by "
            "a1 d1 p(p-1) + p - 1. The kept-neuron sum must start at i = 2 (equivalently, the "
            "leading term must be 1); the closed form, and so Corollary 1, is right.")
    return ev

