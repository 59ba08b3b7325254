"""c11: prod((p-1) x_l + 1) under sum x_l = B, x_l <= d_l is maximised by water-filling."""

from __future__ import annotations

from itertools import product

import sympy
import z3

from capacity import bounds, exhaustive, optimum
from capacity.symbolic import S
from proofs.claims._common import is_zero
from proofs.framework import Evidence, claim
from proofs.z3tools import prove


def _two_layer(kind, slack, p=None):
    """z3 premises: (x, y) feasible, (u, v) water-filled (uncapped layers within ``slack``).

    y = B - x and v = B - u are substituted, which keeps the integer queries small.
    """
    d1, d2, b, x, u = (kind(n) for n in ("d1", "d2", "B", "x", "u"))
    p = kind("p") if p is None else p
    y, v = b - x, b - u
    feasible = lambda s, t: [0 <= s, s <= d1, 0 <= t, t <= d2]  # noqa: E731
    premises = [d1 >= 1, d2 >= 1, p >= 2] + feasible(x, y) + feasible(u, v) + [
        z3.Implies(u < d1, v <= u + slack), z3.Implies(v < d2, u <= v + slack)]
    return premises, (x, y), (u, v), p


@claim("c11", "Water-filling x_l = min(d_l, t) maximises the sharp bound under a budget, for any "
       "depth and p; for the worked example it keeps (5000, 5000), not the paper's (7500, 2500) / "
       "(7499, 2501); the paper's integer optima keep at least as many layer-1 ReLUs",
       paper="new", page="c11_water_filling.md")
def check(optimum_fn=optimum.sharp_optimum, sharp_capacity=bounds.sharp_capacity) -> Evidence:
    """z3 for two layers (reals and integers) and the exchange step; enumeration for 2-4 layers."""
    ev = Evidence()
    premises, (x, y), (u, v), p = _two_layer(z3.Real, 0)
    real = prove(premises, sharp_capacity([x, y], p) <= sharp_capacity([u, v], p))
    ev.check("z3", "two layers, all reals: every water-filled (u, v) (an uncapped layer is never "
             "below the other) beats every feasible (x, y)", real.proved, real.status + " " + real.model)
    for p_int in (2, 3, 4):
        premises, (x, y), (u, v), p = _two_layer(z3.Int, 1, z3.IntVal(p_int))
        integer = prove(premises, sharp_capacity([x, y], p) <= sharp_capacity([u, v], p))
        ev.check("z3", f"two layers, integers, p = {p_int}: every (u, v) whose uncapped layer is within "
                 "1 of the other beats every feasible integer (x, y)", integer.proved,
                 integer.status + " " + integer.model)
    bx, ux = S.B, sympy.Symbol("u")
    diff = (sharp_capacity([ux, bx - ux], S.p) - sharp_capacity([S.x, bx - S.x], S.p))
    ev.check("sympy", "any p: on x + y = u + v = B, sharp(u, v) - sharp(x, y) == (p-1)^2 (u - x)(v - x)",
             is_zero(diff - (S.p - 1) ** 2 * (ux - S.x) * (bx - ux - S.x)))
    premises, (x, y), (u, v), _ = _two_layer(z3.Int, 1, z3.IntVal(2))
    core = prove(premises, (u - x) * (v - x) >= 0)
    ev.check("z3", "and (u - x)(v - x) >= 0 for every integer water-filled (u, v) and feasible (x, y): "
             "integer optimality for every p", core.proved, core.status + " " + core.model)
    a, c, rest, q = z3.Ints("a c R p")
    gain = (sharp_capacity([a + 1, c - 1], q) - 1) * rest - (sharp_capacity([a, c], q) - 1) * rest
    exchange = prove([q >= 2, a >= 0, c >= a + 2, rest >= 1], gain > 0)
    ev.check("z3", "exchange step for any depth: moving one ReLU from a layer with c to one with "
             "a <= c - 2 strictly increases the product (R >= 1 = the other layers' factors)",
             exchange.proved, exchange.status)
    bad, differ, same = _exhaustive(optimum_fn, sharp_capacity)
    ev.check("exhaustive", "2 layers (widths <= 6), 3 layers (<= 4), 4 layers (<= 3), every budget, "
             "p in (2, 3) at every depth: sharp_optimum's integer optima (all ties, their count and "
             "value) equal enumeration; the continuous optimum is water-filled and bounds every "
             "integer value", not bad, f"{len(bad)} mismatches, first: {bad[:3]}")
    _check_large(ev, optimum_fn, sharp_capacity)
    gap = bounds.corollary1_counts(S.x, S.y, S.d1, S.d2, S.p) - bounds.sharp_capacity([S.x, S.y], S.p)
    ev.check("sympy", "the paper's objective is the sharp one plus (p-1) x (d2-1), a term that grows "
             "with x: it pulls the paper's optimum towards layer 1",
             is_zero(gap - (S.p - 1) * S.x * (S.d2 - 1)))
    ev.check("exhaustive", f"2 layers (widths <= 6, p in (2, 3)): the paper's integer optima keep at "
             f"least as many layer-1 ReLUs as the sharp ones (strong set order) and coincide when "
             f"d2 = 1; they differ on {differ} cases and coincide on {len(same)} cases with d2 >= 2 and "
             f"x >= 1 (rounding and the box), the first {same[:1]} as (d1, d2, B, p)",
             not any(b[0] == 'order' for b in bad) and bool(same))
    paper_opt, sharp_opt = optimum.paper_optimum(50000, 5000, 10000), optimum_fn([50000, 5000], 10000)
    sharp_at_paper = [sharp_capacity(r) for r in paper_opt.integer_retained]
    cor1_at_sharp = bounds.corollary1_counts(5000, 5000, 50000, 5000)
    ev.check("exact", f"worked example: sharp optimum {sharp_opt.integer_retained} with sharp capacity "
             f"{sharp_opt.integer_value}; the paper's {paper_opt.integer_retained} get {sharp_at_paper}; "
             f"Corollary 1 at (5000, 5000) is {cor1_at_sharp} < {paper_opt.integer_value}",
             sharp_opt.integer_retained == [(5000, 5000)]
             and all(s < sharp_opt.integer_value for s in sharp_at_paper)
             and cor1_at_sharp < paper_opt.integer_value)
    return ev


