"""capacity.allocation against brute force over every vector of per-site unit counts."""

import doctest
from itertools import product

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import capacity.allocation
from capacity.allocation import (
    AllocationError,
    Site,
    achievable_total,
    allocate,
    dp_optimum,
    file_allocation,
    objective_value,
    paper_allocation,
    read_counts,
    sharp_allocation,
    uniform_allocation,
)
from capacity.optimum import paper_optimum


@st.composite
def site_lists(draw, equal_units=False, max_sites=4):
    """Sites with 1-4 units of 1-5 ReLUs each (one unit for all when ``equal_units``), p 2-4."""
    n = draw(st.integers(1, max_sites))
    shared = draw(st.integers(1, 5))
    sites = []
    for i in range(n):
        unit = shared if equal_units else draw(st.integers(1, 5))
        units = draw(st.integers(1, 4 if not equal_units else 6))
        pieces = 2 if equal_units else draw(st.integers(2, 4))
        sites.append(Site(f"s{i}", unit * units, unit, pieces))
    return sites


problems = site_lists().flatmap(
    lambda sites: st.tuples(st.just(sites), st.integers(0, sum(s.total for s in sites) + 2)))
equal_unit_problems = site_lists(equal_units=True, max_sites=5).flatmap(
    lambda sites: st.tuples(st.just(sites), st.integers(0, sum(s.total for s in sites))))


def every_allocation(sites):
    """Every vector of kept counts (multiples of the units, within the totals)."""
    return product(*(range(0, s.total + 1, s.unit) for s in sites))


def brute_force(kind, sites, budget):
    """(largest achievable total <= budget, every optimal count vector at that total, sorted)."""
    total = max(sum(c) for c in every_allocation(sites) if sum(c) <= budget)
    candidates = [c for c in every_allocation(sites) if sum(c) == total]
    best = max(objective_value(kind, sites, c) for c in candidates)
    return total, sorted(c for c in candidates if objective_value(kind, sites, c) == best)


MIXED = [Site("conv", 12, 4, 2), Site("conv2", 6, 3, 2), Site("fc", 5, 1, 2)]


@given(problems)
@example((MIXED, 10))  # 4 + 3 + 3, 8 + 0 + 2, 4 + 6 + 0, ... units force a search
@example(([Site("a", 5, 5, 2), Site("b", 2, 1, 2), Site("c", 2, 1, 2)], 5))  # sum 4 beats the product of 5
@example(([Site("a", 6, 3, 2)], 5))  # the budget itself is not achievable
def test_sharp_and_uniform_are_the_largest_optimum_in_site_order(problem):
    """Each allocation spends the largest achievable total and is the largest of all optima."""
    sites, budget = problem
    for kind, fn in (("sharp", sharp_allocation), ("uniform", uniform_allocation)):
        total, optima = brute_force(kind, sites, budget)
        alloc = fn(sites, budget)
        assert alloc.total == sum(alloc.counts) == total <= budget
        assert alloc.counts == optima[-1]
        assert alloc.ties == len(optima)


@given(equal_unit_problems)
@example(([Site("a", 3, 1, 2), Site("b", 3, 1, 2), Site("c", 3, 1, 2)], 4))  # three-way tie
@example(([Site("a", 2, 1, 2), Site("b", 2, 1, 2), Site("c", 4, 1, 2)], 4))  # equal remainders
@example(([Site("a", 8, 2, 2), Site("b", 2, 2, 2)], 6))  # a capped site
def test_closed_forms_equal_the_dynamic_programme(problem):
    """With one unit size the water-filling and largest-remainder forms equal the exact DP."""
    sites, budget = problem
    for kind, fn in (("sharp", sharp_allocation), ("uniform", uniform_allocation)):
        alloc = fn(sites, budget)
        assert (alloc.counts, alloc.ties) == dp_optimum(kind, sites, alloc.total)


@given(problems)
def test_achievable_total_is_the_largest_sum_within_budget(problem):
    sites, budget = problem
    expected = max(sum(c) for c in every_allocation(sites) if sum(c) <= budget)
    assert achievable_total(sites, budget) == expected


@pytest.mark.parametrize("d1, d2, budget", [(64, 16, 8), (64, 16, 16), (64, 16, 40), (64, 16, 56),
                                            (16, 16, 24), (5, 7, 12), (128, 16, 200)])
