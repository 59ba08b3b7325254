"""Networks that reach the sharp pieces bound, the cases that cannot, and exact fits.

Along a line, a network whose hidden layer l keeps x_l activations has at most
prod_l (x_l + 1) linear pieces (ReLU). This module builds networks that reach it, checked
with the exact counter of ``capacity.pieces``:

- ``zigzag_network(retained)``: any depth, one extra linearized neuron per layer. Layer 1
  is a triangle wave with x_1 kinks (a linear neuron t plus ReLUs at 1..x_1); layer l folds
  it with x_l ReLUs at thresholds j/(x_l + 1) (Telgarsky-style composition). The output is
  a uniform zigzag between -1 and +1, which gives ``alternating_fit``.
- ``witness(d1, d2, x, y)``: two hidden layers of widths d1, d2 with x, y retained ReLUs,
  the best known construction for every (d1, d2, x, y), including all-ReLU layers.

Which architectures reach (x + 1)(y + 1) (proofs in docs/pieces.md, "Witnesses"):

- reached when layer 1 can make a zigzag whose every piece crosses [0, 1] (x = 0, or a
  linearized neuron in layer 1 (d1 > x), or x >= 3) and layer 2 can see every kink
  (y = 0, or a linearized neuron in layer 2 (d2 > y), or y >= 2);
- all-ReLU layer 1 of width 1 or 2 (d1 = x <= 2): at most y + 2 and 2y + 3 pieces;
- a single ReLU in layer 2 (d2 = y = 1): at most x + ceil(x/2) + 2 pieces.

Example:
    >>> from capacity.pieces import count_pieces
    >>> count_pieces(witness(3, 2, 3, 2)).pieces
    12
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import prod
from typing import Sequence

from capacity.cli import command
from capacity.bounds import sharp_pieces
from capacity.pieces import Layer, Network, count_pieces

F = Fraction


@dataclass
class _Builder:
    """Layers built so far and the signal g as a linear form over the last layer."""

    layers: list
    coef: list  # g = sum coef[k] * h[k] + const over the last layer's outputs h
    const: Fraction

    def fold(self, neurons: Sequence[tuple], width: int) -> None:
        """Add a layer whose neuron k computes act(scale_k * g + shift_k); pad to ``width``.

        ``neurons`` holds (scale, shift, mask, weight in the new g); padding neurons are
        linearized copies of g with weight 0 in the new g.
        """
        rows, bias, mask, coef = [], [], [], []
        for scale, shift, m, w in list(neurons) + [(1, 0, 0, 0)] * (width - len(neurons)):
            rows.append(tuple(F(scale) * c for c in self.coef))
            bias.append(F(scale) * self.const + shift)
            mask.append(m)
            coef.append(F(w))
        self.layers.append(Layer(tuple(rows), tuple(bias), tuple(mask)))
        self.coef, self.const = coef, F(0)

    def network(self, scale=1, shift=0, origin=(0,), direction=(1,)) -> Network:
        """The network whose output is scale * g + shift."""
        weight = tuple(F(scale) * c for c in self.coef)
        return Network(tuple(self.layers), weight, F(scale) * self.const + shift,
                       tuple(origin), tuple(direction))


def _start() -> _Builder:
    return _Builder([], [F(1)], F(0))  # the input t itself


def _zigzag_layer1(b: _Builder, d1: int, x: int) -> str:
    """Layer 1 computes g with x kinks; returns its kind ("zigzag" or "valley")."""
    if x == 0:
        b.fold([(1, 0, 0, 1)], d1)
        return "zigzag"
    if d1 > x:  # a linearized neuron carries t: g = t - 2 relu(t-1) + 2 relu(t-2) - ...
        b.fold([(1, 0, 0, 1)] + [(1, -k, 1, 2 * (-1) ** k) for k in range(1, x + 1)], d1)
        return "zigzag"
    if x == 1:  # all-ReLU, width 1: g = relu(t), constant left of 0
        b.fold([(1, 0, 1, 1)], d1)
        return "valley"
    if x == 2:  # all-ReLU, width 2: g = relu(-t) + relu(t - 1), a flat valley
        b.fold([(-1, 0, 1, 1), (1, -1, 1, 1)], d1)
        return "valley"
    # all-ReLU, x >= 3: slopes s_0..s_x alternate in sign; the left-facing ReLUs (at the
    # last one or two kinks) produce the left ray's slope s_0 = 1 without a linear neuron.
    s = [F((-1) ** k) for k in range(x + 1)]
    if x % 2:
        s[x - 1], s[x], left = F(1, 2), F(-1, 2), {x}
    else:
        s[x - 2], s[x - 1], s[x], left = F(2), F(-1), F(1), {x - 1, x}
    kinks = [F(0)]
    for k in range(1, x):  # g goes between 1 (peaks) and 0 (valleys): length 1/|slope|
        kinks.append(kinks[-1] + 1 / abs(s[k]))
    delta = [s[k] - s[k - 1] for k in range(1, x + 1)]
    neurons = [((-1, kinks[k - 1], 1, delta[k - 1]) if k in left else (1, -kinks[k - 1], 1, delta[k - 1]))
               for k in range(1, x + 1)]
    b.fold(neurons, d1)
    b.const = 1 - sum(delta[k - 1] * (kinks[k - 1] - kinks[0]) for k in left)  # g(kink 1) = 1
    return "zigzag"


def _fold_layer2(b: _Builder, d2: int, y: int, kind: str) -> None:
    """Layer 2 adds y crossings per piece of g and keeps every kink of g visible."""
    theta = [F(j, y + 1) for j in range(1, y + 1)]
    if y == 0:
        b.fold([(1, 0, 0, 1)], d2)
    elif d2 > y:  # output = g + sum relu(g - theta_j)
        b.fold([(1, 0, 0, 1)] + [(1, -t, 1, 1) for t in theta], d2)
    elif y == 1 and kind == "zigzag":  # one ReLU: relu(2g - 1) sees the peaks only
        b.fold([(2, -1, 1, 1)], d2)
    else:  # all-ReLU: the last neuron faces the other way, so valleys stay visible
        b.fold([(1, -t, 1, 1) for t in theta[:-1]] + [(-1, theta[-1], 1, 1)], d2)


def witness(d1: int, d2: int, x: int, y: int) -> Network:
    """Best known network with hidden widths (d1, d2) and x, y retained ReLUs.

    It has ``best_known(d1, d2, x, y)`` pieces along the line t (input width 1): the sharp
    bound (x + 1)(y + 1) whenever ``reaches_sharp`` is True, else the proven maximum.

    Raises:
        ValueError: unless 0 <= x <= d1, 0 <= y <= d2 and d1, d2 >= 1.

    Example:
        >>> from capacity.pieces import count_pieces
        >>> count_pieces(witness(2, 2, 1, 1)).pieces
        4
    """
    if not (d1 >= 1 and d2 >= 1 and 0 <= x <= d1 and 0 <= y <= d2):
        raise ValueError(f"need 1 <= d, 0 <= x <= d1, 0 <= y <= d2; got d1={d1}, d2={d2}, x={x}, y={y}")
    b = _start()
    kind = _zigzag_layer1(b, d1, x)
    _fold_layer2(b, d2, y, kind)
    return b.network()


def reaches_sharp(d1: int, d2: int, x: int, y: int) -> bool:
    """Whether some network with these widths and retained counts has (x+1)(y+1) pieces.

    Example:
        >>> reaches_sharp(2, 2, 2, 2), reaches_sharp(3, 2, 3, 2)
        (False, True)
    """
    return upper_bound(d1, d2, x, y) == sharp_pieces([x, y])


def upper_bound(d1: int, d2: int, x: int, y: int) -> int:
    """Proven maximum number of pieces along a line (two hidden ReLU layers).

    The sharp bound (x+1)(y+1), lowered to y + 2 (d1 = x = 1), 2y + 3 (d1 = x = 2) and
    x + ceil(x/2) + 2 (d2 = y = 1) where those apply; docs/pieces.md has the proofs.

    Example:
        >>> upper_bound(4, 1, 4, 1)
        8
    """
    bound = sharp_pieces([x, y])
    if d1 == x == 1:
        bound = min(bound, y + 2)
    if d1 == x == 2:
        bound = min(bound, 2 * y + 3)
    if d2 == y == 1:
        bound = min(bound, x + (x + 1) // 2 + 2)
    return bound


def best_known(d1: int, d2: int, x: int, y: int) -> int:
    """Pieces of ``witness(d1, d2, x, y)``, counted exactly."""
    return count_pieces(witness(d1, d2, x, y)).pieces


def zigzag_network(retained: Sequence[int], widths: Sequence[int] | None = None,
                   u: Sequence = (1,)) -> Network:
    """A uniform zigzag with prod(x_l + 1) pieces, any depth, alternating between -1 and +1.

    On the line t * u its kinks sit at t = 2, 3, ..., P (P = prod(x_l + 1) pieces) with
    value (-1)^t at every integer t = 1, ..., P + 1, so it fits ``alternating_points``.

    Args:
        retained: x_l, the ReLUs of each hidden layer.
        widths: d_l > x_l (one linearized neuron per layer carries the signal); default x_l + 1.
        u: the direction of the points in input space (nonzero, exact numbers).

    Raises:
        ValueError: a width not larger than its retained count, or a zero u.

    Example:
        >>> from capacity.pieces import count_pieces
        >>> count_pieces(zigzag_network([2, 1, 1])).pieces
        12
    """
    widths = list(widths) if widths is not None else [x + 1 for x in retained]
    u = tuple(F(v) for v in u)
    norm2 = sum(v * v for v in u)
    if len(widths) != len(retained) or any(d <= x or x < 0 for d, x in zip(widths, retained)) or not norm2:
        raise ValueError(f"need widths d_l > x_l >= 0 and a nonzero u; got {widths}, {list(retained)}, {u}")
    delta = F(1, prod(x + 1 for x in retained[1:]))
    b = _Builder([], [F(1)], F(0))
    x1 = retained[0]
    b.fold([(1, 0, 0, 1)] + [(1, -k, 1, 2 * (-1) ** k) for k in range(1, x1 + 1)], widths[0])
    # layer 1 reads t = delta * (<input, u>/|u|^2 - 1): point i*u sits at t = (i - 1) delta
    first = b.layers[0]
    rows = tuple(tuple(r[0] * delta * v / norm2 for v in u) for r in first.weight)
    bias = tuple(bb - r[0] * delta for r, bb in zip(first.weight, first.bias))
    b.layers[0] = Layer(rows, bias, first.mask)
    for x, d in zip(retained[1:], widths[1:]):
        m = x + 1
        b.fold([(1, 0, 0, m)] + [(1, -F(j, m), 1, 2 * m * (-1) ** j) for j in range(1, x + 1)], d)
    return b.network(scale=2, shift=-1, origin=(0,) * len(u), direction=u)


def alternating_points(n: int, u: Sequence = (1,)) -> list[tuple[tuple, int]]:
    """The paper's dataset: x_i = i * u, y_i = (-1)^i for i = 1..n.

    Example:
        >>> alternating_points(3)
        [((1,), -1), ((2,), 1), ((3,), -1)]
    """
    tidy = lambda v: v.numerator if v.denominator == 1 else v  # noqa: E731
    return [(tuple(tidy(i * F(v)) for v in u), (-1) ** i) for i in range(1, n + 1)]


def alternating_fit(retained: Sequence[int], widths: Sequence[int] | None = None,
                    u: Sequence = (1,)) -> tuple[Network, list]:
    """A network that fits N = prod(x_l + 1) + 1 alternating collinear points exactly.

    This is the constructive side of the capacity bound: the sharp capacity bound
    prod(x_l + 1) + 1 is attained for these points.

    Returns:
        (network, points) with ``network(x) == y`` exactly for every (x, y) in points.

    Example:
        >>> net, points = alternating_fit([3, 2])
        >>> len(points), all(net(x) == y for x, y in points)
        (13, True)
    """
    net = zigzag_network(retained, widths, u)
    return net, alternating_points(sharp_pieces(retained) + 1, u)


def witness_rows(max_width: int = 3) -> list[dict]:
    """One row per (d1, d2, x, y), 1 <= x <= d1 <= max_width, 1 <= y <= d2 <= max_width.

    Each row: sharp bound, proven upper bound, best known (counted exactly on the witness),
    and for the pruned network with all-ReLU widths (x, y) the same three numbers.
    """
    rows = []
    for d1 in range(1, max_width + 1):
        for d2 in range(1, max_width + 1):
            for x in range(1, d1 + 1):
                for y in range(1, d2 + 1):
                    rows.append({"d1": d1, "d2": d2, "x": x, "y": y,
                                 "sharp": sharp_pieces([x, y]),
                                 "upper": upper_bound(d1, d2, x, y),
                                 "best": best_known(d1, d2, x, y),
                                 "pruned_upper": upper_bound(x, y, x, y),
                                 "pruned_best": best_known(x, y, x, y)})
    return rows


def witness_table(max_width: int = 3) -> str:
    """The markdown table of ``witness_rows`` (docs/pieces.md; ``python -m capacity.witnesses --table``).

    Example:
        >>> witness_table(1).splitlines()[2]
        '| 1 | 1 | 1 | 1 | 4 | 3 | 3 | short (proven max 3) | 3 | short (proven max 3) |'
    """
    def status(best, upper, sharp):
        if best == sharp:
            return "**reaches**"
        return f"short (proven max {upper})" if best == upper else f"short, best known {best} <= {upper}"

    lines = ["| d1 | d2 | x | y | sharp (x+1)(y+1) | proven max | linearized: best | linearized | "
             "pruned to (x, y): best | pruned |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in witness_rows(max_width):
        lines.append(f"| {r['d1']} | {r['d2']} | {r['x']} | {r['y']} | {r['sharp']} | {r['upper']} | "
                     f"{r['best']} | {status(r['best'], r['upper'], r['sharp'])} | {r['pruned_best']} | "
                     f"{status(r['pruned_best'], r['pruned_upper'], r['sharp'])} |")
    return "\n".join(lines)


PROG = "python -m capacity.witnesses"

#: Largest --max-width: the table has W^2 (W+1)^2 / 4 rows, each counted exactly
#: (W = 8: 1,296 rows in about 8 s on this 2-core machine; W = 10: 3,025 rows, 27 s).
MAX_TABLE_WIDTH = 8


def build_parser():
    """The command line of ``python -m capacity.witnesses``."""
    from capacity.cli import CommandParser, integer

    parser = CommandParser(
        PROG, failure="output stopped early (the reader went away, e.g. | head)",
        description="Which two-hidden-layer ReLU architectures (d1, d2, x, y) reach the sharp "
                    "pieces bound (x+1)(y+1), counted exactly on the best known witness.",
        epilog="example: python -m capacity.witnesses --max-width 4 --json")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--table", action="store_true", help="markdown table (the default)")
    mode.add_argument("--json", action="store_true", help="the rows as one JSON list")
    parser.add_argument("--max-width", type=integer(1, MAX_TABLE_WIDTH, why=f" (the table grows as N^4: {MAX_TABLE_WIDTH} takes about 8 s)"),
                        default=3, metavar="N",
                        help=f"largest width d1, d2 in the table (default 3, at most "
                             f"{MAX_TABLE_WIDTH}: N^2 (N+1)^2 / 4 rows, each counted exactly)")
    return parser


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m capacity.witnesses [--table | --json] [--max-width N]``.

    Prints the markdown table of docs/pieces.md (default) or its rows as one JSON list.
    Returns 0, or 2 (one line on stderr) for bad arguments.
    """
    import json

    args = build_parser().parse_args(argv)
    print(json.dumps(witness_rows(args.max_width)) if args.json else witness_table(args.max_width))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
