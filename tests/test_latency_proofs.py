"""Claims c20-c21 fail when fed a wrong optimum, premise or formula."""

from __future__ import annotations

from fractions import Fraction

import pytest

from capacity import latency
from capacity.optimum import sharp_optimum
from proofs.claims import c20_latency_optimum as c20
from proofs.claims import c21_emptying_threshold as c21
from proofs.framework import REGISTRY


def ignores_layer_cost(widths, budget, cost, p=2):
    """A wrong optimum: treats the latency budget as a ReLU budget, every layer active."""
    right = latency.latency_sharp_optimum(widths, budget, cost, p)
    if cost.per_relu == 0:
        return right
    relus = min(sum(widths), int((Fraction(budget) - cost.linear) / cost.per_relu))
    relu_opt = sharp_optimum(widths, relus, p)
    return right._replace(integer_retained=relu_opt.integer_retained, integer_ties=relu_opt.integer_ties,
                          integer_value=relu_opt.integer_value)


def first_active_count_only(widths, budget, cost, p=2):
    """A wrong optimum: forgets ties between different numbers of active layers."""
    right = latency.latency_sharp_optimum(widths, budget, cost, p)
    k = right.plans[0].active
    kept = [a for a in right.integer_retained if sum(1 for x in a if x) == k]
    return right._replace(integer_retained=kept, integer_ties=len(kept))


def narrowest_layers(widths, budget, cost, p=2):
    """A wrong optimum: the optimal counts placed on the narrowest layers (capped by their widths)."""
    right = latency.latency_sharp_optimum(widths, budget, cost, p)
    counts = sorted((x for x in right.plans[0].retained if x), reverse=True)
    alloc = [0] * len(widths)
    for i, x in zip(sorted(range(len(widths)), key=lambda i: widths[i]), counts):
        alloc[i] = min(x, widths[i])
    return right._replace(integer_retained=[tuple(alloc)], integer_ties=1)


def paper_without_box(d1, d2, budget, cost, p=2):
    """A wrong Corollary 1 optimum: on {1, 2} the split rounds Theorem 2's point (no clamp)."""
    right = latency.latency_paper_optimum(d1, d2, budget, cost, p)
    if right.plans[0].active != 2:
        return right
    b = sum(right.plans[0].retained)
    y = round(Fraction((p - 1) * b + 1 - d2, 2 * (p - 1)))
    return right._replace(integer_retained=[(b - y, y)])


def wrong_radicand(regime, tau, wide, narrow, s):
    """The open regime's threshold with sqrt(2 s tau - 1) instead of sqrt(2 s tau + 1)."""
    rational, surd, radicand = latency.threshold_parts(regime, tau, wide, narrow, s)
    return (rational, surd, radicand - 2) if regime == "both open" else (rational, surd, radicand)


def wrong_narrow_full(regime, tau, wide, narrow, s):
    """The narrow-full regime's threshold with 1 + s d in the denominator instead of 1 + 2 s d."""
    if regime == "narrow layer full":
        return latency._over(s * narrow * (tau - narrow), 1 + s * narrow), 0, 0
    return latency.threshold_parts(regime, tau, wide, narrow, s)


def shifted_threshold(d1, d2, tau, p=2):
    """A wrong threshold: r* + 1/100."""
    th = latency.emptying_threshold(d1, d2, tau, p)
    return th._replace(rational=th.rational + Fraction(1, 100))


def relaxation_ignoring_rho(widths, budget, cost, p=2):
    """A wrong relaxation: decides with rho = 0 (so two layers always look better)."""
    return latency.latency_sharp_optimum(widths, budget, latency.cost_model(cost.per_relu, 0, cost.linear), p)


WRONG_INPUTS = [
    (c20.check, {"optimum_fn": ignores_layer_cost}),
    (c20.check, {"optimum_fn": first_active_count_only}),
    (c20.check, {"optimum_fn": narrowest_layers}),
    (c20.check, {"paper_fn": paper_without_box}),
    (c21.check, {"parts": wrong_radicand}),
    (c21.check, {"parts": wrong_narrow_full}),
    (c21.check, {"threshold_fn": shifted_threshold}),
    (c21.check, {"optimum_fn": relaxation_ignoring_rho}),
]


@pytest.mark.parametrize("check, kwargs", WRONG_INPUTS)
def test_wrong_input_gets_failing_verdict(check, kwargs):
    """The same checking code rejects a wrong optimum or formula."""
    assert check(**kwargs).verdict == "fail"


def test_claims_registered_with_pages():
    """c20 and c21 are registered, in order after the earlier claims, with their pages."""
    assert {"c20", "c21"} <= set(REGISTRY)
    assert REGISTRY["c20"].page == "c20_latency_optimum.md" and REGISTRY["c21"].page == "c21_emptying_threshold.md"
