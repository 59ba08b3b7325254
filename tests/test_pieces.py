"""Tests of capacity.pieces: exact counts, bounds on generated networks, fast path, CLI."""

import json
import subprocess
import sys
from fractions import Fraction as F
from pathlib import Path

import pytest
from hypothesis import example, given

from capacity.bounds import corollary1_counts, corollary2_counts, sharp_pieces, theorem1
from capacity.pieces import (
    ACTIVATIONS,
    Layer,
    Network,
    NetworkError,
    PieceCount,
    bounds_report,
    count_pieces,
    layer_breakpoints,
    load_network,
    main,
    restrict,
    sampled_pieces,
)
from capacity.strategies import ALL_ACTIVATIONS, networks, two_layer_networks


def one_layer(rows, bias, out, mask=None, activation="relu", out_bias=0):
    """A one-hidden-layer network on the line t (input width 1)."""
    mask = mask or [1] * len(rows)
    return Network((Layer(tuple((F(r),) for r in rows), tuple(map(F, bias)), tuple(mask)),),
                   tuple(map(F, out)), F(out_bias), activation=activation)


@pytest.mark.parametrize("net, pieces, breakpoints", [
    (one_layer([1], [0], [1]), 2, (0,)),
    (one_layer([1], [0], [1], activation="hardtanh"), 3, (-1, 1)),
    (one_layer([1], [0], [1], activation="leaky_relu"), 2, (0,)),
    (one_layer([1], [0], [1], mask=[0]), 1, ()),                    # linearized
    (one_layer([1, 1], [0, 0], [1, -1]), 1, ()),                    # duplicates cancel
    (one_layer([1, 2], [-1, -2], [1, 1]), 2, (1,)),                 # coincident kinks add
    (one_layer([1, -1], [0, 0], [1, 1]), 2, (0,)),                  # |t|
    (one_layer([1, -1], [0, 0], [1, -1]), 1, ()),                   # relu(t) - relu(-t) = t
    (one_layer([0, 3], [5, -1], [7, 1]), 2, (F(1, 3),)),            # zero weight: constant
    (one_layer([1, 1, 1], [0, -1, -2], [1, -2, 1]), 4, (0, 1, 2)),  # a hat, then slope 0
])
def test_pinned_counts(net, pieces, breakpoints):
    """Hand-checked networks have exactly the stated pieces and breakpoints, on both paths."""
    assert count_pieces(net) == PieceCount(pieces, breakpoints)
    fast = count_pieces(net, exact=False)
    assert fast.pieces == pieces
    assert fast.breakpoints == pytest.approx([float(b) for b in breakpoints])


def test_two_layers_with_fraction_breakpoints():
    """Layer 2 breaks where layer-1 pieces cross zero: exact rationals, not floats."""
    net = load_network({
        "layers": [{"weight": [[1], [1], [1]], "bias": [0, -1, "-3/2"], "mask": [1, 1, 0]},
                   {"weight": [[1, -2, 0], [0, 1, 1]], "bias": [0, 0]}],
        "output": {"weight": [1, 1], "bias": 0}})
    assert count_pieces(net).breakpoints == (0, 1, F(5, 4), 2)


def _points(net, restriction):
    """Breakpoints, midpoints between them and points beyond both ends."""
    b = list(restriction.breakpoints)
    ts = [F(-1000), F(1000)] + b + [F(x + y) / 2 for x, y in zip(b, b[1:])]  # exact midpoints
    if b:
        ts += [b[0] - 1, b[-1] + 1]
    return ts


@given(networks(activations=ALL_ACTIVATIONS, prune=True))
@example(one_layer([1, 1], [9, 0], [1, 1]))  # integer kinks -9, 0: the midpoint must stay exact
def test_restriction_is_the_network(net):
    """The exact restriction equals the network at every test point, and adjacent pieces differ."""
    r = restrict(net)
    for t in _points(net, r):
        assert r(t) == net([o + t * d for o, d in zip(net.origin, net.direction)])
    assert all(s0 != s1 for s0, s1 in zip(r.slopes, r.slopes[1:]))
    assert list(r.breakpoints) == sorted(set(r.breakpoints))


