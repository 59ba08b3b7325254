"""c21: two layers, the per-layer cost rho / beta at which emptying the narrower layer pays."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import sympy
import z3

from capacity import latency
from proofs.claims._common import is_zero
from proofs.framework import Evidence, claim
from proofs.z3tools import prove

#: Grid of the exhaustive checks: widths D >= d up to WIDTH, p in PS, tau = k / 2.
WIDTH = 5
PS = (2, 3)
#: Distance of the rational probes below and above an irrational threshold.
PROBE = Fraction(1, 10**6)


def _mn(a, b):
    return z3.If(a <= b, a, b) if isinstance(a, z3.ExprRef) or isinstance(b, z3.ExprRef) else min(a, b)


def one_minus_two(tau, r, wide, narrow, s):
    """Sharp pieces of the best one-layer plan minus those of the best two-layer plan (the
    specification: one layer keeps min(tau - r, D), two layers water-fill min(tau - 2r, D + d))."""
    one = 1 + s * _mn(tau - r, wide)
    both = _mn(tau - 2 * r, wide + narrow)
    y = _mn(both / 2, narrow)
    return one - (1 + s * (both - y)) * (1 + s * y)


#: Per regime: (one-layer plan full?, narrow layer full?) as in latency.REGIMES.
REGIME_FLAGS = {name: (i // 2 == 1, i % 2 == 1) for i, name in enumerate(latency.REGIMES)}


@claim("c21", "Two layers under a latency budget: emptying the narrower layer is optimal iff "
       "min(v, D) - u >= (p-1) x y (the ReLUs one layer gains pay for the product term), i.e. iff "
       "rho/beta >= r*, with r* in closed form in four regimes (both open: "
       "r* = (s tau + 1 - sqrt(2 s tau + 1)) / (2 s)); with integer counts it is not monotone in rho",
       paper="new", page="c21_emptying_threshold.md")
def check(threshold_fn=latency.emptying_threshold, parts=latency.threshold_parts,
          optimum_fn=latency.latency_sharp_optimum) -> Evidence:
    """sympy for the regime equations, z3 for monotonicity and each regime, enumeration."""
    ev = Evidence()
    x, y, big_v, s = sympy.symbols("x y V s", positive=True)
    ev.check("sympy", "(1 + s V) - (1 + s x)(1 + s y) == s (V - (x + y) - s x y): with V = min(v, D) and "
             "x + y = u, emptying is optimal iff min(v, D) - u >= s x y",
             is_zero((1 + s * big_v) - (1 + s * x) * (1 + s * y) - s * (big_v - (x + y) - s * x * y)))
    ev.check("sympy", "each regime's closed form solves its equation: substituting r* into the "
             "regime's difference of sharp pieces gives 0", all(_solves(parts).values()), _solves(parts))
    mono = _monotone()
    ev.check("z3", "for all reals D >= d >= 1, s >= 1, 0 <= r <= r' with tau - 2r' > 0: difference(r) >= 0 "
             "implies difference(r') >= 0 (once emptying is optimal it stays so as rho grows)",
             mono.proved, mono.status + " " + mono.model)
    for regime, proof in _regimes(parts).items():
        ev.check("z3", f"regime '{regime}': for all reals D >= d >= 1, s >= 1, r >= 0, tau - 2r > 0 in the "
                 "regime: difference >= 0 <=> r >= r* (closed form)", proof.proved, proof.status + " " + proof.model)
    bad, seen = _against_relaxation(threshold_fn, optimum_fn)
    ev.check("exhaustive", f"widths D >= d <= {WIDTH}, p in {PS}, tau = 1/2, 1, ..., D + d + 2: emptying_threshold's "
             f"r* separates the relaxation's decisions (probes r* -/+ {PROBE}, and r* itself when rational); "
             f"two layers <= 4 checked with latency_sharp_optimum's relaxation, the rest with the "
             f"difference itself; regimes met: {seen}", not bad and len(seen) == 4,
             f"{len(bad)} mismatches, first: {bad[:3]}")
    monotone, gaps = _integer_costs(threshold_fn, optimum_fn)
    ev.check("exhaustive", "integer counts, integer costs in ReLU units (beta = 1, rho and T - linear "
             "integers; widths D >= d <= 4, p = 2, T - linear <= D + d + 4): emptying is optimal for every "
             "rho from the first one on; that first rho lies in "
             f"[r* - {gaps[0]}, r* + {gaps[1]}]", monotone and gaps[1] < 1, f"gaps {gaps}")
    example = _fractional_example(optimum_fn)
    ev.check("exact", "integer counts, fractional costs: not monotone. Widths (1, 3), p = 2, beta = 1, "
             "T - linear = 7/2: the optimum empties a layer at rho = 1/2 ((3, 0) ties (1, 1)) but "
             "not at rho = 3/4 ((1, 1) beats (2, 0))", example)
    ev.note("Under a latency budget the ReLU count is the wrong currency: with per-layer cost "
            "rho = 4950 beta, the worked example's widths (50000, 5000) and T = 10000 beta keep one "
            "layer (5050 ReLUs, sharp capacity 5052) where two layers can afford only 100 ReLUs (2602).")
    return ev


def _regime_difference(regime, tau, r, wide, narrow, s):
    """The difference of sharp pieces inside a regime, without min (a polynomial in r)."""
    one_full, narrow_full = REGIME_FLAGS[regime]
    u = tau - 2 * r
    one = 1 + s * (wide if one_full else tau - r)
    y = narrow if narrow_full else u / 2
    return one - (1 + s * (u - y)) * (1 + s * y)


def _solves(parts) -> dict:
    tau, wide, narrow, s = sympy.symbols("tau D d s", positive=True)
    out = {}
    for regime in latency.REGIMES:
        rational, surd, radicand = parts(regime, tau, wide, narrow, s)
        r_star = rational + surd * sympy.sqrt(radicand)
        out[regime] = is_zero(sympy.expand(_regime_difference(regime, tau, r_star, wide, narrow, s)))
    return out


def _premises():
    tau, r, wide, narrow, s = z3.Reals("tau r D d s")
    return (tau, r, wide, narrow, s), [wide >= narrow, narrow >= 1, s >= 1, r >= 0, tau - 2 * r > 0]


def _monotone():
    tau, r, r2, wide, narrow, s = z3.Reals("tau r r2 D d s")
    # tau - 2r > 0 follows from tau - 2r' > 0; stating it as well sends z3 down a slow path
    premises = [wide >= narrow, narrow >= 1, s >= 1, r >= 0, tau >= 0, r2 >= r, tau - 2 * r2 > 0]
    return prove(premises + [one_minus_two(tau, r, wide, narrow, s) >= 0],
                 one_minus_two(tau, r2, wide, narrow, s) >= 0)


def _regimes(parts) -> dict:
    (tau, r, wide, narrow, s), premises = _premises()
    root = z3.Real("w")
    out = {}
    for regime, (one_full, narrow_full) in REGIME_FLAGS.items():
        rational, surd, radicand = parts(regime, tau, wide, narrow, s)
        inside = [(tau - r >= wide) if one_full else (tau - r <= wide),
                  (tau - 2 * r >= 2 * narrow) if narrow_full else (tau - 2 * r <= 2 * narrow)]
        out[regime] = prove(premises + inside + [root >= 0, root * root == radicand],
                            (one_minus_two(tau, r, wide, narrow, s) >= 0) == (r >= rational + surd * root))
    return out


def _probes(th):
    """(r, expected decision) pairs around the threshold."""
    if th.surd == 0 or th.radicand == 0:
        return [(th.rational - PROBE, False), (th.rational, True), (th.rational + PROBE, True)]
    near = Fraction(th.approx()).limit_denominator(10**9)
    return [(near - PROBE, False), (near + PROBE, True)]


def _against_relaxation(threshold_fn, optimum_fn):
    bad, seen = [], set()
    for wide, narrow, p in product(range(1, WIDTH + 1), range(1, WIDTH + 1), PS):
        if narrow > wide or len(bad) >= 3:
            continue
        for tau in (Fraction(k, 2) for k in range(1, 2 * (wide + narrow + 2) + 1)):
            th = threshold_fn(wide, narrow, tau, p)
            seen.add(th.regime)
            for r, expected in _probes(th):
                if not 0 <= r < tau / 2:
                    continue
                if wide <= 4:
                    opt = optimum_fn([wide, narrow], tau, latency.cost_model(1, r), p)
                    empties = min(c.active for c in opt.continuous) <= 1
                else:
                    empties = one_minus_two(tau, r, wide, narrow, p - 1) >= 0
                if empties != expected:
                    bad.append((wide, narrow, p, tau, r, th.regime))
    return bad, sorted(seen)


def _integer_costs(threshold_fn, optimum_fn):
    monotone, gaps = True, [Fraction(0), Fraction(0)]
    for wide, narrow in product(range(1, 5), repeat=2):
        if narrow > wide:
            continue
        for tau in range(1, wide + narrow + 5):
            decisions = [min(plan.active for plan in optimum_fn([wide, narrow], tau, latency.cost_model(1, r)).plans)
                         <= 1 for r in range(tau // 2 + 2)]
            if True not in decisions:  # two layers even at rho = tau / 2 + 1: not the claimed shape
                return False, [float("inf"), float("inf")]
            first = decisions.index(True)
            monotone &= all(decisions[first:])
            r_star = Fraction(threshold_fn(wide, narrow, tau).approx()).limit_denominator(1000)
            gaps = [max(gaps[0], r_star - first), max(gaps[1], first - r_star)]
    return monotone, [round(float(g), 3) for g in gaps]


def _fractional_example(optimum_fn) -> bool:
    def active(rho):
        return sorted({sum(1 for x in a if x) for a in
                       optimum_fn([1, 3], Fraction(7, 2), latency.cost_model(1, rho)).integer_retained})
    return active(Fraction(1, 2)) == [1, 2] and active(Fraction(3, 4)) == [2]
