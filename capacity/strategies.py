"""Hypothesis strategies for small feed-forward networks with exact rational weights.

Use them to check any claim about piecewise-linear networks along a line, for example
your own bound on the number of pieces. Every value is built constructively (``.map`` /
``.flatmap``, no ``.filter``), so shrinking is fast and no example is ever rejected.

The networks come with per-neuron masks (1 = activation kept, 0 = linearized), pruned
neurons (zero weight row and bias), and, when ``degenerate=True``, the cases that break
naive counters: zero weights, duplicate neurons, positively scaled copies (coincident
breakpoints) and negated copies.

Example:
    >>> from hypothesis import given
    >>> from capacity.pieces import count_pieces
    >>> from capacity.bounds import sharp_pieces
    >>> @given(networks(max_depth=3, max_width=4))
    ... def test_sharp_bound(net):
    ...     assert count_pieces(net).pieces <= sharp_pieces(net.retained())
    >>> test_sharp_bound()
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Sequence

from hypothesis import strategies as st

from capacity.pieces import ACTIVATIONS, Layer, Network


def rationals(max_numerator: int = 4, max_denominator: int = 3) -> st.SearchStrategy[Fraction]:
    """Fractions n/d with |n| <= max_numerator and 1 <= d <= max_denominator (zero included).

    Example:
        >>> rationals(2, 1).example() in {-2, -1, 0, 1, 2}
        True
    """
    values = sorted({Fraction(n, d) for n in range(-max_numerator, max_numerator + 1)
                     for d in range(1, max_denominator + 1)}, key=lambda v: (abs(v), v))
    # one draw per number (faster than drawing n and d) that shrinks towards 0
    return st.sampled_from(values)


def _vectors(length: int, numbers: st.SearchStrategy) -> st.SearchStrategy[tuple]:
    return st.lists(numbers, min_size=length, max_size=length).map(tuple)


def _nonzero(vector: tuple) -> tuple:
    """The vector itself, or with its first entry set to 1 when it is all zeros."""
    return vector if any(vector) else (Fraction(1),) + vector[1:]


# One degenerate edit of a layer: (kind, source, target, scale numerator); indices are
# taken modulo the width, so every drawn edit is valid.
_EDIT_KINDS = ("duplicate", "scaled", "negated", "zero_weight")


def _edit(layer: tuple, edit: tuple) -> tuple:
    weight, bias = [list(r) for r in layer[0]], list(layer[1])
    kind, src, dst, num = edit
    width = len(bias)
    src, dst = src % width, dst % width
    if kind == "zero_weight":
        weight[dst][num % len(weight[dst])] = Fraction(0)
    else:
        scale = {"duplicate": 1, "scaled": Fraction(num % 3 + 2, 2), "negated": -1}[kind]
        weight[dst] = [scale * w for w in weight[src]]
        bias[dst] = scale * bias[src]
    return tuple(map(tuple, weight)), tuple(bias)


@lru_cache(maxsize=None)  # a strategy per shape, validated once
def _layer(fan_in: int, width: int, numbers, masks, prune, degenerate) -> st.SearchStrategy[Layer]:
    weights = st.lists(_vectors(fan_in, numbers), min_size=width, max_size=width).map(tuple)
    edits = (st.lists(st.tuples(st.sampled_from(_EDIT_KINDS), st.integers(0, 7),
                                st.integers(0, 7), st.integers(0, 7)), max_size=3)
             if degenerate and fan_in else st.just([]))
    pruned = _vectors(width, st.sampled_from((False, False, False, True))) if prune else st.just((False,) * width)
    mask = _vectors(width, st.integers(0, 1)) if masks else st.just((1,) * width)

    def build(parts):
        weight, bias, edit_list, cut, mask_ = parts
        layer = (weight, bias)
        for edit in edit_list:
            layer = _edit(layer, edit)
        weight, bias = layer
        weight = tuple(tuple(0 * w for w in row) if c else row for row, c in zip(weight, cut))
        bias = tuple(Fraction(0) if c else b for b, c in zip(bias, cut))
        return Layer(weight, bias, mask_)

    return st.tuples(weights, _vectors(width, numbers), edits, pruned, mask).map(build)


def networks(min_depth: int = 1, max_depth: int = 3, max_width: int = 6, max_input: int = 3,
             activations: Sequence[str] = ("relu",), masks: bool = True, prune: bool = False,
             degenerate: bool = True, widths: Sequence[int] | None = None,
             numbers: st.SearchStrategy | None = None) -> st.SearchStrategy[Network]:
    """Small networks with rational weights restricted to a random line.

    Args:
        min_depth, max_depth: number of hidden layers.
        max_width: largest hidden width (widths start at 1).
        max_input: largest input width.
        activations: names from ``capacity.pieces.ACTIVATIONS`` to draw from.
        masks: draw 0/1 masks (False: every neuron keeps its activation).
        prune: zero the weight row and bias of some neurons (pruned neurons).
        degenerate: apply duplicate / scaled / negated copies and zeroed weights.
        widths: fixed hidden widths (overrides min_depth, max_depth, max_width).
        numbers: strategy for weights and biases (default ``rationals()``).

    Returns:
        A strategy of ``capacity.pieces.Network`` with a nonzero direction.

    Example:
        >>> net = networks(widths=(3, 2)).example()
        >>> net.widths
        (3, 2)
    """
    numbers = numbers if numbers is not None else rationals()
    shape_widths = (st.just(tuple(widths)) if widths is not None else
                    st.lists(st.integers(1, max_width), min_size=min_depth, max_size=max_depth).map(tuple))
    shapes = st.tuples(st.integers(1, max_input), shape_widths, st.sampled_from(tuple(activations)))

    @lru_cache(maxsize=None)
    def build(shape):
        din, ws, activation = shape
        fans = (din,) + ws[:-1]
        layers = st.tuples(*(_layer(f, w, numbers, masks, prune, degenerate) for f, w in zip(fans, ws)))
        out_fan = ws[-1] if ws else din
        return st.builds(
            lambda ls, ow, ob, origin, direction: Network(ls, ow, ob, origin, _nonzero(direction), activation),
            layers, _vectors(out_fan, numbers), numbers, _vectors(din, numbers), _vectors(din, numbers))

    return shapes.flatmap(build)


def two_layer_networks(masks: bool = True, prune: bool = False, max_width: int = 5,
                       activations: Sequence[str] = ("relu",)) -> st.SearchStrategy[Network]:
    """Networks with exactly two hidden layers (the setting of Theorem 1 and its corollaries).

    Example:
        >>> len(two_layer_networks().example().widths)
        2
    """
    return networks(min_depth=2, max_depth=2, max_width=max_width, masks=masks, prune=prune,
                    activations=activations)


ALL_ACTIVATIONS = tuple(ACTIVATIONS)
