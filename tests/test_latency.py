"""capacity.latency against brute force over every allocation that fits the latency budget."""

import doctest
from fractions import Fraction
from math import comb, prod

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import capacity.latency
from capacity.bounds import sharp_capacity
from capacity.latency import (
    MAX_LISTED_TIES,
    brute_force_latency_optima,
    cost_model,
    emptying_threshold,
    latency,
    latency_paper_optimum,
    latency_plans,
    latency_sharp_optimum,
    parse_cost_profile,
    relu_budget_comparison,
)
from capacity.optimum import paper_optimum, sharp_optimum

costs = st.sampled_from([0, 1, 2, 3, Fraction(1, 2), Fraction(3, 2), Fraction(1, 3)])


@st.composite
def problems(draw, min_layers=1, max_layers=3):
    """(widths, T, cost, p) with T >= the linear cost; beta = rho = 0 is never drawn."""
    layers = draw(st.integers(min_layers, max_layers))
    widths = draw(st.lists(st.integers(1, {1: 9, 2: 6, 3: 4}[layers]), min_size=layers, max_size=layers))
    beta = draw(costs)
    rho = draw(st.sampled_from([1, 2, 5, Fraction(7, 2)]) if beta == 0 else costs)
    linear = draw(st.sampled_from([0, 0, Fraction(1, 2), 2]))
    spare = Fraction(draw(st.integers(0, 24)), draw(st.sampled_from([1, 2, 3])))
    return widths, linear + spare, cost_model(beta, rho, linear), draw(st.sampled_from([2, 2, 3]))


def _active(allocs, layers):
    some = tuple(i for i in range(layers) if any(a[i] for a in allocs))
    return some, tuple(i for i in range(layers) if all(a[i] for a in allocs))


@given(problems())
@example(([3, 2], 6, cost_model(1, 2), 2))  # one layer (3, 0) ties two layers (1, 1)
@example(([1, 3], Fraction(7, 2), cost_model(1, Fraction(1, 2)), 2))  # ties across k, fractional rho
@example(([4, 4, 4], 9, cost_model(1, 1), 2))  # equal widths: ties over which layers stay
@example(([5, 2], Fraction(1, 2), cost_model(1, 1, Fraction(1, 2)), 2))  # budget = linear cost: nothing
@example(([3, 1, 2], 7, cost_model(0, 3), 3))  # beta = 0: active layers keep all their ReLUs
def test_sharp_optimum_matches_brute_force(problem):
    """Every tie, their count, the value and the active layers equal enumeration."""
    widths, budget, cost, p = problem
    opt = latency_sharp_optimum(widths, budget, cost, p)
    winners, best = brute_force_latency_optima(widths, budget, cost, p)
    assert opt.integer_retained == winners
    assert opt.integer_ties == len(winners) and opt.integer_value == best
    assert (opt.active_layers, opt.always_active) == _active(winners, len(widths))
    for plan in opt.plans:
        assert plan.retained in winners and plan.value == best and plan.latency == latency(plan.retained, cost)
        assert plan.latency <= budget and sum(plan.retained) == min(plan.relu_budget, sum(plan.retained))
    assert sorted({sum(1 for x in a if x) for a in winners}) == [plan.active for plan in opt.plans]


@given(problems(min_layers=2, max_layers=2))
@example(([50, 5], 40, cost_model(1, 0), 2))  # rho = 0: the ReLU-budget optimum
@example(([3, 3], 4, cost_model(1, 1), 3))
@example(([7, 4], 6, cost_model(1, 0), 2))  # y* = 3/2: (5, 1) ties (4, 2)
@example(([6, 6], 3, cost_model(1, 0), 2))  # y* < 1: both layers active must keep y = 1
def test_paper_optimum_matches_brute_force(problem):
    """Corollary 1 under a latency budget: every tie and the value equal enumeration."""
    widths, budget, cost, p = problem
    opt = latency_paper_optimum(*widths, budget, cost, p)
    winners, best = brute_force_latency_optima(widths, budget, cost, p, objective="paper")
    assert opt.integer_retained == winners and opt.integer_value == best
    assert (opt.active_layers, opt.always_active) == _active(winners, 2)


@given(problems())
def test_relaxation_bounds_every_allocation(problem):
    """The relaxation's value bounds the integer optimum and is attained by a fitting allocation."""
    widths, budget, cost, p = problem
    opt = latency_sharp_optimum(widths, budget, cost, p)
    for relaxed in opt.continuous:
        assert relaxed.value >= opt.integer_value
        assert relaxed.value == sharp_capacity(relaxed.retained, p) and latency(relaxed.retained, cost) <= budget
        assert all(0 <= x <= d for x, d in zip(relaxed.retained, widths))
        assert sum(1 for x in relaxed.retained if x) == relaxed.active
    if len(widths) == 2:
        paper = latency_paper_optimum(*widths, budget, cost, p)
        assert all(c.value >= paper.integer_value for c in paper.continuous)


