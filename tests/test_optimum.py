"""capacity.optimum against brute force over every integer allocation."""

from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from capacity.bounds import corollary1_counts, sharp_capacity
from capacity.exhaustive import allocations, paper_integer_optima, sharp_integer_optima
from capacity.optimum import (
    closed_form,
    closed_form_feasible,
    paper_optimum,
    sharp_optimum,
    water_level,
)


@st.composite
def paper_problems(draw, max_width=24):
    """(d1, d2, B, p) with 0 <= B <= d1 + d2, built directly (no filtering)."""
    d1 = draw(st.integers(1, max_width))
    d2 = draw(st.integers(1, max_width))
    budget = draw(st.integers(0, d1 + d2))
    return d1, d2, budget, draw(st.integers(2, 5))


layer_widths = st.lists(st.integers(1, 7), min_size=1, max_size=4)
sharp_problems = layer_widths.flatmap(
    lambda ws: st.tuples(st.just(ws), st.integers(0, sum(ws)), st.integers(2, 4))
)


def test_worked_example_closed_form():
    """The paper's numbers: a1 = 14999/100000, a2 = 5001/10000."""
    assert closed_form(50000, 5000, 10000) == (Fraction(14999, 100000), Fraction(5001, 10000))
    opt = paper_optimum(50000, 5000, 10000)
    assert opt.interior
    assert opt.retained == (Fraction(14999, 2), Fraction(5001, 2))
    assert opt.integer_retained == [(7499, 2501), (7500, 2500)]


@given(paper_problems())
@example((100, 10, 50, 2))  # budget above 3 d2: a2 = 1 binds
@example((10, 10, 3, 2))  # budget below d2: a2 = 0 binds
@example((3, 10, 13, 2))  # full budget
@example((5, 1, 0, 2))  # empty budget
@example((2, 10, 11, 2))  # a1 = 1 binds
@example((10, 7, 6, 3))  # p = 3, floor and ceiling tie
def test_paper_integer_optimum_matches_brute_force(problem):
    """Every integer tie, and the value, equal exhaustive enumeration."""
    d1, d2, budget, p = problem
    opt = paper_optimum(d1, d2, budget, p)
    winners, best = paper_integer_optima(d1, d2, budget, p)
    assert opt.integer_retained == winners
    assert opt.integer_value == best


@given(paper_problems())
def test_paper_continuous_optimum_is_feasible_and_dominates(problem):
    """The continuous optimum lies on the budget line in the box and beats every integer point."""
    d1, d2, budget, p = problem
    opt = paper_optimum(d1, d2, budget, p)
    x, y = opt.retained
    assert x + y == budget and 0 <= x <= d1 and 0 <= y <= d2
    assert opt.alpha == (Fraction(x) / d1, Fraction(y) / d2)
    assert opt.value == corollary1_counts(x, y, d1, d2, p)
    assert all(opt.value >= corollary1_counts(a, b, d1, d2, p) for a, b in allocations([d1, d2], budget))


@given(paper_problems())
def test_interior_flag_is_the_box_test(problem):
    """interior is exactly 'the closed form lies in [0, 1]^2', and then it is the optimum."""
    d1, d2, budget, p = problem
    a1, a2 = closed_form(d1, d2, budget, p)
    opt = paper_optimum(d1, d2, budget, p)
    assert opt.interior == (0 <= a1 <= 1 and 0 <= a2 <= 1) == closed_form_feasible(d1, d2, budget, p)
    if opt.interior:
        assert opt.alpha == (a1, a2)
    else:
        assert opt.active != "interior"


@pytest.mark.parametrize("d1, d2, budget", [(100, 10, 50), (50, 40, 5), (10, 10, 19)])
def test_infeasible_closed_form_is_beaten(d1, d2, budget):
    """Outside the box the clamped optimum differs from the closed form."""
    assert not closed_form_feasible(d1, d2, budget)
    assert paper_optimum(d1, d2, budget).alpha != closed_form(d1, d2, budget)