def test_paper_allocation_is_the_largest_integer_optimum(d1, d2, budget):
    sites = [Site("fc1", d1, 1, 2), Site("fc2", d2, 1, 2)]
    alloc = paper_allocation(sites, budget)
    opt = paper_optimum(d1, d2, min(budget, d1 + d2))
    assert alloc.counts == max(opt.integer_retained)
    assert alloc.ties == len(opt.integer_retained) and alloc.total == sum(alloc.counts)


def test_worked_numbers_for_the_experiment_widths():
    """d1 = 64, d2 = 16: the three kinds differ where the theory says they do."""
    sites = [Site("fc1", 64, 1, 2), Site("fc2", 16, 1, 2)]
    assert allocate("paper", sites, 8).counts == (8, 0)  # a2 clamps to 0 below d2 - 1
    assert allocate("paper", sites, 40).counts == (28, 12)  # y* = 12.5: both ties, x larger
    assert allocate("paper", sites, 40).ties == 2
    assert allocate("sharp", sites, 40).counts == (24, 16)  # level 20 caps layer 2 at 16
    assert allocate("uniform", sites, 40).counts == (32, 8)
    # p = 3 in a third site: (x+1)(y+1)(2z+1) peaks near z = x + 1/2, so it keeps one more
    assert allocate("sharp", sites + [Site("fc3", 16, 1, 3)], 40).counts == (13, 13, 14)


@pytest.mark.parametrize("sites", [
    [Site("a", 4, 1, 2)],
    [Site("a", 4, 1, 2), Site("b", 4, 2, 2)],
    [Site("a", 4, 1, 2), Site("b", 4, 1, 3)],
    [Site("a", 4, 1, 2), Site("b", 4, 1, 2), Site("c", 4, 1, 2)],
])
def test_paper_refuses_anything_but_two_single_neuron_layers(sites):
    with pytest.raises(AllocationError, match="two hidden layers"):
        paper_allocation(sites, 3)


SITES = [Site("conv", 32, 16, 2), Site("fc", 8, 1, 2)]


@pytest.mark.parametrize("counts, message", [
    ({"nope": 1}, "unknown site 'nope'"),
    ({"fc": 9}, "exceeds its 8 ReLUs"),
    ({"conv": 8}, "not a multiple of its unit of 16"),
    ({"conv": 16, "fc": 8}, "more than the budget 20"),
    ({"fc": -1}, "non-negative integer"),
    ({"fc": 2.0}, "non-negative integer"),
    ({"fc": True}, "non-negative integer"),
])
def test_file_allocation_refuses_bad_counts(counts, message):
    with pytest.raises(AllocationError, match=message):
        file_allocation(SITES, 20, counts)


def test_file_allocation_keeps_the_counts_given_and_zero_elsewhere():
    alloc = file_allocation(SITES, 20, {"conv": 16})
    assert alloc.counts == (16, 0) and alloc.total == 16 and alloc.quotas(SITES) == {"conv": 16, "fc": 0}


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ("[1, 2]", "got list"),
                                           ('"fc"', "got str")])
def test_read_counts_refuses_malformed_files(text, message):
    with pytest.raises(AllocationError, match=message):
        read_counts(text)


@pytest.mark.parametrize("sites, budget, message", [
    ([], 3, "no gated sites"),
    ([Site("a", 4, 1, 2), Site("a", 4, 1, 2)], 3, "distinct"),
    ([Site("a", 5, 2, 2)], 3, "not a multiple of its unit"),
    ([Site("a", 4, 0, 2)], 3, "unit of site a"),
    ([Site("a", 4, 1, 1)], 3, "pieces of site a"),
    ([Site("a", 4, 1, 2)], -1, "budget"),
])
def test_bad_sites_and_budgets(sites, budget, message):
    with pytest.raises(AllocationError, match=message):
        sharp_allocation(sites, budget)


def test_unknown_kind_and_oversized_dynamic_programme():
    with pytest.raises(AllocationError, match="unknown allocation 'best'"):
        allocate("best", SITES, 3)
    big = [Site(f"c{i}", 4096 * 64, 64, 2) for i in range(3)] + [Site("d", 4096 * 16, 16, 2)]
    with pytest.raises(AllocationError, match="pixel-wise gates or a file"):
        sharp_allocation(big, 200_000)


def test_docstring_examples():
    failures, tried = doctest.testmod(capacity.allocation)
    assert tried > 0 and failures == 0
