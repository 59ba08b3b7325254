"""capacity.bounds: the formulas against independent hand computations."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capacity.bounds import (
    corollary1,
    corollary1_counts,
    corollary1_relu,
    corollary2,
    corollary2_counts,
    corollary2_relu,
    sharp_capacity,
    sharp_pieces,
    theorem1,
    theorem1_relu,
)

widths = st.integers(1, 60)
ps = st.integers(2, 6)
fractions = st.fractions(min_value=0, max_value=1, max_denominator=50)


def test_theorem1_hand_values():
    """2 d1 d2 + d2 + 2 at (3, 2) is 16; with p = 3 it is 6*6 + 2*2 + 2 = 42."""
    assert theorem1(3, 2) == 16
    assert theorem1(3, 2, p=3) == 42


def test_worked_example_value():
    """Corollary 1 (ReLU) at x = 7500, y = 2500, d2 = 5000: xy + x d2 + y + 2."""
    assert corollary1_counts(7500, 2500, 50000, 5000) == 7500 * 2500 + 7500 * 5000 + 2500 + 2


@given(widths, widths, ps)
def test_corollaries_reduce_to_theorem1_at_full_retention(d1, d2, p):
    """a1 = a2 = 1 turns both corollaries into Theorem 1."""
    assert corollary1(1, 1, d1, d2, p) == theorem1(d1, d2, p)
    assert corollary2(1, 1, d1, d2, p) == theorem1(d1, d2, p)


@given(fractions, fractions, widths, widths)
def test_relu_forms_match_general_forms(a1, a2, d1, d2):
    """The paper's ReLU simplifications equal the general forms at p = 2."""
    assert corollary1(a1, a2, d1, d2, 2) == corollary1_relu(a1, a2, d1, d2)
    assert corollary2(a1, a2, d1, d2, 2) == corollary2_relu(a1, a2, d1, d2)
    assert theorem1(d1, d2, 2) == theorem1_relu(d1, d2)


@given(fractions, fractions, widths, widths, ps)
def test_linearization_gap(a1, a2, d1, d2, p):
    """Corollary 1 - Corollary 2 = a1 (1 - a2) d1 d2 (p - 1) >= 0."""
    gap = corollary1(a1, a2, d1, d2, p) - corollary2(a1, a2, d1, d2, p)
    assert gap == a1 * (1 - a2) * d1 * d2 * (p - 1)
    assert gap >= 0


@given(st.integers(0, 40), st.integers(0, 40), widths, ps)
def test_counts_forms(x, y, d1, p):
    """The counts forms equal the fraction forms at a = x / d."""
    d1, d2 = max(d1, x, 1), max(y, 1)
    assert corollary1_counts(x, y, d1, d2, p) == corollary1(Fraction(x, d1), Fraction(y, d2), d1, d2, p)
    assert corollary2_counts(x, y, d1, d2, p) == corollary2(Fraction(x, d1), Fraction(y, d2), d1, d2, p)


@pytest.mark.parametrize(
    "retained, p, pieces",
    [([], 2, 1), ([0, 0], 2, 1), ([3, 2], 2, 12), ([3, 2], 3, 35), ([1, 1, 1], 2, 8)],
)
def test_sharp_pieces_values(retained, p, pieces):
    """prod((p - 1) x + 1), computed by hand."""
    assert sharp_pieces(retained, p) == pieces
    assert sharp_capacity(retained, p) == pieces + 1


@given(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30), ps)
def test_sharp_never_above_corollary1(x, y, extra, p):
    """Sharp pieces <= Corollary 1 pieces, with equality iff x = 0 or d2 = 1."""
    d1, d2 = x + extra + 1, max(y, 1)
    sharp = sharp_pieces([x, y], p)
    paper = corollary1_counts(x, y, d1, d2, p) - 1
    assert sharp <= paper
    assert (sharp == paper) == (x == 0 or d2 == 1)


def test_huge_values_stay_exact():
    """10**50-sized widths give exact integers, not floats."""
    big = 10**50
    value = theorem1(big, big)
    assert isinstance(value, int) and value == 2 * big * big + big + 2


def test_numpy_integers_become_python_ints():
    import numpy as np

    from capacity.exact import as_count, as_exact

    value = as_exact(np.int64(7))
    assert value == 7 and type(value) is int
    assert type(as_count(np.int32(3), "budget")) is int
    with pytest.raises(ValueError):
        as_exact(np.float64(1.0))


def test_defaults_are_relu():
    """Every bound and optimum defaults to p = 2 (ReLU), and p = 3 gives a different value."""
    from capacity.optimum import closed_form, closed_form_feasible, paper_optimum, sharp_optimum

    half = Fraction(1, 2)
    cases = [(theorem1, (3, 2)), (corollary1, (half, half, 4, 3)), (corollary2, (half, half, 4, 3)),
             (corollary1_counts, (2, 1, 4, 3)), (corollary2_counts, (2, 1, 4, 3)),
             (sharp_pieces, ([3, 2],)), (sharp_capacity, ([3, 2],)), (closed_form, (4, 3, 5))]
    for function, args in cases:
        assert function(*args) == function(*args, p=2) != function(*args, p=3), function.__name__
    assert not closed_form_feasible(3, 5, 4) and closed_form_feasible(3, 5, 4, p=3)
    assert paper_optimum(4, 3, 5) == paper_optimum(4, 3, 5, p=2) != paper_optimum(4, 3, 5, p=3)
    assert sharp_optimum([3, 2], 4).integer_value == 10 and sharp_optimum([3, 2], 4, p=3).integer_value == 26


def test_symbolic_counts_and_exact_types():
    """The counts forms work on sympy symbols (x / d, not x * d); integral results are ints."""
    import sympy

    x, y = sympy.symbols("x y")
    assert sympy.expand(corollary1_counts(x, y, 4, 3) - (x * y + 3 * x + y + 2)) == 0
    assert sympy.expand(corollary2_counts(x, 2, 4, 3, p=3) - (12 * x + 6)) == 0
    assert type(corollary1(Fraction(1, 2), 1, 4, 3)) is int and corollary1(Fraction(1, 2), 1, 4, 3) == 17
    assert type(corollary1_counts(2, 3, 4, 3)) is int and type(sharp_pieces([Fraction(2), 1])) is int
    assert corollary1_counts(1, 1, 2, 2) == Fraction(1 * 1 + 1 * 2 + 1 + 2)