@given(sharp_problems)
@example(([3, 3], 3, 2))  # two tied splits
@example(([7, 1, 1, 7], 9, 2))  # capped layers
@example(([3, 5, 5], 10, 2))  # a layer whose width equals floor(t) gets no extra ReLU
def test_sharp_integer_optimum_matches_brute_force(problem):
    """Ties counted and listed, and the value, equal exhaustive enumeration (1-4 layers)."""
    widths, budget, p = problem
    opt = sharp_optimum(widths, budget, p)
    winners, best = sharp_integer_optima(widths, budget, p)
    assert opt.integer_retained == winners
    assert opt.integer_ties == len(winners)
    assert opt.integer_value == best


@given(sharp_problems)
def test_water_filling_is_continuous_optimum(problem):
    """x_l = min(d_l, t) sums to B and is at least every integer allocation's value."""
    widths, budget, p = problem
    opt = sharp_optimum(widths, budget, p)
    t = water_level(widths, budget)
    assert list(opt.retained) == [min(Fraction(d), t) for d in widths]
    assert sum(opt.retained) == budget
    assert opt.value >= opt.integer_value
    assert opt.value == sharp_capacity(opt.retained, p)


def test_sharp_ties_are_counted_beyond_the_listing_limit():
    """20 layers of width 2 with budget 10: C(20, 10) = 184756 ties, at most 1000 listed."""
    opt = sharp_optimum([2] * 20, 10)
    assert opt.integer_ties == 184756
    assert len(opt.integer_retained) == 1000
    assert all(sum(a) == 10 and max(a) == 1 for a in opt.integer_retained)


def test_worked_example_sharp_allocation_differs_from_paper():
    """Water-filling keeps 5000 + 5000, not the paper's 7500 + 2500."""
    opt = sharp_optimum([50000, 5000], 10000)
    assert opt.integer_retained == [(5000, 5000)]
    assert opt.integer_value == 5001 * 5001 + 1


def test_huge_problem_is_exact():
    """Widths of 10**50 give exact answers quickly."""
    big = 10**50
    opt = paper_optimum(big, big // 10, big // 10 + 7)
    assert opt.interior
    assert opt.retained[0] + opt.retained[1] == big // 10 + 7
    assert isinstance(opt.integer_value, int)
    assert sharp_optimum([big, big], big + 1).integer_ties == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (([0, 5], 3), "width of layer 1 must be at least 1"),
        (([5, 5], -1), "budget must be at least 0"),
        (([5, 5], 11), "exceeds the 10 neurons"),
        (([5, 5], 3, 1), "p must be at least 2"),
        (([5.0, 5], 3), "must be an int"),
        (([Fraction(1, 2), 5], 3), "must be an integer"),
    ],
)
def test_bad_problems_are_rejected(args, message):
    """Invalid widths, budgets and p raise ValueError naming the value."""
    with pytest.raises(ValueError, match=message):
        sharp_optimum(*args)


@pytest.mark.parametrize("d1, d2, budget, p, active", [
    (50000, 5000, 10000, 2, "interior"),
    (10, 10, 3, 2, "a2 = 0 (layer 2 keeps no ReLU)"),        # B < d2 - 1, B <= d1
    (10, 10, 8, 2, "a2 = 0 (layer 2 keeps no ReLU)"),        # one below the region's start
    (3, 10, 3, 2, "a2 = 0 (layer 2 keeps no ReLU)"),         # B = d1: both faces, a2 = 0 named
    (3, 10, 4, 2, "a1 = 1 (layer 1 keeps every ReLU)"),      # B = d1 + 1
    (10, 10, 9, 2, "interior"),                              # B = d2 - 1: y* = 0 exactly
    (2, 10, 11, 2, "a1 = 1 (layer 1 keeps every ReLU)"),     # B > 2 d1 - (d2 - 1), B > d1
    (2, 10, 12, 2, "a1 = 1 (layer 1 keeps every ReLU)"),     # full budget, critical point below
    (100, 10, 50, 2, "a2 = 1 (layer 2 keeps every ReLU)"),   # B > 3 d2 - 1
    (100, 10, 29, 2, "interior"),                            # B = 3 d2 - 1: y* = d2 exactly
    (100, 10, 30, 2, "a2 = 1 (layer 2 keeps every ReLU)"),
    (10, 7, 2, 3, "a2 = 0 (layer 2 keeps no ReLU)"),         # p = 3: B < (d2 - 1)/2 = 3
    (10, 7, 3, 3, "interior"),
])
def test_active_labels_exactly(d1, d2, budget, p, active):
    """The binding face is named exactly (c16's conditions), including at the region's ends."""
    opt = paper_optimum(d1, d2, budget, p)
    assert opt.active == active
    assert opt.interior == (active == "interior")