@given(problems())
def test_zero_layer_cost_is_the_relu_budget(problem):
    """With rho = 0 the latency budget is a ReLU budget floor((T - linear) / beta)."""
    widths, budget, cost, p = problem
    if cost.per_relu == 0:
        return
    cost = cost_model(cost.per_relu, 0, cost.linear)
    relus = min(sum(widths), int((budget - cost.linear) / cost.per_relu))
    assert latency_sharp_optimum(widths, budget, cost, p).integer_retained == \
        sharp_optimum(widths, relus, p).integer_retained


def test_plans_are_the_best_per_number_of_active_layers():
    """The trade-off table: k widest layers water-filled, with what they can afford."""
    plans = latency_plans([50000, 5000], 10000, cost_model(1, 4950))
    assert [(p.active, p.relu_budget, p.retained, p.value) for p in plans] == [
        (0, 0, (0, 0), 2), (1, 5050, (5050, 0), 5052), (2, 100, (50, 50), 51 * 51 + 1)]
    paper = latency_plans([50000, 5000], 10000, cost_model(1, 4950), objective="paper")
    assert [p.layers for p in paper] == [(), (0,), (1,), (0, 1)]
    assert paper[1].value == 5050 * 5000 + 2  # Corollary 1 with y = 0: (p-1) x d2 + 2


def test_many_ties_are_counted_exactly_and_listed_up_to_the_limit():
    """Thirty equal layers: C(30, k) choices of active layers times C(k, r) for the extra ReLUs."""
    widths, cost, budget = [100] * 30, cost_model(1, 10), 200
    opt = latency_sharp_optimum(widths, budget, cost)

    def value(k):  # k equal uncapped layers with b ReLUs: r of them hold q + 1
        q, r = divmod(budget - 10 * k, k)
        return (q + 2) ** r * (q + 1) ** (k - r) + 1

    k = max(range(1, 16), key=value)
    q, r = divmod(budget - 10 * k, k)
    assert [plan.active for plan in opt.plans] == [k] and opt.integer_value == value(k)
    assert opt.integer_ties == comb(30, k) * comb(k, r) > MAX_LISTED_TIES
    assert len(opt.integer_retained) == MAX_LISTED_TIES == len(set(opt.integer_retained))
    assert all(sharp_capacity(a) == opt.integer_value and latency(a, cost) <= budget for a in opt.integer_retained)


def test_wide_network_exact_against_every_plan():
    """Ninety layers of real widths: the float ranking picks the exact best of all k."""
    widths = [(i * 7919) % 60000 + 512 for i in range(90)]
    cost = cost_model(Fraction(1, 1000), 20)  # a layer costs as much as 20,000 ReLUs
    budget = Fraction(sum(widths), 3000) + 60
    opt = latency_sharp_optimum(widths, budget, cost)
    best = max(plan.value for plan in latency_plans(widths, budget, cost))
    assert opt.integer_value == best and all(latency(a, cost) <= budget for a in opt.integer_retained)
    assert 0 < opt.plans[0].active < len(widths)  # some layers are emptied
    assert opt.active_layers == tuple(i for i, d in enumerate(widths) if d >= min(x for x in opt.plans[0].retained if x))


@given(problems(max_layers=2))
def test_proxy_is_the_largest_relu_budget_that_fits(problem):
    """relu_budget_comparison's binary search equals a scan over every ReLU budget."""
    widths, budget, cost, p = problem
    objectives = ["sharp"] + (["paper"] if len(widths) == 2 else [])
    for objective in objectives:
        def solve(b):
            return sharp_optimum(widths, b, p) if objective == "sharp" else paper_optimum(*widths, b, p)
        fitting = [b for b in range(sum(widths) + 1)
                   if min(latency(a, cost) for a in solve(b).integer_retained) <= budget]
        same, proxy = relu_budget_comparison(widths, budget, cost, p, objective)
        assert proxy.relu_budget == max(fitting) and latency(proxy.retained, cost) <= budget
        assert proxy.value == solve(proxy.relu_budget).integer_value
        for record in same:
            assert record.fits == [c <= budget for c in record.latency]


def test_same_total_differs_when_a_layer_is_emptied():
    """Worked example widths, rho = 4950: the ReLU-budget optimum for 5050 ReLUs costs 14,950."""
    same, proxy = relu_budget_comparison([50000, 5000], 10000, cost_model(1, 4950))
    assert [(s.total, s.retained, s.latency, s.fits, s.same) for s in same] == [
        (5050, [(2525, 2525)], [5050 + 2 * 4950], [False], False)]
    assert (proxy.relu_budget, proxy.retained, proxy.value) == (100, (50, 50), 2602)
    same, _ = relu_budget_comparison([50000, 5000], 10000, cost_model(1, 10))
    assert same[0].same and same[0].fits == [True]


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 30), st.integers(0, 60), st.sampled_from([2, 3]))
@example(50, 10, 20, 0, 2)
def test_emptying_threshold_separates_the_relaxation(d1, d2, half_tau, r_quarters, p):
    """reached(r) <=> the relaxation keeps at most one layer active."""
    tau, r = Fraction(half_tau, 2), Fraction(r_quarters, 4)
    th = emptying_threshold(d1, d2, tau, p)
    opt = latency_sharp_optimum([d1, d2], tau, cost_model(1, r), p)
    assert th.reached(r) == (min(c.active for c in opt.continuous) <= 1)


