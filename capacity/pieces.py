"""Exact count of the linear pieces of a feed-forward network along a line.

A network with piecewise-linear activations restricted to the line
``origin + t * direction`` is a continuous piecewise-linear function of the scalar ``t``.
This module finds its breakpoints and counts its pieces, for any depth and input width,
with per-neuron masks (1 = activation kept, 0 = linearized, i.e. identity) and pruned
neurons (a zero weight row, or a zero outgoing column). These are the quantities the
capacity bounds of ``capacity.bounds`` speak about.

Two paths:

- exact (default): ints and Fractions end to end. The line is cut into intervals; on each
  interval every neuron is an affine function of ``t``. Each layer cuts every interval
  where a kept neuron's pre-activation crosses an activation threshold, then maps every
  piece through the activation. At the end, adjacent intervals whose output maps are equal
  are merged, so coincident breakpoints, zero weights and duplicate neurons count right.
- fast (``exact=False``): the same algorithm vectorised in float64 with numpy, with
  relative tolerances for zero slopes, coincident breakpoints and equal output slopes.
  The tests check it against the exact path on every generated network.

Command line: ``python -m capacity.pieces NET.json [--json] [--fast] [--time-limit S]`` (see
``main``); the work an exact count needs grows with width x width x pieces, so the command
refuses or stops a count that would not finish within ``--time-limit`` seconds.
The network JSON format is the one of ``DESIGN.md``:
``{"layers": [{"weight": [[...]], "bias": [...], "mask": [1, 0, ...]}, ...],
"output": {"weight": [...], "bias": ...}, "origin": [...], "direction": [...],
"activation": "relu"}``; numbers are ints, floats (converted exactly) or "p/q" strings.

Example:
    >>> net = load_network({"layers": [{"weight": [[1], [1]], "bias": [0, -1]}],
    ...                     "output": {"weight": [1, -2], "bias": 0}})
    >>> count_pieces(net)
    PieceCount(pieces=3, breakpoints=(0, 1))
"""

from __future__ import annotations

import argparse
import json
import sys
from bisect import bisect_left
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain
from math import gcd, isfinite, lcm
from operator import mul
from pathlib import Path
from typing import Any, Sequence

from capacity.cli import CommandParser, UsageError, command, number, read_json, time_limit
from capacity.exact import as_exact, exact_str, unlimited_digits

Number = int | Fraction


class NetworkError(ValueError):
    """A network description that cannot be read (the message says where and why)."""


@dataclass(frozen=True)
class Activation:
    """A continuous piecewise-linear activation with ``p = len(pieces)`` pieces.

    ``thresholds`` are the sorted breakpoints; piece ``i`` (between threshold ``i-1`` and
    threshold ``i``) maps ``z`` to ``slope_i * z + intercept_i``.
    """

    name: str
    thresholds: tuple[Number, ...]
    pieces: tuple[tuple[Number, Number], ...]

    @property
    def p(self) -> int:
        """Number of linear pieces of the activation (ReLU: 2, hard-tanh: 3)."""
        return len(self.pieces)

    def piece_at(self, z: Number) -> tuple[Number, Number]:
        """(slope, intercept) of the piece containing ``z`` (either one at a threshold)."""
        return self.pieces[bisect_left(self.thresholds, z)]


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", (0,), ((0, 0), (1, 0))),
    "hardtanh": Activation("hardtanh", (-1, 1), ((0, -1), (1, 0), (0, 1))),
    "leaky_relu": Activation("leaky_relu", (0,), ((Fraction(1, 100), 0), (1, 0))),
}


@dataclass(frozen=True)
class Layer:
    """One hidden layer: ``weight`` (width x fan-in), ``bias`` (width), ``mask`` (width)."""

    weight: tuple[tuple[Number, ...], ...]
    bias: tuple[Number, ...]
    mask: tuple[int, ...]

    @property
    def width(self) -> int:
        return len(self.bias)


@dataclass(frozen=True)
class Network:
    """A feed-forward network with one scalar output, restricted to a line.

    Attributes:
        layers: the hidden layers, input side first.
        output_weight: weights of the scalar output (length = width of the last layer).
        output_bias: bias of the output.
        origin, direction: the line ``origin + t * direction`` in input space.
        activation: a key of ``ACTIVATIONS``.
    """

    layers: tuple[Layer, ...]
    output_weight: tuple[Number, ...]
    output_bias: Number = 0
    origin: tuple[Number, ...] = (0,)
    direction: tuple[Number, ...] = (1,)
    activation: str = "relu"

    @property
    def widths(self) -> tuple[int, ...]:
        """Width of every hidden layer, pruned neurons included."""
        return tuple(layer.width for layer in self.layers)

    def pruned(self) -> tuple[tuple[bool, ...], ...]:
        """Per layer and neuron: True when the neuron is pruned.

        A neuron is pruned when its incoming weight row is zero (it is a constant, which
        the next layer's bias absorbs) or its outgoing weights are all zero.
        """
        result = []
        for index, layer in enumerate(self.layers):
            if index + 1 < len(self.layers):
                outgoing = [[row[k] for row in self.layers[index + 1].weight]
                            for k in range(layer.width)]
            else:
                outgoing = [[w] for w in self.output_weight]
            result.append(tuple(not any(row) or not any(out)
                                for row, out in zip(layer.weight, outgoing)))
        return tuple(result)

    def retained(self) -> tuple[int, ...]:
        """Per layer, the number of neurons that keep their activation and are not pruned."""
        return tuple(sum(1 for m, cut in zip(layer.mask, pruned) if m and not cut)
                     for layer, pruned in zip(self.layers, self.pruned()))

    def kept(self) -> tuple[int, ...]:
        """Per layer, the number of neurons that are not pruned."""
        return tuple(sum(1 for cut in pruned if not cut) for pruned in self.pruned())

    def __call__(self, point: Sequence[Number]) -> Number:
        """Evaluate the network exactly at an input point (a sequence of numbers)."""
        act = ACTIVATIONS[self.activation]
        h = list(point)
        for layer in self.layers:
            z = [sum((w * v for w, v in zip(row, h)), b)
                 for row, b in zip(layer.weight, layer.bias)]
            h = [_apply(act, v) if m else v for v, m in zip(z, layer.mask)]
        return sum((w * v for w, v in zip(self.output_weight, h)), self.output_bias)