@pytest.mark.parametrize("d1, d2, budget, p, winners", [
    (50000, 5000, 10000, 2, [(7499, 2501), (7500, 2500)]),  # B - (d2 - 1) odd: a tie
    (50000, 5000, 10001, 2, [(7500, 2501)]),                # B - (d2 - 1) even: unique
    (10, 7, 7, 3, [(5, 2)]),                                 # 2 y* = 7 - 3 = 4: unique
    (10, 7, 6, 3, [(4, 2), (5, 1)]),                         # 2 y* = 3: floor and ceiling tie
    (10, 10, 3, 2, [(3, 0)]),                                # clamped: unique end point
])
def test_integer_ties_exactly(d1, d2, budget, p, winners):
    """Two integer optima exactly when 2 y* is an odd integer at an interior optimum."""
    assert paper_optimum(d1, d2, budget, p).integer_retained == winners


@pytest.mark.parametrize("widths, budget, listed, ties", [
    ([3, 5, 5], 10, [(3, 3, 4), (3, 4, 3)], 2),   # the width-3 layer is full at t = 3.5
    ([2, 2, 9], 7, [(2, 2, 3)], 1),                # two capped layers
    ([4, 4], 8, [(4, 4)], 1),                      # full budget
    ([5], 0, [(0,)], 1),
    ([2, 3, 3], 5, [(1, 2, 2), (2, 1, 2), (2, 2, 1)], 3),
])
def test_sharp_ties_are_feasible(widths, budget, listed, ties):
    """Ties never give a layer more than its width (a capped layer gets no extra ReLU)."""
    opt = sharp_optimum(widths, budget)
    assert opt.integer_retained == listed and opt.integer_ties == ties
    assert all(x <= d for alloc in opt.integer_retained for x, d in zip(alloc, widths))
    assert opt.level == water_level(widths, budget)


def test_water_level_exact_values():
    """Level t with sum min(d, t) = B, including a level equal to a width."""
    assert water_level([3, 5, 5], 10) == Fraction(7, 2)
    assert water_level([2, 4], 4) == 2
    assert water_level([2, 4], 6) == 4
    assert water_level([1, 1, 1], 0) == 0


def test_closed_form_general_p_exact():
    """y* = ((p-1) B + 1 - d2) / (2 (p-1)) and x* = B - y*, as fractions of the widths."""
    assert closed_form(10, 7, 6, 3) == (Fraction(9, 2) / 10, Fraction(3, 2) / 7)
    assert closed_form(4, 4, 0) == (Fraction(3, 2) / 4, Fraction(-3, 2) / 4)
    assert not closed_form_feasible(4, 4, 0) and closed_form_feasible(4, 4, 3)


def test_exact_types_and_fractions():
    """Integral values are ints (not Fraction), fractions are x / d, p defaults to 2."""
    from capacity.optimum import check_problem

    opt = paper_optimum(50000, 5000, 10001)
    assert [type(v) for v in opt.retained] == [int, int] and opt.retained == (7500, 2501)
    assert opt.alpha == (Fraction(7500, 50000), Fraction(2501, 5000))
    sharp = sharp_optimum([50000, 5000], 10000)
    assert sharp.alpha == (Fraction(1, 10), 1) and [type(v) for v in sharp.retained] == [int, int]
    assert type(sharp.level) is int and sharp.level == 5000
    assert sharp_optimum([3, 4], 3).retained == (Fraction(3, 2), Fraction(3, 2))
    assert check_problem([5, 5], 3) == ([5, 5], 3, 2)
    with pytest.raises(ValueError, match="^at least one layer width is needed$"):
        sharp_optimum([], 0)


@pytest.mark.parametrize("widths, budget, level", [
    ([7], 5, 5), ([2, 9], 11, 9), ([2, 9], 10, 8), ([1, 1, 8], 6, 4), ([3, 3, 3], 7, Fraction(7, 3))])
def test_water_level_widest_layer_takes_the_rest(widths, budget, level):
    """When every narrower layer is full, the widest one holds the rest of the budget."""
    assert water_level(widths, budget) == level
