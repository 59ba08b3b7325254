"""Tests of capacity.witnesses: counts checked by the exact counter, the "cannot reach" cases
checked independently (random networks, a finite grid, the lemma behind each proof), exact fits.

Expected values come from the statements of docs/pieces.md (written out below), never from
running the module under test.
"""

import itertools
import subprocess
import sys
from dataclasses import replace
from fractions import Fraction as F
from math import prod
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from capacity.pieces import Layer, Network, count_pieces, restrict
from capacity.strategies import networks
from capacity.witnesses import (
    alternating_fit,
    best_known,
    reaches_sharp,
    upper_bound,
    witness,
    witness_table,
    zigzag_network,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "pieces.md"


def sharp(*retained):
    return prod(x + 1 for x in retained)


def proven_max(d1, d2, x, y):
    """Maximum pieces along a line, from the three arguments of docs/pieces.md.

    - layer 1 is one ReLU (d1 = x = 1): constant on a half-line, so 1 piece there and at most
      y + 1 on the other half-line;
    - layer 1 is two ReLUs (d1 = x = 2): 2 kinks, and each layer-2 neuron crosses zero at
      most twice (the line's image in the (h1, h2) plane is convex): 2 + 2y breakpoints;
    - layer 2 is one ReLU (d2 = y = 1): with c zero crossings of g, at least floor((c-1)/2)
      of g's x kinks are hidden in negative stretches: at most c + x - floor((c-1)/2)
      breakpoints, largest at c = x + 1.
    """
    bounds = [sharp(x, y)]
    if d1 == x == 1:
        bounds.append(1 + (y + 1))
    if d1 == x == 2:
        bounds.append(2 + 2 * y + 1)
    if d2 == y == 1:
        bounds.append(max(c + x - (c - 1) // 2 for c in range(1, x + 2)) + 1)
    return min(bounds)


SHAPES = [(d1, d2, x, y) for d1 in range(1, 5) for d2 in range(1, 5)
          for x in range(d1 + 1) for y in range(d2 + 1)]


@pytest.mark.parametrize("d1, d2, x, y", SHAPES)
def test_witness_architecture_and_count(d1, d2, x, y):
    """The witness has widths (d1, d2), retains exactly x, y ReLUs, and its exact piece count
    is the proven maximum: (x+1)(y+1) unless a docs argument lowers it."""
    net = witness(d1, d2, x, y)
    assert net.widths == (d1, d2) and net.retained() == (x, y) and net.activation == "relu"
    assert len(net.origin) == 1
    pieces = count_pieces(net).pieces
    assert pieces == proven_max(d1, d2, x, y)
    assert count_pieces(net, exact=False).pieces == pieces
    assert reaches_sharp(d1, d2, x, y) == (pieces == sharp(x, y))
    assert upper_bound(d1, d2, x, y) == proven_max(d1, d2, x, y)


@pytest.mark.parametrize("d1, d2, x, y, reaches", [
    (1, 1, 1, 1, False), (1, 4, 1, 4, False), (2, 2, 2, 2, False), (2, 4, 2, 3, False),
    (4, 1, 4, 1, False), (5, 1, 1, 1, True), (2, 2, 1, 2, True), (3, 2, 3, 2, True),
    (3, 3, 3, 3, True), (4, 3, 4, 2, True), (3, 2, 2, 1, True), (3, 2, 3, 1, True),
])
def test_reaches_sharp_pinned(d1, d2, x, y, reaches):
    """Hand-classified cases: all-ReLU layer 1 of width <= 2 and d2 = y = 1 (x >= 2) fall short."""
    assert reaches_sharp(d1, d2, x, y) is reaches
    assert (count_pieces(witness(d1, d2, x, y)).pieces == sharp(x, y)) is reaches


def test_witness_rejects_impossible_shapes():
    """More retained ReLUs than neurons is refused."""
    with pytest.raises(ValueError):
        witness(2, 2, 3, 1)
    with pytest.raises(ValueError):
        zigzag_network([2, 1], widths=[2, 2])  # needs a linearized neuron per layer


# ----------------------------------------------------------------------------- "cannot" cases


def _first_layer_relu(net):
    first = net.layers[0]
    return replace(net, layers=(replace(first, mask=(1,) * first.width),) + net.layers[1:])


def _second_layer_single_relu(net):
    second = net.layers[1]
    return replace(net, layers=(net.layers[0], replace(second, mask=(1,))))


@given(networks(widths=(1, 4), max_input=2).map(_first_layer_relu))
def test_one_relu_in_layer1_bound(net):
    """One ReLU in layer 1 (all-ReLU width 1): pieces <= y + 2, y = ReLUs kept in layer 2."""
    assert count_pieces(net).pieces <= net.retained()[1] + 2


@given(st.integers(2, 4).flatmap(lambda d2: networks(widths=(2, d2), max_input=2)).map(_first_layer_relu))
def test_two_relus_in_layer1_bound(net):
    """Two ReLUs in layer 1 (all-ReLU width 2): pieces <= 2y + 3."""
    assert count_pieces(net).pieces <= 2 * net.retained()[1] + 3


@given(st.integers(1, 5).flatmap(lambda d1: networks(widths=(d1, 1), max_input=2))
       .map(_second_layer_single_relu))
def test_single_relu_in_layer2_bound(net):
    """One ReLU in layer 2 (d2 = y = 1): pieces <= x + ceil(x/2) + 2."""
    x = net.retained()[0]
    assert count_pieces(net).pieces <= x + (x + 1) // 2 + 2


def zero_crossings(net, layer_index, neuron):
    """Sign changes along the line of a neuron's pre-activation in layer ``layer_index``."""
    layer = net.layers[layer_index]
    sub = Network(net.layers[:layer_index], layer.weight[neuron], layer.bias[neuron],
                  net.origin, net.direction, net.activation)
    g = restrict(sub)
    b = list(g.breakpoints)
    ts = [b[0] - 1, *b, b[-1] + 1] if b else [0]
    signs = [g(t) > 0 for t in ts if g(t) != 0]
    return sum(1 for s0, s1 in zip(signs, signs[1:]) if s0 != s1)


def max_layer2_crossings(net):
    return max(zero_crossings(net, 1, k) for k in range(net.widths[1]))


@given(networks(widths=(1, 3), max_input=2).map(_first_layer_relu))
def test_lemma_one_relu_one_crossing(net):
    """Lemma of the d1 = x = 1 proof: a layer-2 pre-activation crosses zero at most once."""
    assert max_layer2_crossings(net) <= 1


@given(networks(widths=(2, 3), max_input=2).map(_first_layer_relu))
def test_lemma_two_relus_two_crossings(net):
    """Lemma of the d1 = x = 2 proof: a layer-2 pre-activation crosses zero at most twice."""
    assert max_layer2_crossings(net) <= 2


def test_lemmas_fail_where_they_should():
    """The lemma checks can fail: one more neuron in layer 1 (a linear one, or a third ReLU)
    breaks them, and a linear neuron beside the single layer-2 ReLU breaks its bound."""
    assert max_layer2_crossings(witness(2, 2, 1, 1)) > 1        # ReLU + linear neuron
    assert max_layer2_crossings(witness(3, 2, 3, 2)) > 2        # three ReLUs
    assert count_pieces(witness(3, 2, 2, 1)).pieces == 6 > 2 + 1 + 2  # d2 = 2 > y = 1


def _grid_networks(relus1, linear1, relus2):
    """Every two-layer network on a small grid (input t, one output, all of layer 2 ReLU).

    Layer-1 ReLUs are relu(s (t - k)), s = +-1, k in 0..3 (any ReLU of t is a positive
    multiple of one of these, up to the grid of positions); a linearized layer-1 neuron is t
    (its affine freedom is absorbed by layer 2). Layer-2 ReLUs have weights in -2..2 and
    biases in {-1, -1/2, 0, 1/2, 1}; output weights +-1, the first one +1 (negating the
    output keeps its pieces).
    """
    first = [(s, k) for s in (1, -1) for k in range(4)]
    rows = [(w, b) for w in itertools.product(range(-2, 3), repeat=relus1 + linear1)
            for b in (-1, F(-1, 2), 0, F(1, 2), 1)]
    for units in itertools.combinations_with_replacement(first, relus1):
        w1 = tuple((s,) for s, _ in units) + ((1,),) * linear1
        b1 = tuple(-s * k for s, k in units) + (0,) * linear1
        layer1 = Layer(w1, b1, (1,) * relus1 + (0,) * linear1)
        for second in itertools.combinations_with_replacement(rows, relus2):
            layer2 = Layer(tuple(w for w, _ in second), tuple(b for _, b in second), (1,) * relus2)
            for signs in itertools.product((1, -1), repeat=relus2 - 1):
                yield Network((layer1, layer2), (1, *signs))


@pytest.mark.parametrize("relus1, linear1, relus2, expected", [
    (1, 0, 1, 3),  # d1 = x = 1, d2 = y = 1: proven max 3 < sharp 4
    (2, 0, 1, 5),  # d1 = x = 2, d2 = y = 1: proven max 5 < sharp 6
    (1, 0, 2, 4),  # d1 = x = 1, d2 = y = 2: proven max 4 < sharp 6
    (1, 1, 1, 4),  # a linearized neuron in layer 1: the sharp bound 4 is reached
])
def test_grid_maximum(relus1, linear1, relus2, expected):
    """Over a finite grid of networks the largest exact count is the proven maximum: never
    above it, and the grid is rich enough to reach it (and to reach the sharp bound where
    one linearized neuron more allows it, so a claim one too low would fail here)."""
    assert proven_max(relus1 + linear1, relus2, relus1, relus2) == expected
    best = max(count_pieces(net).pieces for net in _grid_networks(relus1, linear1, relus2))
    assert best == expected


# ----------------------------------------------------------------------------- deeper, exact fits


RETAINED = [(0,), (1,), (4,), (1, 1), (3, 2), (0, 3), (2, 0, 2), (1, 1, 1), (2, 2, 2), (1, 1, 1, 1),
            (3, 1, 2, 1)]


@pytest.mark.parametrize("retained", RETAINED)
def test_zigzag_reaches_product(retained):
    """zigzag_network(x) has exactly prod(x_l + 1) pieces at any depth, with the stated
    widths and retained counts; the float64 path agrees."""
    net = zigzag_network(retained)
    assert net.widths == tuple(x + 1 for x in retained) and net.retained() == tuple(retained)
    assert count_pieces(net).pieces == sharp(*retained)
    assert count_pieces(net, exact=False).pieces == sharp(*retained)


@given(st.lists(st.integers(0, 3), min_size=1, max_size=4),
       st.lists(st.integers(0, 2), min_size=4, max_size=4),
       st.lists(st.integers(-2, 2), min_size=1, max_size=3).map(lambda u: [1] + u[1:]))
@example([2, 3], [0, 0, 0, 0], [1])
def test_alternating_fit(retained, extra, u):
    """The fit interpolates N = prod(x_l + 1) + 1 collinear points x_i = i u with labels
    (-1)^i exactly, has N - 1 pieces (the fewest N alternating points allow), and keeps
    the requested widths."""
    widths = [x + 1 + e for x, e in zip(retained, extra)]
    net, points = alternating_fit(retained, widths, u)
    n = sharp(*retained) + 1
    assert len(points) == n
    assert [x for x, _ in points] == [tuple(i * F(v) for v in u) for i in range(1, n + 1)]
    assert [y for _, y in points] == [(-1) ** i for i in range(1, n + 1)]
    assert all(net(x) == y for x, y in points)
    assert net.widths == tuple(widths) and net.retained() == tuple(retained)
    assert count_pieces(net).pieces == n - 1


def test_fit_breaks_between_every_pair():
    """Every inner point of the fit is a kink: N - 2 breakpoints, at t = 2, ..., N - 1."""
    net, points = alternating_fit([2, 1], u=[1, 2])
    breaks = count_pieces(net).breakpoints
    assert list(breaks) == list(range(2, len(points)))  # at t = 2, ..., N - 1


# ----------------------------------------------------------------------------- table


def test_best_known_counts_exactly():
    """best_known is the exact count of the witness."""
    assert best_known(3, 1, 3, 1) == count_pieces(witness(3, 1, 3, 1)).pieces == 7


def test_table_rows_match_proofs():
    """Every row of the table states the sharp bound, the proven max and counts that agree
    with the arguments, for the linearized and the pruned network."""
    rows = witness_table().splitlines()[2:]
    assert len(rows) == sum(d1 * d2 for d1 in range(1, 4) for d2 in range(1, 4))
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        d1, d2, x, y, sharp_cell, proven, best, _, pruned_best, _ = cells
        d1, d2, x, y = map(int, (d1, d2, x, y))
        assert int(sharp_cell) == sharp(x, y)
        assert int(proven) == int(best) == proven_max(d1, d2, x, y)
        assert int(pruned_best) == proven_max(x, y, x, y)


def test_docs_table_is_generated():
    """docs/pieces.md and the README hold exactly the table `python -m capacity.witnesses --table` prints."""
    out = subprocess.run([sys.executable, "-m", "capacity.witnesses", "--table"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == witness_table()
    assert witness_table() in DOCS.read_text()
    assert witness_table() in (DOCS.parent.parent / "README.md").read_text()


@pytest.mark.parametrize("module", ["capacity.witnesses", "capacity.pieces"])
def test_docstring_examples(module):
    """The docstring examples of the modules run and print what they show."""
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0