@given(networks(activations=ALL_ACTIVATIONS, prune=True))
def test_fast_equals_exact(net):
    """The float64 path finds the same number of pieces and the same breakpoints."""
    exact, fast = count_pieces(net), count_pieces(net, exact=False)
    assert fast.pieces == exact.pieces
    assert fast.breakpoints == pytest.approx([float(b) for b in exact.breakpoints], rel=1e-9, abs=1e-9)


@given(two_layer_networks(masks=False))
def test_theorem1(net):
    """All-ReLU, two hidden layers: pieces <= Theorem 1 - 1 (capacity <= pieces + 1)."""
    d1, d2 = net.widths
    assert count_pieces(net).pieces <= theorem1(d1, d2) - 1


@given(two_layer_networks(masks=True, activations=ALL_ACTIVATIONS))
def test_corollary1(net):
    """Linearized, two hidden layers, any p: pieces <= Corollary 1 - 1."""
    (d1, d2), (x, y) = net.widths, net.retained()
    p = ACTIVATIONS[net.activation].p
    assert count_pieces(net).pieces <= corollary1_counts(x, y, d1, d2, p) - 1


@given(two_layer_networks(masks=False, prune=True))
def test_corollary2(net):
    """Pruned (the rest ReLU), two hidden layers: pieces <= Corollary 2 - 1 for the kept widths."""
    (d1, d2), (k1, k2) = net.widths, net.kept()
    assert count_pieces(net).pieces <= corollary2_counts(k1, k2, d1, d2) - 1


@given(networks(max_depth=4, activations=ALL_ACTIVATIONS, prune=True))
@example(one_layer([1, 1, 1], [0, -1, -2], [1, -2, 1]))
def test_sharp_bound_any_depth(net):
    """Any depth, mask, pruning and activation: pieces <= prod((p-1) x_l + 1)."""
    p = ACTIVATIONS[net.activation].p
    assert count_pieces(net).pieces <= sharp_pieces(net.retained(), p)


def test_sampling_miscounts():
    """Slope changes on a grid miscount what the exact counter gets right (docs/pieces.md)."""
    kink = one_layer([1], [F(-1, 4)], [1])           # one kink at 1/4, between grid points
    assert count_pieces(kink).pieces == 2
    assert sampled_pieces(kink, -1, 1, 20) == 3
    assert sampled_pieces(kink, -1, 1, 1999) == 3  # a finer grid does not help
    near = one_layer([1, 1], [F(-1, 2), F(-1, 2) - F(1, 10**5)], [1, 1])  # kinks 1e-5 apart
    assert count_pieces(near).pieces == 3
    assert sampled_pieces(near, -1, 1, 20, tol=F(1, 1000)) == 2
    far = one_layer([1], [-5], [1])                  # the kink is outside the window
    assert sampled_pieces(far, -1, 1, 100) == 1 and count_pieces(far).pieces == 2


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "net.json"


@pytest.mark.parametrize("which, samples, expected", [
    ("witness", 100, 31), ("witness", 1000, 31), ("example", 100, 8), ("example", 1000, 6)])
def test_sampling_doubles_kinks_between_samples(which, samples, expected):
    """A kink strictly inside a sampling interval counts twice, one on a grid point once
    (docs/pieces.md): the 16-piece witness reads 31 at any of these resolutions."""
    from capacity.witnesses import witness

    net = witness(3, 3, 3, 3) if which == "witness" else load_network(EXAMPLE)
    kinks = count_pieces(net).breakpoints
    lo, hi = kinks[0] - 1, kinks[-1] + 1
    step = (hi - lo) / samples
    offsets = [(k - lo) / step for k in kinks]
    on_grid = sum(1 for o in offsets if o.denominator == 1)
    cells = sorted(int(o) for o in offsets if o.denominator != 1)
    assert all(b - a > 1 for a, b in zip(cells, cells[1:]))  # no two in one or adjacent cells
    assert 1 + on_grid + 2 * len(cells) == expected
    assert sampled_pieces(net, lo, hi, samples) == expected


