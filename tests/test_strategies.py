"""Tests of capacity.strategies: generated networks are well formed and cover the edge cases."""

from fractions import Fraction

import pytest
from hypothesis import Phase, given, seed, settings

from capacity.pieces import ACTIVATIONS, network_to_dict, load_network
from capacity.strategies import networks, rationals, two_layer_networks


@given(networks(max_depth=3, max_width=5, max_input=3, activations=tuple(ACTIVATIONS), prune=True))
def test_networks_are_well_formed(net):
    """Every matrix has the right shape, masks are 0/1, numbers exact, direction nonzero."""
    fan = len(net.origin)
    assert len(net.direction) == fan and any(net.direction)
    assert 1 <= len(net.layers) <= 3
    for layer in net.layers:
        assert 1 <= layer.width <= 5 and len(layer.mask) == layer.width
        assert all(len(row) == fan for row in layer.weight) and set(layer.mask) <= {0, 1}
        assert all(isinstance(w, (int, Fraction)) for row in layer.weight for w in row)
        fan = layer.width
    assert len(net.output_weight) == fan
    assert load_network(network_to_dict(net)) == net


@given(rationals(3, 2))
def test_rationals_range(q):
    """rationals(n, d) stays within numerators |n| <= 3 and denominators <= 2."""
    assert abs(q.numerator) <= 3 and q.denominator <= 2


@given(two_layer_networks(masks=False))
def test_two_layer_all_active(net):
    """two_layer_networks(masks=False): exactly two hidden layers, every neuron active."""
    assert len(net.widths) == 2 and all(set(layer.mask) == {1} for layer in net.layers)


def test_degenerate_cases_are_generated():
    """Duplicate neurons, coincident breakpoints, pruned neurons and masks all occur
    within a few hundred examples (fixed seed, generation only, no shrinking)."""
    def rows(net):
        return [(row, b) for layer in net.layers for row, b in zip(layer.weight, layer.bias)]

    def duplicate(net):
        r = [x for x in rows(net) if any(x[0])]
        return len(r) != len(set(r))

    def scaled(net):
        for layer in net.layers:
            for i, (ri, bi) in enumerate(zip(layer.weight, layer.bias)):
                for rj, bj in zip(layer.weight[i + 1:], layer.bias[i + 1:]):
                    if any(ri) and ri != rj and all(a * 2 == c * 3 for a, c in zip(ri, rj)) and 2 * bi == 3 * bj:
                        return True
        return False

    checks = {"duplicate": duplicate, "scaled": scaled,
              "pruned": lambda n: any(any(p) for p in n.pruned()),
              "linearized": lambda n: 0 in n.layers[0].mask}
    seen = set()

    class AllSeen(Exception):
        """Stops the search as soon as every case has occurred (300 examples at most)."""

    @seed(0)
    @settings(max_examples=300, database=None, phases=[Phase.generate])
    @given(networks(prune=True))
    def record(net):
        seen.update(name for name, check in checks.items() if check(net))
        if seen == set(checks):
            raise AllSeen

    with pytest.raises(AllSeen):
        record()
    assert seen == set(checks)
