"""c15: A.1's last step: N alternating collinear labels need N - 1 pieces, so capacity <= pieces + 1."""

from __future__ import annotations

from itertools import product

import z3

from capacity.bounds import sharp_pieces
from capacity.pieces import restrict
from capacity.witnesses import alternating_points, zigzag_network
from proofs.framework import Evidence, claim

#: Piece counts for which z3 refutes a fit of P + 2 alternating points (all reals).
Z3_PIECES = (1, 2, 3, 4)


def pieces_needed(n: int) -> int:
    """The claim: fitting n alternating labels on a line needs at least n - 1 pieces."""
    return n - 1


def _pl_fits(pieces: int, n: int) -> z3.CheckSatResult:
    """z3: is there a continuous function with ``pieces`` linear pieces taking the values
    -1, +1, -1, ... at n increasing points (all breakpoints, slopes, points real)?"""
    b = [z3.Real(f"b{j}") for j in range(pieces - 1)]
    s = [z3.Real(f"s{j}") for j in range(pieces)]
    c = z3.Real("c")  # the value at the first breakpoint (or at 0 for one piece)
    premises = [b[j] < b[j + 1] for j in range(pieces - 2)]
    values = [c]  # at each breakpoint; continuity is built in
    for j in range(pieces - 2):
        values.append(values[-1] + s[j + 1] * (b[j + 1] - b[j]))

    def f(t):
        if pieces == 1:
            return c + s[0] * t
        expr = values[-1] + s[-1] * (t - b[-1])
        for j in reversed(range(pieces - 1)):
            expr = z3.If(t <= b[j], values[j] + s[j] * (t - b[j]), expr)
        return expr

    xs = [z3.Real(f"x{i}") for i in range(n)]
    premises += [xs[i] < xs[i + 1] for i in range(n - 1)]
    premises += [f(xs[i]) == (-1) ** (i + 1) for i in range(n)]
    solver = z3.Solver()
    solver.set("timeout", 30000)
    solver.add(*premises)
    return solver.check()


def increasing_pieces(restriction, ts, labels) -> list[int]:
    """For each consecutive pair of fitted points, a piece between them whose slope has the
    sign of the label change (the first such piece). Alternating labels make these pieces
    strictly increasing, hence distinct: the constructive half of the argument."""
    cuts = list(restriction.breakpoints)
    chosen = []
    for (t0, y0), (t1, y1) in zip(zip(ts, labels), list(zip(ts, labels))[1:]):
        first = sum(1 for c in cuts if c <= t0)  # the piece containing (t0, t0 + eps)
        last = sum(1 for c in cuts if c < t1)    # the piece containing (t1 - eps, t1)
        sign = (y1 > y0) - (y1 < y0)
        found = [i for i in range(first, last + 1)
                 if (restriction.slopes[i] > 0) - (restriction.slopes[i] < 0) == sign]
        chosen.append(found[0] if found else None)
    return chosen


@claim("c15", "A.1's last step: a continuous function with fewer than N - 1 linear pieces on a line "
       "cannot fit N alternating labels, so capacity <= (pieces along a line) + 1; zigzag networks "
       "with P pieces fit P + 1 alternating points", paper="holds", page="c15_capacity_pieces.md")
def check(needed=pieces_needed) -> Evidence:
    """z3 for small piece counts (all reals), the piece injection on exact fits, zigzag fits."""
    ev = Evidence()
    results = {p: (_pl_fits(p, p + 2), _pl_fits(p, p + 1)) for p in Z3_PIECES}
    ok = all(r == (z3.unsat, z3.sat) for r in results.values())
    ev.check("z3", f"for P in {Z3_PIECES}, over all reals (breakpoints, slopes, values, points): no "
             "continuous function with P pieces fits P + 2 alternating labels (unsat), and some fits "
             "P + 1 (sat)", ok and all(needed(p + 2) > p and needed(p + 1) <= p for p in Z3_PIECES),
             {p: tuple(map(str, r)) for p, r in results.items()})
    fits, used = [], []
    for depth in (1, 2, 3):
        for retained in product(range(4 - depth + 1), repeat=depth):
            net = zigzag_network(retained)
            total = sharp_pieces(retained)
            points = alternating_points(total + 1)
            fits.append(all(net(x) == y for x, y in points))
            chosen = increasing_pieces(restrict(net), [x[0] for x, _ in points], [y for _, y in points])
            used.append(None not in chosen and all(a < b for a, b in zip(chosen, chosen[1:]))
                        and len(set(chosen)) >= needed(len(points)))
    ev.check("exact", "for every retained vector of 1-3 layers (counts <= 3, 2, 1): the zigzag network "
             "with P = prod(x_l + 1) pieces fits the P + 1 points x_i = i, y_i = (-1)^i exactly, so "
             "the step capacity <= pieces + 1 cannot be improved", all(fits), f"{fits.count(False)} misfits")
    ev.check("exact", "on each of those fits, the pieces chosen between consecutive points (slope of the "
             "label change's sign) are strictly increasing: N - 1 distinct pieces, the argument that "
             "proves the step for every N", all(used), f"{used.count(False)} failures")
    return ev
