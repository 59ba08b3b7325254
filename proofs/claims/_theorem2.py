"""Theorem 2 checks shared by c06 (p = 2, the paper's statement) and c07 (any p).

Everything is derived here from the objective and the constraint: sympy solves the
Lagrangian's first-order conditions, computes the bordered Hessian and the region where
the critical point lies in the box; z3 proves global optimality and the region; the
integer optima of ``capacity.optimum.paper_optimum`` are compared with enumeration.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import sympy
import z3

from capacity import exhaustive, optimum
from capacity.symbolic import S
from proofs.claims._common import exact_eval, is_zero
from proofs.framework import Evidence
from proofs.z3tools import prove, to_z3

LAM = sympy.Symbol("lambda", real=True)
Q = sympy.Symbol("q", positive=True)  # q = p - 1 > 0, for sign arguments


@dataclass(frozen=True)
class Derivation:
    """What sympy derived: the critical point, the bordered Hessian, the region in B."""

    conditions: tuple
    a1: sympy.Expr
    a2: sympy.Expr
    lam: sympy.Expr
    hessian: sympy.Matrix
    det: sympy.Expr
    b_low: sympy.Expr
    b_high: tuple[sympy.Expr, sympy.Expr]
    b_redundant: sympy.Expr


def derive(objective: sympy.Expr) -> Derivation:
    """Solve the Lagrangian of ``objective`` on a1 d1 + a2 d2 = B; derive the box region.

    Raises:
        ValueError: when the first-order conditions do not have exactly one solution.
    """
    a1, a2, d1, d2, b = S.a1, S.a2, S.d1, S.d2, S.B
    constraint = a1 * d1 + a2 * d2
    lagrangian = objective - LAM * (constraint - b)
    conditions = [sympy.diff(lagrangian, v) for v in (a1, a2, LAM)]
    solutions = sympy.solve(conditions, [a1, a2, LAM], dict=True)
    if len(solutions) != 1:
        raise ValueError(f"expected one critical point, sympy found {solutions}")
    sol = {k: sympy.simplify(v) for k, v in solutions[0].items()}
    grad = [sympy.diff(constraint, v) for v in (a1, a2)]
    hess = sympy.Matrix(3, 3, lambda i, j: 0 if i == j == 0 else (
        grad[j - 1] if i == 0 else grad[i - 1] if j == 0 else
        sympy.diff(lagrangian, (a1, a2)[i - 1], (a1, a2)[j - 1])))
    at = {a1: sol[a1], a2: sol[a2]}
    bound = lambda expr, level: sympy.simplify(sympy.solve(sympy.Eq(expr, level), b)[0])  # noqa: E731
    return Derivation(
        conditions=tuple(conditions),
        a1=sol[a1], a2=sol[a2], lam=sol[LAM], hessian=hess,
        det=sympy.factor(hess.subs(at).det()),
        b_low=bound(sol[a2], 0),
        b_high=(bound(sol[a2], 1), bound(sol[a1], 1)),
        b_redundant=bound(sol[a1], 0),
    )


def z3_env(p):
    """z3 reals for d1 d2 B a1 a2 x y, and p (a z3 real, or the given integer)."""
    env = {n: z3.Real(n) for n in ("d1", "d2", "B", "a1", "a2", "x", "y")}
    env["p"] = z3.Real("p") if isinstance(p, sympy.Symbol) else z3.IntVal(int(p))
    return env


def check_theorem2(ev: Evidence, objective: sympy.Expr, p, value, optimum_fn=optimum.paper_optimum,
                   grid: int = 7, ps=(2,)) -> Derivation:
    """Add every Theorem 2 step to ``ev``.

    Args:
        objective: Corollary 1 as a sympy expression in a1, a2 (with p symbolic or 2).
        p: ``S.p`` or the integer 2.
        value: the same bound as plain arithmetic, value(a1, a2, d1, d2, p), for z3.
        optimum_fn: the maximiser under test (capacity.optimum.paper_optimum).
        grid, ps: the exhaustive range: widths 1..grid, p in ps.
    """
    d = derive(objective)
    a1, a2, d1, d2, b = S.a1, S.a2, S.d1, S.d2, S.B
    y_star = sympy.simplify(d.a2 * d2)
    at = {a1: d.a1, a2: d.a2, LAM: d.lam}
    jacobian = sympy.Matrix([[sympy.diff(c, v) for v in (a1, a2, LAM)] for c in d.conditions])
    ev.check("sympy", f"the first-order conditions (linear in a1, a2, lambda) vanish at a1 = {d.a1}, "
             f"a2 = {d.a2}, lambda = {d.lam}, and their matrix has det {sympy.factor(jacobian.det())} "
             f"!= 0, so this is the only critical point; y* = a2 d2 = {y_star}",
             all(is_zero(c.subs(at)) for c in d.conditions)
             and bool(sympy.factor(jacobian.det()).subs(S.p, Q + 1).is_nonzero))
    quadratic = sympy.expand(objective.subs(a1, (b - a2 * d2) / d1))
    curvature = sympy.factor(sympy.diff(quadratic, a2, 2))
    ev.check("sympy", f"along a1 d1 + a2 d2 = B the objective is a quadratic in a2 with second "
             f"derivative {curvature} < 0 (strictly concave, so the critical point is the global "
             "maximiser on the whole line)",
             sympy.degree(quadratic, a2) == 2 and bool(curvature.subs(S.p, Q + 1).is_negative))
    ev.check("sympy", f"bordered Hessian [[0, g'], [g, Hess L]] at the critical point has det = {d.det}"
             ", which is > 0 for d1, d2 > 0, p > 1: the sign (-1)^n = +1 of a constrained local "
             "maximum with n = 2 variables and one constraint",
             bool(d.det.subs(S.p, Q + 1).is_positive))
    env = z3_env(p)
    v = {k: env[k] for k in ("d1", "d2", "B", "a1", "a2")}
    s1, s2 = z3.Real("s1"), z3.Real("s2")
    widths = [v["d1"] >= 1, v["d2"] >= 1] + ([env["p"] >= 2] if isinstance(p, sympy.Symbol) else [])
    # the critical point as polynomial equations (denominators cleared): nlsat stays fast
    widths += [_cleared(s1, d.a1, env), _cleared(s2, d.a2, env)]
    on_segment = [v["a1"] * v["d1"] + v["a2"] * v["d2"] == v["B"],
                  0 <= v["a1"], v["a1"] <= 1, 0 <= v["a2"], v["a2"] <= 1]
    inside = [0 <= s1, s1 <= 1, 0 <= s2, s2 <= 1]
    best = prove(widths + on_segment + inside,
                 value(v["a1"], v["a2"], v["d1"], v["d2"], env["p"])
                 <= value(s1, s2, v["d1"], v["d2"], env["p"]))
    ev.check("z3", "global optimality: for all real d1, d2 >= 1 (and p >= 2) and every feasible "
             "(a1, a2) on the segment, value <= value at the critical point whenever it lies in "
             "the box", best.proved, best.status + " " + best.model)
    low, (high_y, high_x) = d.b_low, d.b_high
    rising = [sympy.diff(d.a1, b), sympy.diff(d.a2, b)]
    ends = (is_zero(d.a2.subs(b, low)) and is_zero(d.a2.subs(b, high_y) - 1)
            and is_zero(d.a1.subs(b, high_x) - 1) and is_zero(d.a1.subs(b, d.b_redundant)))
    ev.check("sympy", f"both coordinates increase with B (d a1/dB = {rising[0]}, d a2/dB = {rising[1]}) "
             f"and reach their ends at B = {low} (a2 = 0), {high_y} (a2 = 1), {high_x} (a1 = 1), "
             f"{d.b_redundant} (a1 = 0, below {low}: implied); so the critical point is in [0, 1]^2 "
             f"iff {low} <= B <= min({high_y}, {high_x})",
             ends and all(bool(r.subs(S.p, Q + 1).is_positive) for r in rising) and _redundant_below(d, p))
    lo_z, hy_z, hx_z = (to_z3(e, env) for e in (low, high_y, high_x))
    region = prove(widths + [v["B"] >= 0],
                   z3.And(*inside) == z3.And(lo_z <= v["B"], v["B"] <= hy_z, v["B"] <= hx_z))
    ev.check("z3", "for all real d1, d2 >= 1, B >= 0 (and p >= 2): critical point in the box <=> "
             "B in the region above", region.proved, region.status + " " + region.model)
    _check_clamped(ev, d, env, widths, value)
    _check_integer_rule(ev, objective, p, d)
    _check_grid(ev, d, optimum_fn, grid, ps)
    _check_large(ev, d, optimum_fn, ps)
    return d


def _redundant_below(d: Derivation, p) -> bool:
    """z3: for all real d1, d2 >= 1 (and p >= 2), the a1 = 0 end lies at or below the a2 = 0 end."""
    env = z3_env(p)
    premises = [env["d1"] >= 1, env["d2"] >= 1] + ([env["p"] >= 2] if isinstance(p, sympy.Symbol) else [])
    return prove(premises, to_z3(d.b_redundant, env) <= to_z3(d.b_low, env)).proved


def _check_integer_rule(ev, objective, p, d):
    """The integer optimum is the floor or ceiling of the clamped point, for all values."""
    y, b = sympy.Symbol("y"), S.B
    along = objective.subs({S.a1: (b - y) / S.d1, S.a2: y / S.d2})
    y_star = sympy.simplify(d.a2 * S.d2)
    q2 = (S.p - 1) ** 2 if isinstance(p, sympy.Symbol) else (p - 1) ** 2
    ev.check("sympy", f"on x + y = B the bound is value(y*) - {q2} (y - y*)^2: every feasible y is "
             "ranked by its distance to y*", is_zero(along - along.subs(y, y_star) + q2 * (y - y_star) ** 2))
    lo, hi, yi = z3.Ints("lo hi y")
    star = z3.Real("ystar")
    yc = z3.If(star < lo, z3.ToReal(lo), z3.If(star > hi, z3.ToReal(hi), star))
    fl = z3.ToInt(yc)
    ce = z3.If(z3.ToReal(fl) == yc, fl, fl + 1)
    dist = lambda n: z3.If(z3.ToReal(n) >= star, z3.ToReal(n) - star, star - z3.ToReal(n))  # noqa: E731
    best = z3.If(dist(fl) <= dist(ce), dist(fl), dist(ce))
    rule = prove([lo <= yi, yi <= hi],
                 z3.And(dist(yi) >= best, z3.Implies(dist(yi) == best, z3.Or(yi == fl, yi == ce))))
    ev.check("z3", "for all integers lo <= y <= hi and every real y*: no integer in [lo, hi] is closer to "
             "y* than the nearer of floor and ceiling of y* clamped to [lo, hi], and only they can tie "
             "(so paper_optimum's rule is right for every size)", rule.proved, rule.status + " " + rule.model)


#: Seeded sample of large problems for ``_check_large``: widths up to 10**40.
LARGE_SAMPLE = 300


def _check_large(ev, d, optimum_fn, ps):
    """The package's optimum on large random problems against the derived formula."""
    import random

    rng, bad = random.Random(20220706), []
    for _ in range(LARGE_SAMPLE):
        d1, d2 = (rng.randint(1, 10 ** rng.randint(1, 40)) for _ in range(2))
        b, p = rng.randint(0, d1 + d2), rng.choice(ps)
        if not _large_ok(d, optimum_fn(d1, d2, b, p), d1, d2, b, p):
            bad.append((d1, d2, b, p))
    ev.check("exact", f"{LARGE_SAMPLE} seeded random problems with widths up to 10^40, p in {ps}: "
             "paper_optimum's continuous point is the derived y* clamped to the segment, its interior "
             "flag is the region, and its integer optima are exactly the floor/ceiling of that point "
             "nearest to y* (sampled, not all values)", not bad, f"{len(bad)} mismatches, first: {bad[:2]}")