def _apply(act: Activation, z: Number) -> Number:
    slope, intercept = act.piece_at(z)
    return slope * z + intercept


@dataclass(frozen=True)
class PieceCount:
    """Result of ``count_pieces``: number of linear pieces and the sorted breakpoints (in t)."""

    pieces: int
    breakpoints: tuple


@dataclass(frozen=True)
class Restriction:
    """The network along the line: breakpoints and, per piece, output = slope * t + intercept."""

    breakpoints: tuple
    slopes: tuple
    intercepts: tuple = field(repr=False)

    def __call__(self, t):
        i = bisect_left(self.breakpoints, t)
        return self.slopes[i] * t + self.intercepts[i]


# ----------------------------------------------------------------------------- reading


def _number(value: Any, where: str) -> Number:
    """One number from the JSON: int, float (converted exactly) or an "n" / "p/q" string."""
    if isinstance(value, bool):
        raise NetworkError(f"{where} must be a number, got {json.dumps(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not isfinite(value):
            raise NetworkError(f"{where} must be finite, got {value}")
        frac = Fraction(value)
        return frac.numerator if frac.denominator == 1 else frac
    if isinstance(value, (str, Fraction)):
        try:
            return as_exact(value, where)
        except ValueError as err:
            raise NetworkError(str(err)) from None
    raise NetworkError(f"{where} must be a number, got {json.dumps(value, default=str)}")


def _vector(value: Any, where: str, length: int | None = None) -> tuple[Number, ...]:
    if not isinstance(value, (list, tuple)):
        raise NetworkError(f"{where} must be a list of numbers, got {json.dumps(value, default=str)}")
    if length is not None and len(value) != length:
        raise NetworkError(f"{where} must have length {length}, got {len(value)}")
    return tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(value))


def _matrix(value: Any, where: str, columns: int | None) -> tuple[tuple[Number, ...], ...]:
    if not isinstance(value, (list, tuple)):
        raise NetworkError(f"{where} must be a list of rows, got {json.dumps(value, default=str)}")
    rows = []
    for i, row in enumerate(value):
        if columns is None and isinstance(row, (list, tuple)):
            columns = len(row)
        rows.append(_vector(row, f"{where}[{i}]", columns))
    return tuple(rows)


