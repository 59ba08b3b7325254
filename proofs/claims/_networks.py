"""Networks for the network claims (c10, c12-c15, c17-c19): a seeded sample and counts.

The sample is drawn with ``random.Random(seed)``, so every run checks the same networks.
It covers what breaks naive counters: duplicate neurons, positively scaled copies
(coincident breakpoints), negated copies, pruned neurons (zero weight row, or zero
outgoing weights), linearized neurons and all three activations of ``capacity.pieces``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache

from capacity.pieces import ACTIVATIONS, Layer, Network, layer_breakpoints

#: The small numbers weights and biases are drawn from (zero included).
NUMBERS = tuple(sorted({Fraction(n, d) for n in range(-3, 4) for d in (1, 2)}))


def _row(rng: random.Random, fan: int) -> tuple:
    return tuple(rng.choice(NUMBERS) for _ in range(fan))


def _layer(rng: random.Random, fan: int, width: int) -> Layer:
    """A layer with random rows, then one degenerate edit and maybe a pruned row."""
    rows = [_row(rng, fan) for _ in range(width)]
    bias = [rng.choice(NUMBERS) for _ in range(width)]
    if width >= 2:
        src, dst = rng.sample(range(width), 2)
        scale = rng.choice((1, Fraction(3, 2), 2, -1, None))
        if scale is not None:  # duplicate / scaled (coincident breakpoints) / negated copy
            rows[dst], bias[dst] = tuple(scale * w for w in rows[src]), scale * bias[src]
    if rng.random() < 0.2:
        k = rng.randrange(width)
        rows[k], bias[k] = (Fraction(0),) * fan, Fraction(0)
    mask = tuple(int(rng.random() < 0.7) for _ in range(width))
    return Layer(tuple(rows), tuple(bias), mask)


def random_network(rng: random.Random, max_depth: int = 3, max_width: int = 4,
                   activations=tuple(ACTIVATIONS), depth: int | None = None) -> Network:
    """One random network restricted to a random line (see the module docstring)."""
    depth = depth or rng.randint(1, max_depth)
    fan = din = rng.randint(1, 2)
    layers = []
    for _ in range(depth):
        width = rng.randint(1, max_width)
        layers.append(_layer(rng, fan, width))
        fan = width
    out = list(_row(rng, fan))
    if fan >= 2 and rng.random() < 0.2:
        out[rng.randrange(fan)] = Fraction(0)  # a neuron pruned by its outgoing weight
    direction = _row(rng, din)
    if not any(direction):
        direction = (Fraction(1),) + direction[1:]
    return Network(tuple(layers), tuple(out), rng.choice(NUMBERS), _row(rng, din), direction,
                   rng.choice(activations))


@lru_cache(maxsize=None)
def sample(count: int = 300, seed: int = 14, depth: int | None = None) -> tuple[Network, ...]:
    """``count`` seeded random networks (cached: several claims check the same sample)."""
    rng = random.Random(seed)
    return tuple(random_network(rng, depth=depth) for _ in range(count))


def layer_counts(net: Network) -> list[int]:
    """|K_0| = 0, |K_1|, ..., |K_L|: breakpoints of t -> outputs of layers 1..l."""
    return [0] + [len(k) for k in layer_breakpoints(net)]


def masked_counts(net: Network) -> list[int]:
    """Per layer, the neurons whose mask keeps the activation (pruned ones included)."""
    return [sum(layer.mask) for layer in net.layers]


def neuron_breakpoints(net: Network, index: int, k: int) -> int:
    """How many breakpoints neuron ``k`` of layer ``index`` adds to K_{index-1}.

    The network is cut after that layer and every other neuron of it is linearized, so the
    only new breakpoints are the ones of sigma(z_k).
    """
    layer = net.layers[index]
    only = tuple(int(i == k) for i in range(layer.width))
    cut = replace(net, layers=net.layers[:index] + (replace(layer, mask=only),),
                  output_weight=(0,) * layer.width)
    counts = layer_counts(cut)
    return counts[-1] - counts[-2]


def activation_p(net: Network) -> int:
    """Number of linear pieces of the network's activation."""
    return ACTIVATIONS[net.activation].p