def _large_ok(d, got, d1, d2, b, p) -> bool:
    from fractions import Fraction
    from math import floor

    env = {"d1": d1, "d2": d2, "B": b, "p": p}
    star = exact_eval(d.a2, env) * d2
    lo, hi = max(0, b - d1), min(d2, b)
    y = min(max(star, Fraction(lo)), Fraction(hi))
    candidates = sorted({floor(y), -floor(-y)})
    nearest = min(abs(c - star) for c in candidates)
    winners = sorted((b - c, c) for c in candidates if abs(c - star) == nearest)
    in_region = exact_eval(d.b_low, env) <= b <= min(exact_eval(h, env) for h in d.b_high)
    return got.retained == (b - y, y) and got.interior == in_region and got.integer_retained == winners


def _cleared(var, expr: sympy.Expr, env: dict):
    """The z3 equation var * denominator == numerator for a rational expression."""
    num, den = sympy.fraction(sympy.together(expr))
    return var * to_z3(sympy.expand(den), env) == to_z3(sympy.expand(num), env)


def _check_clamped(ev, d, env, widths, value):
    """z3: outside the region the clamped critical point is the maximiser on the segment."""
    v = env
    y_star = to_z3(sympy.simplify(d.a2 * S.d2), env)
    lo = z3.If(v["B"] - v["d1"] > 0, v["B"] - v["d1"], 0)
    hi = z3.If(v["d2"] < v["B"], v["d2"], v["B"])
    yc = z3.If(y_star < lo, lo, z3.If(y_star > hi, hi, y_star))
    f = lambda x, y: value(x / v["d1"], y / v["d2"], v["d1"], v["d2"], v["p"])  # noqa: E731
    clamp = prove(widths + [v["B"] >= 0, v["B"] <= v["d1"] + v["d2"], lo <= v["y"], v["y"] <= hi],
                  f(v["B"] - v["y"], v["y"]) <= f(v["B"] - yc, yc))
    ev.check("z3", "for every budget 0 <= B <= d1 + d2 (in or out of the region), y* clamped to "
             "[max(0, B - d1), min(d2, B)] maximises the bound over the feasible segment",
             clamp.proved, clamp.status + " " + clamp.model)