def test_coarse_sampling_undercounts():
    """With 10 samples the example's five kinks fall in cells 2, 3 (inside), 5 (on the
    grid), 6, 7 (inside): adjacent cells share slope changes, 7 changes, 8 pieces; the
    witness's 15 kinks crowd into 10 cells and read fewer than 16 pieces."""
    from capacity.witnesses import witness

    assert sampled_pieces(load_network(EXAMPLE), F(-1, 2), F(7, 2), 10) == 8
    assert count_pieces(load_network(EXAMPLE)).pieces == 6
    assert sampled_pieces(witness(3, 3, 3, 3), F(-7, 4), F(11, 2), 10) < 16


def test_from_torch_with_gates():
    """A torch Sequential with a 0/1 ReLUGate counts like its network JSON."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch
    from snl_train.gates import ReLUGate

    lin1, lin2 = torch.nn.Linear(1, 3), torch.nn.Linear(3, 1)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0], [1.0], [1.0]]))
        lin1.bias.copy_(torch.tensor([0.0, -1.0, -2.0]))
        lin2.weight.copy_(torch.tensor([[1.0, -2.0, 1.0]]))
        lin2.bias.zero_()
    gate = ReLUGate()
    model = torch.nn.Sequential(lin1, gate, lin2)
    model(torch.zeros(2, 1))
    assert count_pieces(from_torch(model)).pieces == 4
    with torch.no_grad():
        gate.c.copy_(torch.tensor([1.0, 0.0, 1.0]))
    net = from_torch(model)
    assert net.layers[0].mask == (1, 0, 1)
    assert count_pieces(net).breakpoints == (0, 2)
    plain = from_torch(torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2))
    assert count_pieces(plain).breakpoints == (0, 1, 2)
    with pytest.raises(NetworkError):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)))


@pytest.mark.parametrize("variant", ["linearize", "zero"])
def test_from_torch_gated_by_add_gates(variant):
    """A Sequential gated by add_gates (one ReLU module reused at two sites, an excluded
    site) reads its gates: masks follow c, and the network equals the model on a grid."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch
    from snl_train.gates import add_gates, gate_sites

    torch.manual_seed(1)
    relu = torch.nn.ReLU()
    model = torch.nn.Sequential(torch.nn.Linear(1, 4), relu, torch.nn.Linear(4, 3), relu,
                                torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1)).double()
    assert [layer.mask for layer in from_torch(model).layers] == [(1,) * 4, (1,) * 3, (1,) * 2]
    add_gates(model, variant=variant, exclude=["5"], example_input=torch.zeros(2, 1, dtype=torch.float64))
    gates = dict(gate_sites(model))
    assert sorted(gates) == ["1", "1_1"]  # the reused ReLU has a gate per call site
    with torch.no_grad():
        gates["1"].c.copy_(torch.tensor([1.0, 0.0, 1.0, 0.0]))
        gates["1_1"].c.copy_(torch.tensor([0.0, 1.0, 1.0]))
    net = from_torch(model)
    if variant == "linearize":
        assert [layer.mask for layer in net.layers] == [(1, 0, 1, 0), (0, 1, 1), (1, 1)]
    else:  # c = 0 outputs 0: the neuron is pruned, its activation stays
        assert [layer.mask for layer in net.layers] == [(1, 1, 1, 1), (1, 1, 1), (1, 1)]
        assert net.pruned()[0] == (False, True, False, True)
    ts = [F(k, 8) for k in range(-40, 41)]
    with torch.no_grad():
        out = model(torch.tensor([[float(t)] for t in ts], dtype=torch.float64)).reshape(-1).tolist()
    assert out == pytest.approx([float(net([t])) for t in ts], abs=1e-12)
    with torch.no_grad():
        gates["1"].c.fill_(0.5)
    with pytest.raises(NetworkError, match="binarize"):
        from_torch(model)