def _exhaustive(optimum_fn, sharp_capacity):
    bad, differ, same = [], 0, []
    cases = [(w, p) for p in (2, 3) for w in product(range(1, 7), repeat=2)]
    cases += [(w, p) for p in (2, 3) for w in product(range(1, 5), repeat=3)]
    cases += [(w, p) for p in (2, 3) for w in product(range(1, 4), repeat=4)]
    for widths, p in cases:
        for b in range(sum(widths) + 1):
            got = optimum_fn(list(widths), b, p)
            winners, best = exhaustive.argmax_all(widths, b, lambda al: sharp_capacity(al, p))
            level = got.level
            water = all(r == min(d, level) for r, d in zip(got.retained, widths)) and sum(got.retained) == b
            if (got.integer_retained != winners or got.integer_ties != len(winners)
                    or got.integer_value != best or not water or got.value < best):
                bad.append(("optimum", widths, b, p))
            if len(widths) == 2:
                paper, _ = exhaustive.paper_integer_optima(*widths, b, p)
                px, sx = [w[0] for w in paper], [w[0] for w in winners]
                if min(px) < min(sx) or max(px) < max(sx) or (widths[1] == 1 and paper != winners):
                    bad.append(("order", widths, b, p))
                differ += paper != winners
                if paper == winners and widths[1] >= 2 and any(w[0] >= 1 for w in winners):
                    same.append((*widths, b, p))
    return bad, differ, same


#: Seeded sample of large problems for ``_check_large``.
LARGE_SAMPLE = 200


def _check_large(ev, optimum_fn, sharp_capacity):
    """sharp_optimum on large random problems: no exchange of one ReLU improves its optima."""
    import random

    rng, bad = random.Random(20220706), []
    for _ in range(LARGE_SAMPLE):
        widths = [rng.randint(1, 10 ** rng.randint(1, 30)) for _ in range(rng.randint(1, 5))]
        b, p = rng.randint(0, sum(widths)), rng.choice((2, 3, 5))
        got = optimum_fn(widths, b, p)
        if not all(_exchange_optimal(a, widths, sharp_capacity, p) and sum(a) == b
                   and sharp_capacity(a, p) == got.integer_value for a in got.integer_retained):
            bad.append((widths, b, p))
    ev.check("exact", f"{LARGE_SAMPLE} seeded random problems (1-5 layers, widths up to 10^30, p in "
             "(2, 3, 5)): every listed integer optimum of sharp_optimum spends the budget, has the stated "
             "value, and no move of one ReLU between two layers improves it (which, by the exchange "
             "step and concavity, makes it optimal; sampled, not all values)", not bad,
             f"{len(bad)} failures, first: {bad[:1]}")


def _exchange_optimal(alloc, widths, sharp_capacity, p) -> bool:
    """No move of one ReLU from layer j to layer i (in the box) increases the value."""
    value = sharp_capacity(alloc, p)
    for i, j in product(range(len(alloc)), repeat=2):
        if i != j and alloc[i] < widths[i] and alloc[j] > 0:
            moved = list(alloc)
            moved[i] += 1
            moved[j] -= 1
            if sharp_capacity(moved, p) > value:
                return False
    return True