def test_paper_worked_example_with_free_layers():
    """rho = 0 gives back the paper's integer optimum for B = 10000, both ties."""
    opt = latency_paper_optimum(50000, 5000, 10000, cost_model(1, 0))
    assert opt.integer_retained == [(7499, 2501), (7500, 2500)] == paper_optimum(50000, 5000, 10000).integer_retained


def test_reached_is_exact_at_the_threshold():
    """reached(r*) holds at r* itself, also when a square root is rational and not folded."""
    open_regime = capacity.latency.EmptyingThreshold(Fraction(61, 2), Fraction(-1, 2), 121, "both open")
    assert open_regime.reached(25) and not open_regime.reached(Fraction(2499, 100))
    positive = capacity.latency.EmptyingThreshold(0, 1, 4, "test")
    assert positive.reached(2) and not positive.reached(Fraction(199, 100))


def test_emptying_threshold_closed_forms():
    """The open regime for p = 2: (tau + 1 - sqrt(2 tau + 1)) / 2; perfect squares fold."""
    th = emptying_threshold(50000, 5000, 10000)
    assert (th.rational, th.surd, th.radicand, th.regime) == (Fraction(10001, 2), Fraction(-1, 2), 20001, "both open")
    assert th.approx() == pytest.approx((10001 - 20001**0.5) / 2, rel=1e-12)
    assert not th.reached(4929) and th.reached(4930)
    assert emptying_threshold(100, 10, 60)[:3] == (25, 0, 0)  # 2 tau + 1 = 121
    assert emptying_threshold(10, 100, 60) == emptying_threshold(100, 10, 60)
    narrow = emptying_threshold(1000, 2, 500)  # s d (tau - d) / (1 + 2 s d)
    assert narrow.regime == "narrow layer full" and narrow.rational == Fraction(2 * 498, 5) and narrow.surd == 0
    assert emptying_threshold(3, 2, 0).regime == "nothing affordable"


def test_cost_profile_format():
    """JSON numbers are read exactly from their decimal text; strings p/q work; extras refused."""
    cost = parse_cost_profile('{"per_relu": 2.1e-4, "per_layer": 0.09, "linear": "1/3", "unit": "s", "meta": {}}')
    assert cost == (Fraction(21, 100000), Fraction(9, 100), Fraction(1, 3))
    assert parse_cost_profile('{"per_relu": 1, "per_layer": 0}').linear == 0


@pytest.mark.parametrize("text, fragment", [
    ('{"per_relu": 1}', "missing per_layer"),
    ('{"per_relu": 1, "per_layer": 2, "liner": 3}', "unknown key(s) liner"),
    ('{"per_relu": -1, "per_layer": 2}', "at least 0"),
    ('{"per_relu": NaN, "per_layer": 2}', "NaN is not a cost"),
    ('{"per_relu": 0, "per_layer": 0}', "both 0"),
    ('{"per_relu": true, "per_layer": 1}', "bool"),
    ('[1, 2]', "JSON object"),
    ('{"per_relu": 1,', "not valid JSON"),
])
def test_bad_cost_profiles(text, fragment):
    with pytest.raises(ValueError, match=None) as info:
        parse_cost_profile(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize("call, fragment", [
    (lambda: cost_model(1.5, 1), "float"),
    (lambda: cost_model("-0.1", 1), "at least 0"),
    (lambda: cost_model("x", 1), "a number such as"),
    (lambda: latency_sharp_optimum([3, 2], 1, cost_model(1, 1, 2)), "below the cost of the linear layers"),
    (lambda: latency_sharp_optimum([3, 2], -1, cost_model(1, 1)), "at least 0"),
    (lambda: latency_sharp_optimum([3, 0], 5, cost_model(1, 1)), "at least 1"),
    (lambda: latency_sharp_optimum([3, 2], 5, capacity.latency.CostModel(0, 0, 0)), "both 0"),
    (lambda: latency_sharp_optimum([3, 2], 5, (1, 1, 0)), "CostModel"),
    (lambda: relu_budget_comparison([3, 2, 1], 5, cost_model(1, 1), objective="paper"), "objective"),
])
def test_bad_input_raises_value_error(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


def test_docstring_examples():
    failures, tried = doctest.testmod(capacity.latency)
    assert tried > 0 and failures == 0


def test_brute_force_is_exhaustive():
    """The independent check itself: a hand-computed case with ties across active counts."""
    winners, best = brute_force_latency_optima([3, 2], 6, cost_model(1, 2))
    assert (winners, best) == ([(1, 1), (3, 0)], 5)
    assert best == prod([2, 2]) + 1 == 3 + 1 + 1