def _mask(value: Any, where: str, width: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * width
    if not isinstance(value, (list, tuple)) or len(value) != width:
        size = len(value) if isinstance(value, (list, tuple)) else json.dumps(value, default=str)
        raise NetworkError(f"{where} must be a list of {width} entries 0/1 (one per neuron), got {size}")
    for i, m in enumerate(value):
        if isinstance(m, bool) or m not in (0, 1):
            raise NetworkError(f"{where}[{i}] must be 0 or 1, got {json.dumps(m, default=str)}")
    return tuple(int(m) for m in value)


def network_from_dict(data: Any) -> Network:
    """Build a ``Network`` from the parsed network JSON (see the module docstring).

    Args:
        data: a dict with "layers", "output" and optionally "origin", "direction",
            "activation". "mask" defaults to all ones; origin/direction default to 0 and 1
            and are required when the input is wider than 1.

    Returns:
        The network, every number an int or a Fraction.

    Raises:
        NetworkError: for a missing key, ragged matrix, wrong length, non-number, unknown
            activation or zero direction; the message names the offending entry.

    Example:
        >>> network_from_dict({"layers": [], "output": {"weight": [], "bias": "1/2"}}).output_bias
        Fraction(1, 2)
    """
    if not isinstance(data, dict):
        raise NetworkError("the network must be a JSON object with keys 'layers' and 'output'")
    for key in ("layers", "output"):
        if key not in data:
            raise NetworkError(f"the network has no {key!r} key")
    activation = data.get("activation", "relu")
    if activation not in ACTIVATIONS:
        raise NetworkError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not isinstance(data["layers"], list):
        raise NetworkError("'layers' must be a list of {weight, bias, mask} objects")
    fan_in = len(data["origin"]) if isinstance(data.get("origin"), list) else None
    if fan_in is None and isinstance(data.get("direction"), list):
        fan_in = len(data["direction"])
    input_width = fan_in
    layers = []
    for index, raw in enumerate(data["layers"]):
        where = f"layers[{index}]"
        if not isinstance(raw, dict) or "weight" not in raw or "bias" not in raw:
            raise NetworkError(f"{where} must be an object with 'weight' and 'bias'")
        weight = _matrix(raw["weight"], f"{where}.weight", fan_in)
        bias = _vector(raw["bias"], f"{where}.bias", len(weight))
        if index == 0 and weight and input_width is None:  # a later layer's rows are not the input
            input_width = len(weight[0])
        mask = _mask(raw.get("mask"), f"{where}.mask", len(weight))
        layers.append(Layer(weight, bias, mask))
        fan_in = len(weight)
    output = data["output"]
    if not isinstance(output, dict) or "weight" not in output:
        raise NetworkError("'output' must be an object with 'weight' and 'bias'")
    if isinstance(output["weight"], list) and output["weight"] and isinstance(output["weight"][0], list):
        if len(output["weight"]) != 1:
            raise NetworkError(f"output.weight must have one row (a single output), got {len(output['weight'])}")
        output = dict(output, weight=output["weight"][0])
    out_bias = output.get("bias", 0)
    if isinstance(out_bias, list):
        if len(out_bias) != 1:
            raise NetworkError(f"output.bias must be one number (a single output), got {len(out_bias)}")
        out_bias = out_bias[0]
    out_weight = _vector(output["weight"], "output.weight", fan_in)
    if input_width is None:
        input_width = 1
    origin = _vector(data.get("origin", [0] * input_width), "origin", input_width)
    direction = _vector(data.get("direction", [1] * input_width if input_width == 1 else None),
                        "direction", input_width)
    if not any(direction):
        raise NetworkError("direction must not be the zero vector")
    return Network(tuple(layers), out_weight, _number(out_bias, "output.bias"),
                   origin, direction, activation)


def load_network(source: str | Path | dict) -> Network:
    """Read a network from a JSON file path or an already parsed dict.

    Raises:
        NetworkError: unreadable file, invalid JSON or an invalid network.

    Example:
        >>> load_network({"layers": [], "output": {"weight": [], "bias": 3}}).widths
        ()
    """
    if isinstance(source, dict):
        return network_from_dict(source)
    try:  # bounded: size, nesting, digits; UTF-8 (a BOM is skipped)
        data = read_json(source, "network file", max_bytes=MAX_NETWORK_BYTES)
    except UsageError as err:
        raise NetworkError(str(err)) from None
    return network_from_dict(data)


#: Largest network file ``load_network`` reads (a 1000 x 1000 layer of floats is ~20 MB).
MAX_NETWORK_BYTES = 64 << 20


def network_to_dict(net: Network) -> dict:
    """The network JSON of ``net`` with exact numbers as strings (inverse of ``load_network``)."""
    s = exact_str
    return {
        "activation": net.activation,
        "layers": [{"weight": [[s(w) for w in row] for row in layer.weight],
                    "bias": [s(b) for b in layer.bias], "mask": list(layer.mask)}
                   for layer in net.layers],
        "output": {"weight": [s(w) for w in net.output_weight], "bias": s(net.output_bias)},
        "origin": [s(v) for v in net.origin],
        "direction": [s(v) for v in net.direction],
    }


_GATE_CONTAINER = "snl_gates"  # where snl_train.gates.add_gates keeps a model's gates


def _sequential_items(module, nn) -> list:
    """The modules a Sequential calls, in order, with each ReLU replaced by its SNL gate.

    ``children()`` would drop a module that appears twice, so the items are read from the
    Sequential itself. A model gated by ``snl_train.gates.add_gates`` keeps its activation
    items (``nn.ReLU``, ``nn.Hardtanh``, ...) but calls the gate ``model.snl_gates.<site>``
    instead; the site of the k-th call (k >= 1) of one activation instance registered as "n"
    is "n_k", as torch.fx names it.
    (capacity does not import snl_train: the gate is recognised by its container.)
    """
    if not isinstance(module, nn.Sequential):
        return [module]
    gated = (nn.ReLU, nn.Hardtanh, nn.LeakyReLU, nn.ReLU6)  # the ReLU family add_gates gates
    container = module._modules.get(_GATE_CONTAINER)
    first_name: dict[int, str] = {}
    calls: dict[int, int] = {}
    items = []
    for name, sub in module._modules.items():
        if name == _GATE_CONTAINER:
            continue
        if container is not None and type(sub) in gated:
            first_name.setdefault(id(sub), name)
            count = calls.get(id(sub), 0)
            calls[id(sub)] = count + 1
            site = first_name[id(sub)] if count == 0 else f"{first_name[id(sub)]}_{count}"
            gate = container._modules.get(site)
            if gate is None:
                raise NetworkError(f"the gated model has no gate for its {type(sub).__name__} {name!r} "
                                   f"(site {site!r})")
            sub = gate
        items.append(sub)
    return items


def from_torch(module, origin=None, direction=None) -> Network:
    """Convert a torch ``nn.Sequential`` of Linear and activation modules to a ``Network``.

    Each hidden Linear may be followed by ``nn.ReLU`` (mask all ones), ``nn.Hardtanh()``,
    ``nn.LeakyReLU(0.01)``, an ``snl_train.gates.ReLUGate`` whose ``c`` is 0/1 per neuron
    (variant "linearize": c = 0 linearizes; variant "zero": c = 0 prunes; the gate's own
    activation, one of those three), or nothing (a linearized layer); all activations of one
    kind; ``nn.Identity`` and ``nn.Flatten`` are skipped wherever they stand. A Sequential
    gated by ``snl_train.gates.add_gates`` counts with its gates (binarize them first). The
    last module must be a Linear with one output.
    Float weights are converted exactly (``Fraction(float)``). torch is imported only here.

    Args:
        module: the ``nn.Sequential``.
        origin, direction: the line; default 0 and 1 for a one-dimensional input.

    Raises:
        NetworkError: an unsupported module, a non-binary gate, mixed activations, several
            outputs, or a missing line for an input wider than 1.

    Example:
        >>> import torch.nn as nn                                   # doctest: +SKIP
        >>> count_pieces(from_torch(nn.Sequential(nn.Linear(1, 3), nn.ReLU(),   # doctest: +SKIP
        ...                                       nn.Linear(3, 1)))).pieces <= 4
        True
    """
    import torch.nn as nn  # heavy import only when a torch model is converted

    modules = _sequential_items(module, nn)
    linears: list = []
    acts: list = []
    names = {nn.ReLU: "relu", nn.Hardtanh: "hardtanh", nn.LeakyReLU: "leaky_relu"}
    for index, sub in enumerate(modules):
        if isinstance(sub, nn.Linear):
            linears.append(sub)
            acts.append(None)
        elif isinstance(sub, (nn.Identity, nn.Flatten)):  # no-ops on a batch of vectors, anywhere
            continue
        elif not linears or acts[-1] is not None:
            raise NetworkError(f"module {index} ({type(sub).__name__}) must follow a Linear layer")
        elif type(sub) in names:
            acts[-1] = sub
        elif type(sub).__name__ == "ReLUGate" and hasattr(sub, "c"):
            acts[-1] = sub
        else:
            raise NetworkError(f"module {index} ({type(sub).__name__}) is not Linear, ReLU, Hardtanh, LeakyReLU or ReLUGate")
    if not linears or acts[-1] is not None or linears[-1].out_features != 1:
        raise NetworkError("the model must end with a Linear layer with one output")
    kinds = set()  # the activations used; a model whose layers mix kinds cannot be one Network
    layers = []
    for lin, act in zip(linears[:-1], acts[:-1]):
        weight = [[_number(float(w), "weight") for w in row] for row in lin.weight.detach().double().tolist()]
        bias = ([_number(float(b), "bias") for b in lin.bias.detach().double().tolist()]
                if lin.bias is not None else [0] * lin.out_features)
        mask = [1] * lin.out_features
        if act is None:
            mask = [0] * lin.out_features
        elif type(act).__name__ == "ReLUGate":
            if type(act.c).__name__ == "UninitializedParameter":
                raise NetworkError("a ReLUGate has no c yet: run one forward pass (materialize_gates) first")
            cs = act.c.detach().reshape(-1).double().cpu().tolist()
            if len(cs) != lin.out_features or any(c not in (0.0, 1.0) for c in cs):
                raise NetworkError("a ReLUGate must have one c per neuron, each 0 or 1 (binarize it first)")
            kinds.add(_gate_kind(act))
            if getattr(act, "variant", "linearize") == "zero":
                weight = [row if c else [0] * len(row) for row, c in zip(weight, cs)]
                bias = [b if c else 0 for b, c in zip(bias, cs)]
            else:
                mask = [int(c) for c in cs]
        else:
            kind = names[type(act)]
            if kind == "hardtanh" and (act.min_val, act.max_val) != (-1.0, 1.0):
                raise NetworkError("only Hardtanh(-1, 1) is supported")
            if kind == "leaky_relu" and act.negative_slope != 0.01:
                raise NetworkError("only LeakyReLU(0.01) is supported")
            kinds.add(kind)
        layers.append(Layer(tuple(map(tuple, weight)), tuple(bias), tuple(mask)))
    if len(kinds) > 1:
        raise NetworkError(f"all activations of the model must be of one kind, got {', '.join(sorted(kinds))}")
    activation = kinds.pop() if kinds else "relu"
    last = linears[-1]
    out_weight = tuple(_number(float(w), "weight") for w in last.weight.detach().double().reshape(-1).tolist())
    out_bias = _number(float(last.bias.item()), "bias") if last.bias is not None else 0
    width = linears[0].in_features
    if origin is None and direction is None and width != 1:
        raise NetworkError(f"the input has {width} features: give origin and direction")
    origin = tuple(_vector(list(origin), "origin", width)) if origin is not None else (0,) * width
    direction = tuple(_vector(list(direction), "direction", width)) if direction is not None else (1,) * width
    if not any(direction):
        raise NetworkError("direction must not be the zero vector")
    return Network(tuple(layers), out_weight, out_bias, origin, direction, activation)


def _gate_kind(gate) -> str:
    """The key of ``ACTIVATIONS`` an SNL gate stands for (its ``activation``; ReLU if none)."""
    spec = getattr(gate, "activation", None)
    family = getattr(spec, "family", "relu")
    if family == "relu":
        return "relu"
    if family == "hardtanh" and (spec.low, spec.high) == (-1.0, 1.0):
        return "hardtanh"
    if family == "leaky_relu" and spec.slope == 0.01:
        return "leaky_relu"
    raise NetworkError(f"a ReLUGate for {spec} is not supported: only ReLU, Hardtanh(-1, 1) "
                       "and LeakyReLU(0.01) gates are")


# ----------------------------------------------------------------------------- exact path
#
# All maps of one layer share one denominator, so the arithmetic is on Python ints and a
# Fraction is built only for a breakpoint, a representative point and the final output
# (Fraction arithmetic normalises with a gcd after every operation, which dominated).


def _scaled(values) -> tuple[list[int], int]:
    """Integers n_i and one denominator D > 0 with values_i = n_i / D."""
    den = lcm(*(Fraction(v).denominator for v in values))  # lcm() = 1
    return [int(v * den) for v in values], den


def _representative(lo, hi):
    """A point strictly inside the interval (lo, hi); None stands for -inf / +inf."""
    if lo is None:
        return Fraction(0) if hi is None else hi - 1
    return lo + 1 if hi is None else (lo + hi) / 2


def _cuts(za, zc, scale, kept, thresholds, lo, hi) -> list:
    """Where kept neurons z_k = (za_k t + zc_k) / scale cross a threshold, inside (lo, hi)."""
    cuts = set()
    for k in kept:
        den = za[k]
        if not den:
            continue
        for theta in thresholds:
            num = theta * scale - zc[k]
            if den < 0:
                num, den_ = -num, -den
            else:
                den_ = den
            # compare num/den_ with lo and hi in integers; build a Fraction only when inside
            if lo is not None and num * lo.denominator <= lo.numerator * den_:
                continue
            if hi is not None and num * hi.denominator >= hi.numerator * den_:
                continue
            cuts.add(Fraction(num, den_))
    return sorted(cuts)


def _exact_layers(net: Network):
    """Yield ``(den, breaks, maps)`` after each hidden layer, exactly.

    ``breaks`` are the sorted breakpoints (in t) of the map from t to the outputs of every
    layer so far; on the i-th interval between them that map is ``(a t + c) / den`` with
    integer vectors ``(a, c) = maps[i]`` over the current layer's neurons. Before the first
    layer it is the input line (no breakpoint).
    """
    act = ACTIVATIONS[net.activation]
    thresholds = act.thresholds
    act_num, act_den = _scaled([v for piece in act.pieces for v in piece])
    act_pieces = list(zip(act_num[0::2], act_num[1::2]))  # (slope, intercept) * act_den
    a0, d0 = _scaled(list(net.direction) + list(net.origin))
    fan = len(net.direction)
    den, breaks, maps = d0, [], [(a0[:fan], a0[fan:])]
    yield den, breaks, maps
    for layer in net.layers:
        flat, w_den = _scaled([w for row in layer.weight for w in row])
        fan = len(layer.weight[0]) if layer.width else 0
        rows = [flat[k * fan:(k + 1) * fan] for k in range(layer.width)]
        bias, b_den = _scaled(list(layer.bias))
        scale = w_den * den * b_den  # pre-activations z = (za t + zc) / scale
        bias_term = [b * w_den * den for b in bias]
        kept = [k for k, m in enumerate(layer.mask) if m]
        new_breaks: list = []
        new_maps: list = []
        for i, (a, c) in enumerate(maps):
            za = [sum(map(mul, row, a)) * b_den for row in rows]
            zc = [sum(map(mul, row, c)) * b_den + bt for row, bt in zip(rows, bias_term)]
            lo = breaks[i - 1] if i > 0 else None
            hi = breaks[i] if i < len(breaks) else None
            points = [lo, *_cuts(za, zc, scale, kept, thresholds, lo, hi), hi]
            for left, right in zip(points, points[1:]):
                t = _representative(left, right)
                tn, td = t.numerator, t.denominator
                na = [v * act_den for v in za]
                nc = [v * act_den for v in zc]
                for k in kept:
                    z = za[k] * tn + zc[k] * td  # = scale * td * z_k(t)
                    index = sum(1 for th in thresholds if th * (scale * td) < z)
                    slope, intercept = act_pieces[index]
                    na[k] = slope * za[k]
                    nc[k] = slope * zc[k] + intercept * scale
                new_maps.append((na, nc))
                if right is not None:
                    new_breaks.append(right)
        den, breaks, maps = scale * act_den, new_breaks, new_maps
        divisor = gcd(den, *(v for a, c in maps for v in a), *(v for a, c in maps for v in c))
        den //= divisor  # keep the integers small
        maps = [([v // divisor for v in a], [v // divisor for v in c]) for a, c in maps]
        yield den, breaks, maps


def layer_breakpoints(net: Network) -> tuple[tuple, ...]:
    """Per hidden layer l, the breakpoints K_l (in t) of the map t -> outputs of layers 1..l.

    These are the sets of the induction behind the sharp bound: layer l + 1 keeps every
    point of K_l and adds, for each kept neuron, the points inside an interval of K_l where
    its (affine) pre-activation crosses a threshold of the activation.

    Example:
        >>> net = load_network({"layers": [{"weight": [[1], [1]], "bias": [0, -1]},
        ...     {"weight": [[1, -1]], "bias": ["-1/2"]}], "output": {"weight": [1]}})
        >>> layer_breakpoints(net)
        ((0, 1), (0, Fraction(1, 2), 1))
    """
    layers = list(_exact_layers(net))[1:]
    return tuple(tuple(_tidy(t) for t in breaks) for _, breaks, _ in layers)


def restrict(net: Network) -> Restriction:
    """The network along its line, exactly: breakpoints and one affine map per piece.

    Returns:
        A ``Restriction`` whose breakpoints are exactly the points where the output's
        slope changes (merged: adjacent pieces always have different maps).

    Example:
        >>> net = load_network({"layers": [{"weight": [[1]], "bias": [0]}],
        ...                     "output": {"weight": [1], "bias": 0}})
        >>> restrict(net).slopes
        (0, 1)
    """
    *_, (den, breaks, maps) = _exact_layers(net)
    out, o_den = _scaled(list(net.output_weight))
    (o_bias,), ob_den = _scaled([net.output_bias])
    out_scale = o_den * den * ob_den
    pieces = [(sum(map(mul, out, a)) * ob_den, sum(map(mul, out, c)) * ob_den + o_bias * o_den * den)
              for a, c in maps]
    merged_breaks, merged = [], [pieces[0]]
    for t, piece in zip(breaks, pieces[1:]):
        if piece != merged[-1]:
            merged_breaks.append(t)
            merged.append(piece)
    return Restriction(tuple(_tidy(t) for t in merged_breaks),
                       tuple(_tidy(Fraction(s, out_scale)) for s, _ in merged),
                       tuple(_tidy(Fraction(c, out_scale)) for _, c in merged))


def _tidy(value):
    return value.numerator if isinstance(value, Fraction) and value.denominator == 1 else value


# ----------------------------------------------------------------------------- fast path


def _floats(values) -> list[float]:
    """Correctly rounded floats of ints and Fractions (twice as fast as ``float(Fraction)``)."""
    values = list(values)
    try:
        return [v.numerator / v.denominator for v in values]
    except AttributeError:  # a float slipped in (Network built by hand)
        return [float(v) for v in values]


def _restrict_fast(net: Network, tol: float = 1e-9):
    """Float64 breakpoints of the output along the line (numpy, vectorised per layer)."""
    import numpy as np  # only the fast path needs numpy

    act = ACTIVATIONS[net.activation]
    thresholds = np.array([float(v) for v in act.thresholds])
    piece_slope = np.array([float(s) for s, _ in act.pieces])
    piece_icpt = np.array([float(c) for _, c in act.pieces])
    breaks = np.empty(0)
    a = np.array([[float(v) for v in net.direction]])
    c = np.array([[float(v) for v in net.origin]])
    for layer in net.layers:
        if layer.width == 0:
            a = np.zeros((len(breaks) + 1, 0))
            c = np.zeros((len(breaks) + 1, 0))
            continue
        w = np.array(_floats(chain.from_iterable(layer.weight))).reshape(layer.width, -1)
        b = np.array(_floats(layer.bias))
        mask = np.array(layer.mask, dtype=bool)
        za = a @ w.T
        zc = c @ w.T + b
        # a slope that is zero in exact arithmetic may come out as rounding noise, which is
        # at most n * eps * sum_i |a_i w_i| <= n * eps * |a| |w| (Cauchy-Schwarz)
        norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(w, axis=1)[None, :]
        za[np.abs(za) <= 1e-12 * norms] = 0.0
        lo = np.concatenate(([-np.inf], breaks))[:, None, None]
        hi = np.concatenate((breaks, [np.inf]))[:, None, None]
        kept_a, kept_c = za[:, mask, None], zc[:, mask, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (thresholds[None, None, :] - kept_c) / kept_a
            gap = tol * (1.0 + np.abs(t))
            inside = np.isfinite(t) & (t > lo + gap) & (t < hi - gap)
        new = np.sort(np.concatenate((breaks, t[inside])))
        if new.size:
            keep = np.concatenate(([True], np.diff(new) > tol * (1.0 + np.abs(new[1:]))))
            new = new[keep]
        rep = np.concatenate((new, [0.0]))
        if new.size:
            mids = (new[:-1] + new[1:]) / 2
            rep = np.concatenate(([new[0] - 1.0], mids, [new[-1] + 1.0]))
        parent = np.searchsorted(breaks, rep)
        pa, pc = za[parent], zc[parent]
        z = pa * rep[:, None] + pc
        piece = np.searchsorted(thresholds, z)
        s = np.where(mask, piece_slope[piece], 1.0)
        icpt = np.where(mask, piece_icpt[piece], 0.0)
        a, c = s * pa, s * pc + icpt
        breaks = new
    v = np.array(_floats(net.output_weight))
    slopes = a @ v  # one per piece (a layer of width 0 leaves a with no columns: zeros)
    scale = max(1.0, float(np.abs(slopes).max()))
    changed = np.abs(np.diff(slopes)) > tol * scale
    return breaks[changed]


# ----------------------------------------------------------------------------- public API


def sampled_pieces(net: Network, lo, hi, samples: int, tol=0) -> int:
    """The naive count this module replaces: slope changes of a sampled polyline.

    Evaluates the network (exactly) at ``samples + 1`` equally spaced values of t in
    [lo, hi], and counts 1 + the number of consecutive secant slopes differing by more than
    ``tol`` (relative to the largest slope). It miscounts: a kink strictly inside a sampling
    interval shows up as two slope changes, kinks closer than ``tol`` allows merge, kinks
    outside [lo, hi] are missed. Kept for comparisons (see docs/pieces.md).

    Example:
        >>> net = load_network({"layers": [{"weight": [[1]], "bias": ["-1/4"]}],
        ...                     "output": {"weight": [1]}})
        >>> count_pieces(net).pieces, sampled_pieces(net, -1, 1, 20)
        (2, 3)
    """
    lo, hi = Fraction(lo), Fraction(hi)
    ts = [lo + (hi - lo) * i / samples for i in range(samples + 1)]
    values = [net([o + t * d for o, d in zip(net.origin, net.direction)]) for t in ts]
    slopes = [(v1 - v0) / (t1 - t0) for t0, t1, v0, v1 in zip(ts, ts[1:], values, values[1:])]
    scale = max([abs(s) for s in slopes] + [1])
    return 1 + sum(1 for s0, s1 in zip(slopes, slopes[1:]) if abs(s1 - s0) > tol * scale)




def count_pieces(net: Network, exact: bool = True) -> PieceCount:
    """Number of linear pieces of the network's output along its line, and the breakpoints.

    Args:
        net: a ``Network`` (see ``load_network``, ``from_torch``).
        exact: True for Fractions end to end (breakpoints are ints/Fractions); False for the
            vectorised float64 path (breakpoints are floats).

    Returns:
        ``PieceCount(pieces, breakpoints)`` with ``pieces == len(breakpoints) + 1``.

    Example:
        >>> net = load_network({"activation": "hardtanh",
        ...     "layers": [{"weight": [[1]], "bias": [0]}], "output": {"weight": [1]}})
        >>> count_pieces(net).pieces
        3
    """
    if exact:
        breaks = restrict(net).breakpoints
    else:
        breaks = tuple(float(t) for t in _restrict_fast(net))
    return PieceCount(len(breaks) + 1, breaks)


def bounds_report(net: Network) -> dict:
    """The paper's and the sharp bounds that apply to ``net``'s architecture and mask.

    Returns:
        A dict with "widths", "kept" (not pruned), "retained" (kept with activation), "p",
        "sharp" ({"pieces", "capacity"}: prod((p-1) x_l + 1), + 1) and "paper": for two hidden
        layers, {"statement", "pieces", "capacity"} of Theorem 1 (all kept, all active),
        Corollary 1 (linearized), Corollary 2 (pruned, the rest active) or Corollary 1 on the
        pruned widths (both); None for other depths. Pieces bound = capacity bound - 1.

    Example:
        >>> net = load_network({"layers": [{"weight": [[1]], "bias": [0]},
        ...     {"weight": [[1]], "bias": [0]}], "output": {"weight": [1]}})
        >>> bounds_report(net)["paper"]["statement"]
        'Theorem 1'
    """
    from capacity.bounds import corollary1_counts, corollary2_counts, sharp_pieces, theorem1

    p = ACTIVATIONS[net.activation].p
    widths, kept, retained = net.widths, net.kept(), net.retained()
    sharp = sharp_pieces(retained, p)
    paper = None
    if len(widths) == 2:
        (d1, d2), (k1, k2), (x, y) = widths, kept, retained
        pruned = kept != widths
        linearized = retained != kept
        if not pruned and not linearized:
            statement, capacity = "Theorem 1", theorem1(d1, d2, p)
        elif not pruned:
            statement, capacity = "Corollary 1", corollary1_counts(x, y, d1, d2, p)
        elif not linearized:
            statement, capacity = "Corollary 2", corollary2_counts(k1, k2, d1, d2, p)
        elif k1 and k2:
            statement, capacity = "Corollary 1 (pruned widths)", corollary1_counts(x, y, k1, k2, p)
        else:
            statement, capacity = "Corollary 2", corollary2_counts(x, y, d1, d2, p)
        paper = {"statement": statement, "pieces": capacity - 1, "capacity": capacity}
    return {"widths": list(widths), "kept": list(kept), "retained": list(retained), "p": p,
            "sharp": {"pieces": sharp, "capacity": sharp + 1}, "paper": paper}


def _report(net: Network, fast: bool) -> dict:
    count = count_pieces(net, exact=not fast)
    show = repr if fast else exact_str
    report = {"pieces": count.pieces, "breakpoints": [show(t) for t in count.breakpoints],
              "exact": not fast}
    report.update(bounds_report(net))
    for key in ("sharp", "paper"):
        if report[key] is not None:
            report[key] = {k: exact_str(v) if isinstance(v, (int, Fraction)) else v
                           for k, v in report[key].items()}
    return report


def _text(report: dict) -> str:
    lines = [f"pieces:      {report['pieces']}",
             f"breakpoints: {', '.join(report['breakpoints']) or '(none)'}",
             f"widths {report['widths']}, kept {report['kept']}, retained {report['retained']}, p = {report['p']}",
             f"sharp bound: {report['sharp']['pieces']} pieces (capacity <= {report['sharp']['capacity']})"]
    paper = report["paper"]
    if paper:
        lines.append(f"paper bound ({paper['statement']}): {paper['pieces']} pieces "
                     f"(capacity <= {paper['capacity']})")
    else:
        lines.append("paper bound: stated for two hidden layers only")
    return "\n".join(lines)


PROG = "python -m capacity.pieces"

#: Multiply-adds per second of the exact path on this 2-core machine (256 x 256: ~3 s).
EXACT_RATE = 5_000_000


def exact_work(data: Any) -> int:
    """A lower bound on the multiply-adds of an exact count, from the parsed network JSON.

    Every layer works on every interval of the line that the layers before it cut; the
    first layer's breakpoints are never merged away before the end, so each later layer
    sees at least as many intervals as the first layer makes: sum over layers of
    intervals * width * fan-in. Only the first layer's numbers are read (a file that is
    malformed elsewhere gives 0 here and its error from ``network_from_dict``).

    Example:
        >>> exact_work({"layers": [{"weight": [[1], [1]], "bias": [0, -1]},
        ...     {"weight": [[1, 1]], "bias": [0]}], "output": {"weight": [1]}})
        8
    """
    try:
        raw_layers = data["layers"]
        first = network_from_dict({**data, "layers": raw_layers[:1],
                                   "output": {"weight": [0] * len(raw_layers[0]["weight"])}})
        widths = [len(layer["weight"]) for layer in raw_layers]
    except (NetworkError, KeyError, TypeError, IndexError):
        return 0
    layer, thresholds = first.layers[0], ACTIVATIONS[first.activation].thresholds
    kinks = set()
    for row, bias, kept in zip(layer.weight, layer.bias, layer.mask):
        slope = sum(map(mul, row, first.direction))
        if kept and slope:
            offset = sum(map(mul, row, first.origin), bias)
            kinks.update(Fraction(theta - offset) / slope for theta in thresholds)
    fans = [len(first.direction), *widths]
    return widths[0] * fans[0] + (len(kinks) + 1) * sum(w * f for w, f in zip(widths[1:], fans[1:]))


def _check_work(data: Any, fast: bool, seconds: float) -> None:
    """Refuse an exact count that cannot finish within ``seconds`` (0: no limit)."""
    if fast or seconds <= 0:
        return
    work = exact_work(data)
    if work > EXACT_RATE * seconds:
        widths = [len(layer["weight"]) for layer in data["layers"]]
        raise UsageError(f"an exact count for widths {widths} needs at least {work:.2g} "
                         f"multiply-adds (about {work / EXACT_RATE:,.0f} s here), more than "
                         f"--time-limit {seconds:g}: use --fast (float64), or --time-limit 0 to "
                         "count exactly anyway")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m capacity.pieces``."""
    parser = CommandParser(
        PROG, failure="output stopped early (the reader went away, e.g. | head)",
        description="Count the linear pieces of a network (network JSON, see DESIGN.md) along "
                    "the line origin + t * direction, exactly, and print the paper's and the "
                    "sharp bound for its architecture and mask.",
        epilog="example: python -m capacity.pieces examples/net.json --json")
    parser.add_argument("network", help="network JSON file (UTF-8, at most 64 MB)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (exact numbers as strings)")
    parser.add_argument("--fast", action="store_true", help="float64 numpy path instead of exact Fractions")
    parser.add_argument("--time-limit", type=number(minimum=0), default=20.0, metavar="SECONDS",
                        help="refuse a count that would take longer, stop one that does "
                             "(default 20; 0: no limit)")
    return parser


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m capacity.pieces NET.json [--json] [--fast] [--time-limit S]``.

    Returns 0 on success, 2 (after one line on stderr) for a bad file or arguments, or a
    count that would take longer than the time limit.
    """
    args = build_parser().parse_args(argv)
    stop = (f"stopped after {args.time_limit:g} s (--time-limit): "
            + ("use --time-limit 0 for no limit" if args.fast else
               "use --fast (float64), or --time-limit 0 for no limit"))
    with time_limit(args.time_limit, stop), unlimited_digits():
        try:
            data = read_json(args.network, "network file", max_bytes=MAX_NETWORK_BYTES)
            _check_work(data, args.fast, args.time_limit)
            report = _report(network_from_dict(data), args.fast)
        except NetworkError as err:
            raise UsageError(str(err)) from None
        except OverflowError:  # an exact number beyond float64 on the fast path
            raise UsageError("a number of the network is too large for --fast (float64); "
                             "count exactly (without --fast)") from None
        text = json.dumps(report) if args.json else _text(report)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