def test_from_torch_unshaped_gate():
    """A gate that has never seen an input gets a clear error, not a torch exception."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch
    from snl_train.gates import add_gates

    model = add_gates(torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1)))
    with pytest.raises(NetworkError, match="forward pass"):
        from_torch(model)


# ----------------------------------------------------------------------------- command line

GOOD = {"layers": [{"weight": [[1], [1], [1]], "bias": [0, -1, "-3/2"], "mask": [1, 1, 0]},
                   {"weight": [[1, -2, 0], [0, 1, 1]], "bias": [0, 0.5]}],
        "output": {"weight": [1, 1], "bias": 0}}


def test_cli_json(tmp_path, capsys):
    """--json prints one object with the pieces, exact breakpoints and both bounds."""
    path = tmp_path / "net.json"
    path.write_text(json.dumps(GOOD))
    assert main([str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    net = load_network(GOOD)
    assert report["pieces"] == count_pieces(net).pieces
    assert report["breakpoints"] == [f"{b.numerator}/{b.denominator}" if isinstance(b, F) else str(b)
                                     for b in count_pieces(net).breakpoints]
    assert report["paper"]["statement"] == "Corollary 1"
    assert report["paper"]["capacity"] == str(corollary1_counts(2, 2, 3, 2))
    assert report["sharp"]["pieces"] == "9" and report["retained"] == [2, 2]


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    (json.dumps({"layers": [{"weight": [[1], [1, 2]], "bias": [0, 1]}], "output": {"weight": [1, 1]}}), "length"),
    (json.dumps({"layers": [{"weight": [[1]], "bias": [0], "mask": [1, 0]}], "output": {"weight": [1]}}), "mask"),
    (json.dumps({"layers": [{"weight": [["x"]], "bias": [0]}], "output": {"weight": [1]}}), "weight[0][0]"),
    (json.dumps({"layers": [{"weight": [[True]], "bias": [0]}], "output": {"weight": [1]}}), "number"),
    (json.dumps({"layers": [{"weight": [[1]], "bias": [0]}], "output": {"weight": [1]}, "direction": [0]}),
     "zero vector"),
    (json.dumps({"layers": [{"weight": [[1]], "bias": [0]}], "output": {"weight": [1, 2]}}), "output.weight"),
    (json.dumps({"layers": []}), "output"),
    (json.dumps([1, 2]), "JSON object"),
])
def test_cli_bad_input(tmp_path, capsys, text, words):
    """A malformed network gets one line on stderr naming the problem, and exit code 2."""
    path = tmp_path / "net.json"
    path.write_text(text)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_cli_missing_file_and_light_startup(tmp_path):
    """A missing file exits 2; the command imports neither torch nor numpy for the exact path."""
    code = ("import sys, runpy; sys.argv = ['x', sys.argv[1]]\n"
            "try:\n    runpy.run_module('capacity.pieces', run_name='__main__')\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'numpy' in sys.modules)")
    missing = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none.json")],
                             capture_output=True, text=True)
    assert missing.stdout.split() == ["2", "False", "False"]
    assert missing.stderr.count("\n") == 1 and "cannot read" in missing.stderr
    path = tmp_path / "net.json"
    path.write_text(json.dumps(GOOD))
    ok = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert ok.stdout.split()[-3:] == ["0", "False", "False"]


# ----------------------------------------------------------------------------- counting core


def test_kink_at_an_earlier_kink_is_counted_once():
    """Layer 2's pre-activation relu(t) + t crosses 0 exactly at layer 1's kink t = 0:
    the breakpoint is shared, not added twice (a cut at an interval's end would double it)."""
    net = load_network({"layers": [{"weight": [[1], [1]], "bias": [0, 0], "mask": [1, 0]},
                                   {"weight": [[1, 1], [1, -1]], "bias": [0, 0]}],
                        "output": {"weight": [1, 1], "bias": 0}})
    assert layer_breakpoints(net) == ((0,), (0,))
    assert count_pieces(net) == PieceCount(2, (0,))
    r = restrict(net)
    assert r.slopes == (-1, 2) and r(F(-1)) == 1 and r(F(2)) == 4


def test_layer_breakpoints_accumulate():
    """K_l keeps every earlier breakpoint and adds the new crossings, exactly."""
    net = load_network({"layers": [{"weight": [[1], [1]], "bias": [0, -1]},
                                   {"weight": [[1, -1]], "bias": ["-1/2"]},
                                   {"weight": [[0]], "bias": [1]}],
                        "output": {"weight": [1]}})
    assert layer_breakpoints(net) == ((0, 1), (0, F(1, 2), 1), (0, F(1, 2), 1))
    assert count_pieces(net).pieces == 1  # the last layer is constant


@pytest.mark.parametrize("net, kept, retained, pruned", [
    (one_layer([1, 0, 1], [0, 0, 1], [1, 1, 0]), (1,), (1,), ((False, True, True),)),
    (one_layer([1, 2], [0, 1], [1, 1], mask=[0, 1]), (2,), (1,), ((False, False),)),
    (one_layer([0], [3], [1]), (0,), (0,), ((True,),)),
])
def test_pruned_neurons_are_not_counted(net, kept, retained, pruned):
    """A zero weight row or zero outgoing weights prune a neuron: kept() and retained()
    leave it out, and retained() also leaves out linearized neurons."""
    assert net.pruned() == pruned
    assert net.kept() == kept and net.retained() == retained


def test_pruned_two_layers_kept_and_bounds():
    """Pruning by the next layer's zero column, in a two-layer network, and the bound used."""
    net = load_network({"layers": [{"weight": [[1], [1], [1]], "bias": [0, -1, -2], "mask": [1, 1, 0]},
                                   {"weight": [[1, 0, 1], [1, 0, 2]], "bias": [0, 0]}],
                        "output": {"weight": [1, 0], "bias": 0}})
    assert net.pruned() == ((False, True, False), (False, True))
    assert net.kept() == (2, 1) and net.retained() == (1, 1)
    report = bounds_report(net)
    assert report["sharp"] == {"pieces": 4, "capacity": 5}
    assert report["paper"]["statement"] == "Corollary 1 (pruned widths)"
    assert report["paper"]["capacity"] == corollary1_counts(1, 1, 2, 1)


@pytest.mark.parametrize("widths, masks, statement", [
    ((1, 1), ([1], [1]), "Theorem 1"),
    ((1, 1), ([0], [1]), "Corollary 1"),
])
def test_bounds_report_statements(widths, masks, statement):
    """The paper's statement that applies to an unpruned network, with its exact capacity."""
    net = load_network({"layers": [{"weight": [[1]], "bias": [0], "mask": masks[0]},
                                   {"weight": [[1]], "bias": [0], "mask": masks[1]}],
                        "output": {"weight": [1]}})
    report = bounds_report(net)
    assert report["paper"]["statement"] == statement
    expected = theorem1(1, 1) if statement == "Theorem 1" else corollary1_counts(0, 1, 1, 1)
    assert report["paper"]["capacity"] == expected and report["paper"]["pieces"] == expected - 1
    assert bounds_report(one_layer([1], [0], [1]))["paper"] is None


@pytest.mark.parametrize("module, activation", [("LeakyReLU", "leaky_relu"), ("Hardtanh", "hardtanh")])
def test_from_torch_matches_torch_activations(module, activation):
    """LeakyReLU(0.01) and Hardtanh(-1, 1) read from torch compute what torch computes."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(1, 3), getattr(torch.nn, module)(),
                                torch.nn.Linear(3, 2), getattr(torch.nn, module)(),
                                torch.nn.Linear(2, 1)).double()
    net = from_torch(model)
    assert net.activation == activation
    ts = [F(k, 4) for k in range(-24, 25)]
    with torch.no_grad():
        out = model(torch.tensor([[float(t)] for t in ts], dtype=torch.float64)).reshape(-1).tolist()
    assert out == pytest.approx([float(net([t])) for t in ts], abs=1e-12)
    assert count_pieces(net).pieces == count_pieces(net, exact=False).pieces


def test_activation_pieces_exact():
    """The slopes of the three activations, exactly (leaky ReLU: 1/100 left of 0)."""
    leaky = one_layer([1], [0], [1], activation="leaky_relu")
    assert restrict(leaky).slopes == (F(1, 100), 1)
    tanh = one_layer([1], [0], [1], activation="hardtanh")
    r = restrict(tanh)
    assert r.slopes == (0, 1, 0) and r.intercepts == (-1, 0, 1)
    assert ACTIVATIONS["hardtanh"].piece_at(1) in ((1, 0), (0, 1)) and ACTIVATIONS["relu"].p == 2


@pytest.mark.parametrize("layers, out, statement, capacity", [
    # pruned (a zero row), the rest ReLU: Corollary 2 at the kept widths (2, 1)
    ([{"weight": [[1], [1], [0]], "bias": [0, -1, 0]}, {"weight": [[1, 1, 1]], "bias": [0]}],
     [1], "Corollary 2", corollary2_counts(2, 1, 3, 1)),
    # pruned and linearized, both layers keep a neuron: Corollary 1 on the kept widths
    ([{"weight": [[1], [1], [0]], "bias": [0, -1, 0], "mask": [1, 0, 1]},
      {"weight": [[1, 1, 1], [1, 0, 0]], "bias": [0, 0]}],
     [1, 1], "Corollary 1 (pruned widths)", corollary1_counts(1, 2, 2, 2)),
    # linearized and layer 2 pruned away entirely: Corollary 2 with the retained counts
    ([{"weight": [[1], [1]], "bias": [0, -1], "mask": [1, 0]}, {"weight": [[1, 1]], "bias": [0]}],
     [0], "Corollary 2", corollary2_counts(0, 0, 2, 1)),
])
def test_bounds_report_pruned_statements(layers, out, statement, capacity):
    """Which of the paper's statements bounds a pruned network, with its exact value."""
    report = bounds_report(load_network({"layers": layers, "output": {"weight": out}}))
    assert report["paper"]["statement"] == statement
    assert report["paper"]["capacity"] == capacity and report["paper"]["pieces"] == capacity - 1


def test_network_call_exact():
    """Evaluating a network: masks, biases and the output bias, exactly."""
    net = load_network({"layers": [{"weight": [[2], [1]], "bias": ["1/2", -3], "mask": [1, 0]}],
                        "output": {"weight": [1, "1/3"], "bias": 5}})
    assert net([F(-1)]) == 0 + F(-4, 3) + 5
    assert net([F(1)]) == F(5, 2) + F(-2, 3) + 5
    hard = one_layer([1], [0], [1], activation="hardtanh")
    assert [hard([t]) for t in (-3, F(-1, 2), 3)] == [-1, F(-1, 2), 1]
    leaky = one_layer([1], [0], [1], activation="leaky_relu")
    assert leaky([-100]) == -1 and leaky([7]) == 7


def test_sampled_pieces_tolerance():
    """sampled_pieces counts slope changes larger than tol times the largest slope."""
    net = one_layer([1, 1], [0, -1], [1, F(1, 100)])  # slopes 0, 1, 101/100
    assert sampled_pieces(net, -2, 3, 5) == 3
    assert sampled_pieces(net, -2, 3, 5, tol=F(1, 50)) == 2
    assert sampled_pieces(net, -2, 3, 5, tol=F(1, 101)) == 2  # change == tol * scale: not counted
    assert sampled_pieces(net, -2, 3, 5, tol=F(1, 102)) == 3