def _check_grid(ev, d, optimum_fn, grid, ps):
    """Exhaustive: closed form, region, clamped and integer optima of the package."""
    bad = []
    for d1, d2, p in product(range(1, grid + 1), range(1, grid + 1), ps):
        for b in range(d1 + d2 + 1):
            got = optimum_fn(d1, d2, b, p)
            env = {"d1": d1, "d2": d2, "B": b, "p": p}
            s1, s2 = exact_eval(d.a1, env), exact_eval(d.a2, env)
            in_region = exact_eval(d.b_low, env) <= b <= min(exact_eval(h, env) for h in d.b_high)
            y = min(max(s2 * d2, max(0, b - d1)), min(d2, b))
            winners, _ = exhaustive.paper_integer_optima(d1, d2, b, p)
            if (optimum.closed_form(d1, d2, b, p) != (s1, s2)
                    or optimum.closed_form_feasible(d1, d2, b, p) != in_region
                    or got.interior != in_region or got.retained != (b - y, y)
                    or got.integer_retained != winners):
                bad.append((d1, d2, b, p))
    ev.check("exhaustive", f"every d1, d2 <= {grid}, 0 <= B <= d1 + d2, p in {ps}: closed_form equals "
             "the sympy critical point, closed_form_feasible and paper_optimum.interior equal the "
             "region, paper_optimum.retained is the clamped point and its integer optima (all ties) "
             "equal enumeration", not bad, f"{len(bad)} mismatches, first: {bad[:3]}")
