"""Edge cases of capacity.pieces: exact error messages, the reader's defaults, the work
estimate, the command line's text and the fast path's tolerances."""

import json
import re
from fractions import Fraction as F

import pytest

from capacity.cli import UsageError
from capacity.pieces import (
    Layer,
    Network,
    PieceCount,
    EXACT_RATE,
    NetworkError,
    _check_work,
    bounds_report,
    build_parser,
    count_pieces,
    layer_breakpoints,
    exact_work,
    load_network,
    main,
    network_from_dict,
    network_to_dict,
    sampled_pieces,
)

def one_layer(rows, bias, out):
    """A one-hidden-layer ReLU network on the line t (input width 1)."""
    return Network((Layer(tuple((F(r),) for r in rows), tuple(map(F, bias)), (1,) * len(rows)),),
                   tuple(map(F, out)), 0)


ONE = {"weight": [[1]], "bias": [0]}  # one neuron, t -> relu(t)
OUT1 = {"weight": [1]}


def refused(data, message):
    """network_from_dict refuses ``data`` with exactly ``message``."""
    with pytest.raises(NetworkError) as info:
        network_from_dict(data)
    assert str(info.value) == message


@pytest.mark.parametrize("data, message", [
    ([1, 2], "the network must be a JSON object with keys 'layers' and 'output'"),
    ({"output": OUT1}, "the network has no 'layers' key"),
    ({"layers": []}, "the network has no 'output' key"),
    ({"layers": [], "output": {"weight": []}, "activation": "tanh"},
     "activation must be one of ['hardtanh', 'leaky_relu', 'relu'], got 'tanh'"),
    ({"layers": {}, "output": OUT1}, "'layers' must be a list of {weight, bias, mask} objects"),
    ({"layers": [[1]], "output": OUT1}, "layers[0] must be an object with 'weight' and 'bias'"),
    ({"layers": [{"bias": [0]}], "output": OUT1}, "layers[0] must be an object with 'weight' and 'bias'"),
    ({"layers": [ONE, {"weight": [[1]]}], "output": OUT1},
     "layers[1] must be an object with 'weight' and 'bias'"),
    ({"layers": [{"weight": 3, "bias": [0]}], "output": OUT1}, "layers[0].weight must be a list of rows, got 3"),
    ({"layers": [{"weight": [[1], [1, 2]], "bias": [0, 0]}], "output": OUT1},
     "layers[0].weight[1] must have length 1, got 2"),
    ({"layers": [{"weight": [[1], "x"], "bias": [0, 0]}], "output": OUT1},
     'layers[0].weight[1] must be a list of numbers, got "x"'),
    ({"layers": [{"weight": [[1], [1]], "bias": [0]}], "output": OUT1}, "layers[0].bias must have length 2, got 1"),
    ({"layers": [{"weight": [[1]], "bias": 0}], "output": OUT1}, "layers[0].bias must be a list of numbers, got 0"),
    ({"layers": [{"weight": [[1]], "bias": [True]}], "output": OUT1}, "layers[0].bias[0] must be a number, got true"),
    ({"layers": [{"weight": [[1]], "bias": [None]}], "output": OUT1}, "layers[0].bias[0] must be a number, got null"),
    ({"layers": [{"weight": [[1]], "bias": [{"a": 1}]}], "output": OUT1},
     'layers[0].bias[0] must be a number, got {"a": 1}'),
    ({"layers": [{"weight": [[1]], "bias": [1j]}], "output": OUT1}, 'layers[0].bias[0] must be a number, got "1j"'),
    ({"layers": [{"weight": [[1]], "bias": [float("inf")]}], "output": OUT1},
     "layers[0].bias[0] must be finite, got inf"),
    ({"layers": [{"weight": [[1]], "bias": [float("nan")]}], "output": OUT1},
     "layers[0].bias[0] must be finite, got nan"),
    ({"layers": [{"weight": [[1]], "bias": [0], "mask": [1, 0]}], "output": OUT1},
     "layers[0].mask must be a list of 1 entries 0/1 (one per neuron), got 2"),
    ({"layers": [{"weight": [[1]], "bias": [0], "mask": 1}], "output": OUT1},
     "layers[0].mask must be a list of 1 entries 0/1 (one per neuron), got 1"),
    ({"layers": [{"weight": [[1]], "bias": [0], "mask": "1"}], "output": OUT1},
     'layers[0].mask must be a list of 1 entries 0/1 (one per neuron), got "1"'),
    ({"layers": [{"weight": [[1], [1]], "bias": [0, 0], "mask": [1, 2]}], "output": {"weight": [1, 1]}},
     "layers[0].mask[1] must be 0 or 1, got 2"),
    ({"layers": [{"weight": [[1], [1]], "bias": [0, 0], "mask": [0, True]}], "output": {"weight": [1, 1]}},
     "layers[0].mask[1] must be 0 or 1, got true"),
    ({"layers": [{"weight": [[1]], "bias": [0], "mask": ["1"]}], "output": OUT1},
     'layers[0].mask[0] must be 0 or 1, got "1"'),
    ({"layers": [{"weight": [[1]], "bias": [0], "mask": F(1)}], "output": OUT1},  # a parsed dict, not JSON
     'layers[0].mask must be a list of 1 entries 0/1 (one per neuron), got "1"'),
    ({"layers": [{"weight": [[1]], "bias": [0], "mask": [F(1, 2)]}], "output": OUT1},
     'layers[0].mask[0] must be 0 or 1, got "1/2"'),
    ({"layers": [{"weight": F(1), "bias": [0]}], "output": OUT1}, 'layers[0].weight must be a list of rows, got "1"'),
    ({"layers": [{"weight": [[1]], "bias": F(1, 2)}], "output": OUT1},
     'layers[0].bias must be a list of numbers, got "1/2"'),
    ({"layers": [ONE], "output": [1]}, "'output' must be an object with 'weight' and 'bias'"),
    ({"layers": [ONE], "output": {"bias": 0}}, "'output' must be an object with 'weight' and 'bias'"),
    ({"layers": [ONE], "output": {"weight": [[1], [1]]}},
     "output.weight must have one row (a single output), got 2"),
    ({"layers": [ONE], "output": {"weight": [1], "bias": [0, 1]}},
     "output.bias must be one number (a single output), got 2"),
    ({"layers": [ONE], "output": {"weight": [1], "bias": []}},
     "output.bias must be one number (a single output), got 0"),
    ({"layers": [ONE], "output": {"weight": [1], "bias": "x"}},
     "output.bias must be an integer or a fraction p/q, got 'x'"),
    ({"layers": [ONE], "output": {"weight": [1, 2]}}, "output.weight must have length 1, got 2"),
    ({"layers": [ONE], "output": OUT1, "origin": [0, 0]}, "layers[0].weight[0] must have length 2, got 1"),
    ({"layers": [ONE], "output": OUT1, "direction": [1, 1]}, "layers[0].weight[0] must have length 2, got 1"),
    ({"layers": [ONE], "output": OUT1, "origin": [0], "direction": [1, 1]}, "direction must have length 1, got 2"),
    ({"layers": [ONE], "output": OUT1, "origin": 5}, "origin must be a list of numbers, got 5"),
    ({"layers": [ONE], "output": OUT1, "origin": ["x"]}, "origin[0] must be an integer or a fraction p/q, got 'x'"),
    ({"layers": [{"weight": [[1, 2]], "bias": [0]}], "output": OUT1}, "direction must be a list of numbers, got null"),
    ({"layers": [ONE], "output": OUT1, "direction": [0]}, "direction must not be the zero vector"),
    ({"layers": [ONE], "output": OUT1, "direction": ["0/5"]}, "direction must not be the zero vector"),
])
def test_reader_messages(data, message):
    """Every malformed network is refused with a message naming the entry and the problem."""
    refused(data, message)


def test_reader_defaults_and_exact_numbers():
    """Mask, line, activation and output bias default as documented; floats are read
    exactly (integral ones as ints), strings as fractions in lowest terms."""
    net = network_from_dict({"layers": [{"weight": [[0.5], [2.0]], "bias": ["3/6", "-4/2"]}],
                             "output": {"weight": [[1, "1/3"]]}})
    layer = net.layers[0]
    assert layer.weight == ((F(1, 2),), (2,)) and type(layer.weight[1][0]) is int
    assert layer.bias == (F(1, 2), -2) and type(layer.bias[1]) is int
    assert layer.mask == (1, 1)
    assert net.output_weight == (1, F(1, 3)) and net.output_bias == 0
    assert (net.origin, net.direction, net.activation) == ((0,), (1,), "relu")
    assert network_from_dict({"layers": [ONE], "output": {"weight": [1], "bias": ["7/2"]}}).output_bias == F(7, 2)
    row = network_from_dict({"layers": [ONE], "output": {"weight": [[2]], "bias": 5}})  # one row keeps the bias
    assert (row.output_weight, row.output_bias) == ((2,), 5)


def test_reader_line_and_input_width():
    """The input width comes from origin, else direction, else the first layer's rows;
    origin defaults to zeros of that width, direction to 1 only for a 1-D input."""
    two = {"layers": [{"weight": [[1, 2]], "bias": [0]}], "output": OUT1}
    net = network_from_dict(dict(two, direction=[1, -1]))
    assert net.origin == (0, 0) and net.direction == (1, -1)
    net = network_from_dict(dict(two, origin=[3, 4], direction=[0, 1]))
    assert net.origin == (3, 4) and net.direction == (0, 1)
    net = network_from_dict({"layers": [], "output": {"weight": [1, 1]}, "origin": [0, 5], "direction": [1, 0]})
    assert net.origin == (0, 5) and net([F(1), F(5)]) == 6
    empty = network_from_dict({"layers": [{"weight": [], "bias": []}, {"weight": [], "bias": []}],
                               "output": {"weight": []}})
    assert empty.widths == (0, 0) and empty.origin == (0,) and empty.direction == (1,)
    deep = network_from_dict({"layers": [{"weight": [[1], [2]], "bias": [0, 0], "mask": [0, 1]},
                                         {"weight": [[1, 1]], "bias": [0]}], "output": OUT1})
    assert deep.widths == (2, 1) and deep.layers[0].mask == (0, 1)
    assert network_from_dict({"layers": [ONE], "output": OUT1, "activation": "hardtanh"}).activation == "hardtanh"


# ----------------------------------------------------------------------------- command line

ONE_LAYER = {"layers": [{"weight": [[1], [1]], "bias": [0, -1]}], "output": {"weight": [1, -2], "bias": 0}}
# relu(t) - relu(t - 1/2) is 0, t, 1/2 on (-inf, 0), (0, 1/2), (1/2, inf); layer 2 keeps it (>= 0)
TWO_LAYERS = {"layers": [{"weight": [[1], [1]], "bias": [0, "-1/2"]}, {"weight": [[1, -1]], "bias": [0]}],
              "output": {"weight": [1]}}
CONSTANT = {"layers": [{"weight": [[0]], "bias": [1]}], "output": {"weight": [2], "bias": 3}}


def run(tmp_path, capsys, data, *options):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(data))
    status = main([str(path), *options])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("data, text", [
    # one layer of 2: sharp (2 + 1) pieces; the paper states nothing for one layer
    (ONE_LAYER, "pieces:      3\nbreakpoints: 0, 1\nwidths [2], kept [2], retained [2], p = 2\n"
                "sharp bound: 3 pieces (capacity <= 4)\npaper bound: stated for two hidden layers only\n"),
    # widths (2, 1): Theorem 1 gives 2 * 2 * 1 + 1 + 2 = 7, sharp (2 + 1)(1 + 1) = 6 pieces
    (TWO_LAYERS, "pieces:      3\nbreakpoints: 0, 1/2\nwidths [2, 1], kept [2, 1], retained [2, 1], p = 2\n"
                 "sharp bound: 6 pieces (capacity <= 7)\npaper bound (Theorem 1): 6 pieces (capacity <= 7)\n"),
    # the only neuron has a zero row: pruned, a constant output without breakpoints
    (CONSTANT, "pieces:      1\nbreakpoints: (none)\nwidths [1], kept [0], retained [0], p = 2\n"
               "sharp bound: 1 pieces (capacity <= 2)\npaper bound: stated for two hidden layers only\n"),
])
def test_cli_text(tmp_path, capsys, data, text):
    """The text report, line by line, with the counts and bounds worked out by hand."""
    assert run(tmp_path, capsys, data) == (0, text, "")


def test_cli_json_exact_and_fast(tmp_path, capsys):
    """--json: exact numbers as strings; --fast: breakpoints as float reprs, "exact": false."""
    status, out, _ = run(tmp_path, capsys, TWO_LAYERS, "--json")
    assert status == 0 and out.count("\n") == 1
    assert json.loads(out) == {
        "pieces": 3, "breakpoints": ["0", "1/2"], "exact": True, "widths": [2, 1], "kept": [2, 1],
        "retained": [2, 1], "p": 2, "sharp": {"pieces": "6", "capacity": "7"},
        "paper": {"statement": "Theorem 1", "pieces": "6", "capacity": "7"}}
    status, out, _ = run(tmp_path, capsys, ONE_LAYER, "--json", "--fast")
    assert json.loads(out) == {
        "pieces": 3, "breakpoints": ["0.0", "1.0"], "exact": False, "widths": [2], "kept": [2],
        "retained": [2], "p": 2, "sharp": {"pieces": "3", "capacity": "4"}, "paper": None}


def test_cli_help_text(monkeypatch):
    """--help names the command, every option with its explanation, the example and exit 1."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    text = build_parser().format_help()
    assert text.startswith("usage: python -m capacity.pieces [-h] [--json] [--fast] [--time-limit SECONDS] network\n")
    for line in [
            "Count the linear pieces of a network (network JSON, see DESIGN.md) along the line "
            "origin + t * direction, exactly, and print the paper's and the sharp bound for its "
            "architecture and mask.",
            "  network               network JSON file (UTF-8, at most 64 MB)",
            "  --json                print one JSON object (exact numbers as strings)",
            "  --fast                float64 numpy path instead of exact Fractions",
            "  --time-limit SECONDS  refuse a count that would take longer, stop one that does "
            "(default 20; 0: no limit)",
            "example: python -m capacity.pieces examples/net.json --json",
            "  1    output stopped early (the reader went away, e.g. | head)"]:
        assert line in text.splitlines()


def test_cli_options():
    """Defaults: text report, exact path, 20 s; --time-limit takes a number >= 0."""
    args = build_parser().parse_args(["net.json"])
    assert (args.network, args.json, args.fast, args.time_limit) == ("net.json", False, False, 20.0)
    args = build_parser().parse_args(["net.json", "--json", "--fast", "--time-limit", "0"])
    assert (args.json, args.fast, args.time_limit) == (True, True, 0.0)
    with pytest.raises(UsageError, match=r"argument --time-limit: must be >= 0, got '-1'"):
        build_parser().parse_args(["net.json", "--time-limit", "-1"])


def test_network_to_dict_exact_strings():
    """Every number as an exact string, masks as ints; reading it back gives the network."""
    data = {"activation": "leaky_relu",
            "layers": [{"weight": [[0.5, -2]], "bias": ["1/3"], "mask": [0]}],
            "output": {"weight": [3], "bias": "-7/4"}, "origin": [1, "2/6"], "direction": [0, -1]}
    net = network_from_dict(data)
    assert network_to_dict(net) == {
        "activation": "leaky_relu",
        "layers": [{"weight": [["1/2", "-2"]], "bias": ["1/3"], "mask": [0]}],
        "output": {"weight": ["3"], "bias": "-7/4"}, "origin": ["1", "1/3"], "direction": ["0", "-1"]}
    assert network_from_dict(network_to_dict(net)) == net


def test_load_network_from_a_file(tmp_path):
    """A path (str or Path) is read as JSON; a reading problem is a NetworkError naming the file."""
    path = tmp_path / "net.json"
    path.write_text(json.dumps(ONE_LAYER))
    assert load_network(path) == load_network(str(path)) == network_from_dict(ONE_LAYER)
    with pytest.raises(NetworkError, match=r"^cannot read network file .*none\.json: it does not exist$"):
        load_network(tmp_path / "none.json")
    path.write_text("[1, 2]")
    with pytest.raises(NetworkError, match=r"^the network must be a JSON object"):
        load_network(path)


# ----------------------------------------------------------------------------- the work estimate


def layers_of(*widths, kinks=None):
    """Raw layers with the given widths; the first has ``kinks`` distinct kinks at t = 0, 1, ...
    (the others masked), the later layers' numbers are never read by ``exact_work``."""
    first = widths[0] if kinks is None else kinks
    mask = [1] * first + [0] * (widths[0] - first)
    layers = [{"weight": [[1]] * widths[0], "bias": [-k for k in range(widths[0])], "mask": mask}]
    return layers + [{"weight": [[0]] * w, "bias": [0] * w} for w in widths[1:]]


@pytest.mark.parametrize("data, work", [
    # 3 + 0 kinks: 3 * 1 + 1 * (2 * 3 + 4 * 2)
    ({"layers": layers_of(3, 2, 4, kinks=0), "output": {"weight": [1] * 4}}, 17),
    # 3 kinks: 3 * 1 + 4 * (2 * 3 + 4 * 2)
    ({"layers": layers_of(3, 2, 4), "output": {"weight": [1] * 4}}, 59),
    # 2 of 3 kept: 3 + 3 * 14
    ({"layers": layers_of(3, 2, 4, kinks=2), "output": {"weight": [1] * 4}}, 45),
    # hard-tanh: kinks at t = -1, 1 and, for 2t, at -1/2, 1/2: 2 + 5 * (1 * 2)
    ({"activation": "hardtanh", "layers": [{"weight": [[1], [2]], "bias": [0, 0]}, {"weight": [[1, 1]], "bias": [0]}],
      "output": {"weight": [1]}}, 12),
    # z = 2 + 2t and 2 + 4t (origin 1, direction 2) kink at -1 and -1/2; -(1 + 2t) - 1 again at -1;
    # a zero-slope neuron (weight 0) and a masked one add none: 5 * 2 + 3 * (1 * 5)
    ({"layers": [{"weight": [[1, 0], [2, 0], [-1, 0], [0, 1], [5, 0]], "bias": [1, 0, -1, 3, 0],
                  "mask": [1, 1, 1, 1, 0]}, {"weight": [[1] * 5], "bias": [0]}],
      "output": {"weight": [1]}, "origin": [1, 0], "direction": [2, 0]}, 25),
    # t, 2t - 1, t - 1/2 kink at 0, 1/2, 1/2: two distinct, 3 * 1 + 3 * (1 * 3)
    ({"layers": [{"weight": [[1], [2], [1]], "bias": [0, -1, "-1/2"]}, {"weight": [[1, 1, 1]], "bias": [0]}],
      "output": {"weight": [1]}}, 12),
    # one layer: only its own multiply-adds
    ({"layers": layers_of(4), "output": {"weight": [1] * 4}}, 4),
])
def test_exact_work(data, work):
    """The multiply-add estimate, worked out by hand from the first layer's kinks."""
    assert exact_work(data) == work


@pytest.mark.parametrize("data", [
    {"output": {"weight": [1]}},                                              # KeyError
    {"layers": [], "output": {"weight": []}},                                 # IndexError
    {"layers": [{"weight": 3, "bias": [0]}], "output": {"weight": [1]}},      # TypeError
    {"layers": [{"weight": [[1]], "bias": [0, 1]}], "output": {"weight": [1]}},  # NetworkError
    [1, 2],                                                                   # TypeError
])
def test_exact_work_of_a_malformed_file_is_zero(data):
    """A file malformed anywhere the estimate looks gives 0 (the reader reports it later)."""
    assert exact_work(data) == 0


def test_check_work_limits():
    """A count is refused when its work exceeds EXACT_RATE * seconds, not when it equals it;
    --fast and --time-limit 0 are never refused."""
    assert EXACT_RATE == 5_000_000
    at_limit = {"layers": layers_of(10, 499, kinks=0), "output": {"weight": [1] * 499}}
    assert exact_work(at_limit) == 10 + 499 * 10 == 5000
    _check_work(at_limit, False, 0.001)  # 5000 multiply-adds in 0.001 s: allowed
    with pytest.raises(UsageError) as info:
        _check_work(at_limit, False, 0.000999)
    assert str(info.value) == (
        "an exact count for widths [10, 499] needs at least 5e+03 multiply-adds (about 0 s here), "
        "more than --time-limit 0.000999: use --fast (float64), or --time-limit 0 to count exactly anyway")
    _check_work(at_limit, True, 0.000999)
    _check_work(at_limit, False, 0)
    _check_work(at_limit, False, -1)
    big = {"layers": layers_of(1000, 5000), "output": {"weight": [1] * 5000}}
    assert exact_work(big) == 1000 + 1001 * 5000 * 1000
    with pytest.raises(UsageError) as info:
        _check_work(big, False, 20)
    assert str(info.value) == (
        "an exact count for widths [1000, 5000] needs at least 5e+09 multiply-adds (about 1,001 s here), "
        "more than --time-limit 20: use --fast (float64), or --time-limit 0 to count exactly anyway")


# ----------------------------------------------------------------------------- torch models


def linear(torch, rows, bias=None):
    """An nn.Linear (float64) with the given weight rows and bias (None: no bias)."""
    lin = torch.nn.Linear(len(rows[0]), len(rows), bias=bias is not None).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(rows, dtype=torch.float64))
        if bias is not None:
            lin.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return lin


def gate(torch, c, activation=None, variant="linearize"):
    """A materialized ReLUGate with slopes ``c``."""
    from snl_train.gates import ReLUGate

    g = ReLUGate(variant=variant) if activation is None else ReLUGate(variant=variant, activation=activation)
    g(torch.zeros(1, len(c), dtype=torch.float64))
    with torch.no_grad():
        g.c.copy_(torch.tensor(c, dtype=torch.float64))
    return g


def agrees(torch, model, net, ts=tuple(F(k, 4) for k in range(-16, 17))):
    """The network equals the torch model at every t (exact network, float64 model)."""
    with torch.no_grad():
        out = model(torch.tensor([[float(t)] for t in ts], dtype=torch.float64)).reshape(-1).tolist()
    return out == pytest.approx([float(net([t])) for t in ts], abs=1e-12)


def test_from_torch_reads_weights_bias_and_masks():
    """Weights and biases exactly (no bias: zeros), a Linear without activation linearized,
    Identity and Flatten skipped, the output layer's weight and bias, the default line."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch

    model = torch.nn.Sequential(torch.nn.Flatten(), linear(torch, [[0.5], [-2.0]], [0.25, 1.0]),
                                torch.nn.ReLU(), torch.nn.Identity(),
                                linear(torch, [[1.0, 3.0], [2.0, 0.0]]),  # no bias, no activation
                                linear(torch, [[1.0, -1.0]], [0.75]))
    net = from_torch(model)
    first, second = net.layers
    assert first == Layer(((F(1, 2),), (-2,)), (F(1, 4), 1), (1, 1))
    assert second == Layer(((1, 3), (2, 0)), (0, 0), (0, 0))
    assert (net.output_weight, net.output_bias) == ((1, -1), F(3, 4))
    assert (net.origin, net.direction, net.activation) == ((0,), (1,), "relu")
    assert agrees(torch, model, net)
    bare = from_torch(torch.nn.Sequential(linear(torch, [[2.0]])))  # no hidden layer, no bias
    assert bare.layers == () and bare.output_weight == (2,) and bare.output_bias == 0
    assert bare.activation == "relu" and count_pieces(bare) == PieceCount(1, ())
    alone = from_torch(linear(torch, [[3.0]], [1.0]))  # a Linear on its own, not a Sequential
    assert alone.layers == () and (alone.output_weight, alone.output_bias) == ((3,), 1)


def test_from_torch_line():
    """A wider input needs origin and direction (given as any sequence; either one alone
    takes the other's default); a zero direction is refused."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch

    model = torch.nn.Sequential(linear(torch, [[1.0, 2.0]], [0.0]), torch.nn.ReLU(), linear(torch, [[1.0]]))
    with pytest.raises(NetworkError, match=r"^the input has 2 features: give origin and direction$"):
        from_torch(model)
    net = from_torch(model, origin=(1, "1/2"), direction=[F(1, 3), -1])
    assert (net.origin, net.direction) == ((1, F(1, 2)), (F(1, 3), -1))
    assert from_torch(model, origin=[1, 2]).direction == (1, 1)
    assert from_torch(model, direction=[0, 2]).origin == (0, 0)
    with pytest.raises(NetworkError, match=r"^direction must not be the zero vector$"):
        from_torch(model, direction=[0, 0])
    for origin, direction, message in [
            ([0], [1, 1], "origin must have length 2, got 1"),
            ([0, 0], [1], "direction must have length 2, got 1"),
            ([None, 0], [1, 1], "origin[0] must be a number, got null"),
            ([0, 0], [1, "x"], "direction[1] must be an integer or a fraction p/q, got 'x'")]:
        with pytest.raises(NetworkError) as info:
            from_torch(model, origin=origin, direction=direction)
        assert str(info.value) == message
    one = torch.nn.Sequential(linear(torch, [[1.0]], [0.0]), torch.nn.ReLU(), linear(torch, [[1.0]]))
    assert from_torch(one, origin=[5]).origin == (5,) and from_torch(one, direction=[-1]).direction == (-1,)


@pytest.mark.parametrize("build, message", [
    (lambda nn, L: [nn.ReLU(), L([[1.0]])], "module 0 (ReLU) must follow a Linear layer"),
    (lambda nn, L: [L([[1.0]]), nn.ReLU(), nn.Hardtanh(), L([[1.0]])], "module 2 (Hardtanh) must follow a Linear layer"),
    (lambda nn, L: [L([[1.0]]), nn.Tanh(), L([[1.0]])],
     "module 1 (Tanh) is not Linear, ReLU, Hardtanh, LeakyReLU or ReLUGate"),
    (lambda nn, L: [], "the model must end with a Linear layer with one output"),
    (lambda nn, L: [L([[1.0]]), nn.ReLU()], "the model must end with a Linear layer with one output"),
    (lambda nn, L: [L([[1.0]]), nn.ReLU(), L([[1.0], [2.0]])], "the model must end with a Linear layer with one output"),
    (lambda nn, L: [L([[1.0]]), nn.Hardtanh(-2.0, 1.0), L([[1.0]])], "only Hardtanh(-1, 1) is supported"),
    (lambda nn, L: [L([[1.0]]), nn.Hardtanh(-1.0, 2.0), L([[1.0]])], "only Hardtanh(-1, 1) is supported"),
    (lambda nn, L: [L([[1.0]]), nn.LeakyReLU(0.1), L([[1.0]])], "only LeakyReLU(0.01) is supported"),
    (lambda nn, L: [L([[1.0]]), nn.Hardtanh(), L([[1.0]]), nn.ReLU(), L([[1.0]])],
     "all activations of the model must be of one kind, got hardtanh, relu"),
    (lambda nn, L: [L([[1.0]]), nn.ReLU(), L([[1.0]]), nn.LeakyReLU(), L([[1.0]])],
     "all activations of the model must be of one kind, got leaky_relu, relu"),
    (lambda nn, L: [L([[1.0]]), nn.LeakyReLU(), L([[1.0]]), nn.Hardtanh(), L([[1.0]])],
     "all activations of the model must be of one kind, got hardtanh, leaky_relu"),
])
def test_from_torch_refuses(build, message):
    """An unsupported or misplaced module, a wrong output and mixed activations are
    refused with a message naming the module (mixed kinds used to count every layer with
    the last non-ReLU kind)."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch

    with pytest.raises(NetworkError) as info:
        from_torch(torch.nn.Sequential(*build(torch.nn, lambda rows: linear(torch, rows, [0.0] * len(rows)))))
    assert str(info.value) == message


def test_from_torch_one_kind_with_linearized_layers():
    """Layers without an activation do not count as a kind: Hardtanh with a linearized layer
    (or LeakyReLU twice) is one kind, and the network equals the model."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch

    for act, kind in [(torch.nn.Hardtanh, "hardtanh"), (torch.nn.LeakyReLU, "leaky_relu")]:
        model = torch.nn.Sequential(linear(torch, [[1.0], [1.0]], [0.0, -0.5]), act(),
                                    linear(torch, [[1.0, -1.0]], [0.25]),
                                    linear(torch, [[2.0]], [-0.5]), act(), linear(torch, [[1.0]]))
        net = from_torch(model)
        assert net.activation == kind and [layer.mask for layer in net.layers] == [(1, 1), (0,), (1,)]
        assert agrees(torch, model, net)


def test_from_torch_gate_activations():
    """A gate counts with its own activation: Hardtanh(-1, 1) and LeakyReLU(0.01) gates
    (alone or after add_gates), not ReLU; others are refused; c = 0 linearizes or prunes."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch
    from snl_train.gates import add_gates, gate_sites
    from snl_train.sites import Activation

    hardtanh, leaky = Activation("hardtanh", -1.0, 1.0), Activation("leaky_relu", slope=0.01)
    for spec, kind in [(hardtanh, "hardtanh"), (leaky, "leaky_relu"), (None, "relu")]:
        model = torch.nn.Sequential(linear(torch, [[1.0], [2.0], [1.0]], [0.0, 1.0, -3.0]),
                                    gate(torch, [1.0, 0.0, 1.0], spec), linear(torch, [[1.0, 1.0, 1.0]], [0.0]))
        net = from_torch(model)
        assert net.activation == kind and net.layers[0].mask == (1, 0, 1) and agrees(torch, model, net)
        zero = torch.nn.Sequential(model[0], gate(torch, [1.0, 0.0, 1.0], spec, variant="zero"), model[2])
        net = from_torch(zero)
        assert net.activation == kind and net.layers[0].mask == (1, 1, 1) and agrees(torch, zero, net)
        assert net.layers[0].weight[1] == (0,) and net.layers[0].bias[1] == 0
    model = torch.nn.Sequential(linear(torch, [[1.0], [1.0]], [0.0, -2.0]), torch.nn.Hardtanh(),
                                linear(torch, [[1.0, -1.0], [1.0, 1.0]], [0.0, 0.5]), torch.nn.Hardtanh(),
                                linear(torch, [[1.0, 2.0]], [0.0]))
    add_gates(model, example_input=torch.zeros(2, 1, dtype=torch.float64))
    sites = dict(gate_sites(model))
    with torch.no_grad():
        sites["1"].c.copy_(torch.tensor([0.0, 1.0]))
    net = from_torch(model)
    assert net.activation == "hardtanh" and [layer.mask for layer in net.layers] == [(0, 1), (1, 1)]
    assert agrees(torch, model, net, ts=[F(k, 4) for k in range(-40, 41)])
    for spec, name in [(Activation("hardtanh", 0.0, 6.0), "hardtanh"), (Activation("hardtanh", -1.0, 2.0), "hardtanh"),
                       (Activation("leaky_relu", slope=0.2), "leaky_relu"), (Activation("relu6", 0.0, 6.0), "relu6")]:
        odd = torch.nn.Sequential(linear(torch, [[1.0]], [0.0]), gate(torch, [1.0], spec), linear(torch, [[1.0]]))
        with pytest.raises(NetworkError) as info:
            from_torch(odd)
        assert str(info.value) == (f"a ReLUGate for {spec} is not supported: only ReLU, Hardtanh(-1, 1) "
                                   "and LeakyReLU(0.01) gates are")
        assert name in str(info.value)


def test_from_torch_gate_errors():
    """A gate before any Linear, with c of the wrong size, non-binary c, or mixed with
    another kind is refused; a gated model whose container lost a gate names the site."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch
    from snl_train.gates import add_gates
    from snl_train.sites import Activation

    def refused(model, message):
        with pytest.raises(NetworkError) as info:
            from_torch(model)
        assert str(info.value) == message

    lin = linear(torch, [[1.0], [1.0]], [0.0, 0.0])
    out = linear(torch, [[1.0, 1.0]], [0.0])
    refused(torch.nn.Sequential(gate(torch, [1.0]), lin, out), "module 0 (ReLUGate) must follow a Linear layer")
    binarize = "a ReLUGate must have one c per neuron, each 0 or 1 (binarize it first)"
    refused(torch.nn.Sequential(lin, gate(torch, [1.0, 0.0, 1.0]), out), binarize)
    refused(torch.nn.Sequential(lin, gate(torch, [1.0]), out), binarize)
    refused(torch.nn.Sequential(lin, gate(torch, [1.0, 0.5]), out), binarize)
    refused(torch.nn.Sequential(lin, gate(torch, [-1.0, 1.0]), out), binarize)
    refused(torch.nn.Sequential(lin, gate(torch, [1.0, 1.0], Activation("hardtanh", -1.0, 1.0)),
                                linear(torch, [[1.0, 1.0]], [0.0]), torch.nn.ReLU(), linear(torch, [[1.0]])),
            "all activations of the model must be of one kind, got hardtanh, relu")
    from snl_train.gates import ReLUGate
    refused(torch.nn.Sequential(lin, ReLUGate(), out),
            "a ReLUGate has no c yet: run one forward pass (materialize_gates) first")
    relu = torch.nn.ReLU()
    model = torch.nn.Sequential(linear(torch, [[1.0]], [0.0]), relu, linear(torch, [[1.0]], [0.0]), relu,
                                linear(torch, [[1.0]]))
    add_gates(model, example_input=torch.zeros(2, 1, dtype=torch.float64))
    del model.snl_gates._modules["1_1"]
    refused(model, "the gated model has no gate for its ReLU '3' (site '1_1')")
    del model.snl_gates._modules["1"]
    refused(model, "the gated model has no gate for its ReLU '1' (site '1')")


def test_from_torch_gate_without_activation_is_relu():
    """A gate object that predates per-gate activations (no ``activation``) counts as ReLU."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch

    class ReLUGate(torch.nn.Module):  # recognised by its name and its c, as snl_train's
        def __init__(self, c):
            super().__init__()
            self.c = torch.nn.Parameter(torch.tensor(c, dtype=torch.float64))

    lin, out = linear(torch, [[1.0], [1.0]], [0.0, -1.0]), linear(torch, [[1.0, 1.0]], [0.0])
    net = from_torch(torch.nn.Sequential(lin, ReLUGate([1.0, 0.0]), out))
    assert net.activation == "relu" and net.layers[0].mask == (1, 0)
    with pytest.raises(NetworkError, match=r"^all activations of the model must be of one kind, got hardtanh, relu$"):
        from_torch(torch.nn.Sequential(lin, ReLUGate([1.0, 1.0]), linear(torch, [[1.0, 1.0]], [0.0]),
                                       torch.nn.Hardtanh(), linear(torch, [[1.0]])))


# ----------------------------------------------------------------------------- bounds


def hard_tanh(layers, out):
    return load_network({"activation": "hardtanh", "layers": layers, "output": {"weight": out}})


@pytest.mark.parametrize("net, statement, capacity, sharp", [
    # p = 3, widths (1, 1): Theorem 1 = p(p-1) d1 d2 + (p-1) d2 + 2 = 6 + 2 + 2; sharp (2 + 1)(2 + 1)
    (hard_tanh([ONE, ONE], [1]), "Theorem 1", 10, 9),
    # widths (1, 2), x = 1, y = 1: Corollary 1 = x y p(p-1) + y (p-1) + x (d2 - y)(p-1) + 2
    # = 6 + 2 + 2 + 2; sharp (2 * 1 + 1)(2 * 1 + 1)
    (hard_tanh([ONE, {"weight": [[1], [1]], "bias": [0, 0], "mask": [1, 0]}], [1, 1]), "Corollary 1", 12, 9),
    # a zero row prunes one of 3: kept (2, 1), Corollary 2 = k1 k2 p(p-1) + k2 (p-1) + 2 = 12 + 2 + 2;
    # sharp (2 * 2 + 1)(2 * 1 + 1)
    (hard_tanh([{"weight": [[1], [1], [0]], "bias": [0, -1, 0]}, {"weight": [[1, 1, 1]], "bias": [0]}], [1]),
     "Corollary 2", 16, 15),
    # pruned and linearized: x = 1, y = 2 on kept widths (2, 2): Corollary 1 = 12 + 4 + 0 + 2;
    # sharp (2 * 1 + 1)(2 * 2 + 1)
    (hard_tanh([{"weight": [[1], [1], [0]], "bias": [0, -1, 0], "mask": [1, 0, 1]},
                {"weight": [[1, 1, 1], [1, 0, 0]], "bias": [0, 0]}], [1, 1]), "Corollary 1 (pruned widths)", 18, 15),
    # layer 1 pruned away (zero rows), layer 2 half linearized: x = 0, y = 1, Corollary 2 = 0 + 2 + 2;
    # sharp 1 * (2 * 1 + 1)
    (hard_tanh([{"weight": [[0], [0]], "bias": [1, 2]}, {"weight": [[1, 1], [1, 1]], "bias": [0, 0], "mask": [1, 0]}],
               [1, 1]), "Corollary 2", 4, 3),
])
def test_bounds_report_three_pieces(net, statement, capacity, sharp):
    """With p = 3 (hard-tanh) every bound uses p, worked out from the paper's formulas."""
    report = bounds_report(net)
    assert report["p"] == 3
    assert report["paper"] == {"statement": statement, "pieces": capacity - 1, "capacity": capacity}
    assert report["sharp"] == {"pieces": sharp, "capacity": sharp + 1}


# ----------------------------------------------------------------------------- fast path


def test_fast_path_odd_networks():
    """The float path takes a hand-built Network with float numbers, and a first layer of
    width 0 (the output is then a constant: one piece; the input width stays 1, it is not
    read from the next layer's empty rows)."""
    floats = Network((Layer(((1.0,), (1.0,)), (0.0, -0.5), (1, 1)),), (1.0, 1.0), 0.0)
    assert count_pieces(floats, exact=False) == PieceCount(3, (0.0, 0.5))
    hollow = network_from_dict({"layers": [{"weight": [], "bias": []}, {"weight": [[]], "bias": [2]}],
                                "output": {"weight": [3]}})
    assert hollow.widths == (0, 1) and hollow([F(5)]) == 6
    assert count_pieces(hollow, exact=False) == PieceCount(1, ()) == count_pieces(hollow)


def test_fast_path_zero_slope_under_rounding():
    """A pre-activation slope that is 0 exactly but 2.3e-13 in float64 (direction and weights
    of ~1e4 that are not binary fractions) is zeroed relative to |direction| |weights|:
    a constant neuron, no breakpoint near t = -4.4e12, as on the exact path."""
    direction = (F(61, 84), F(49, 27), F(13, 63))
    row = (-9000, 3000, F(275000, 52))  # row . direction = -9000 * 61/84 + 3000 * 49/27 + ... = 0
    assert sum(w * d for w, d in zip(row, direction)) == 0
    net = Network((Layer((row,), (1,), (1,)),), (10**6,), 0, origin=(0, 0, 0), direction=direction)
    assert count_pieces(net) == count_pieces(net, exact=False) == PieceCount(1, ())


def test_fast_path_is_silent():
    """Zero slopes (0/0 and c/0 in the crossing formula) raise no numpy warning."""
    import warnings

    net = one_layer([0, 0, 1], [0, 1, 0], [1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert count_pieces(net, exact=False) == PieceCount(2, (0.0,))


def test_fast_path_resolution():
    """The float path tells breakpoints apart when they are more than tol (1 + |t|) apart,
    tol = 1e-9: a layer-2 kink 1.5e-9 right of layer 1's kink at 0 is found; kinks at 1000
    and 1000 + 1e-5 are two, at 1000 and 1000 + 1e-7 one (1e-7 < 1e-9 * 1001)."""
    eps = F(3, 2) * F(1, 10**9)
    # layer 1: relu(t) and t (linearized); layer 2: relu(t - 1.5e-9) and relu(relu(t))
    near = load_network({"layers": [{"weight": [[1], [1]], "bias": [0, 0], "mask": [1, 0]},
                                    {"weight": [[0, 1], [1, 0]], "bias": [str(-eps), 0]}],
                         "output": {"weight": [1, 1]}})
    assert count_pieces(near) == PieceCount(3, (0, eps))
    fast = count_pieces(near, exact=False)
    assert fast.pieces == 3 and fast.breakpoints == pytest.approx([0.0, float(eps)], abs=1e-15)
    for gap, pieces in [(F(1, 10**5), 3), (F(1, 10**7), 2)]:
        far = one_layer([1, 1], [-1000, -1000 - gap], [1, 1])
        assert count_pieces(far).pieces == 3
        assert count_pieces(far, exact=False).pieces == pieces


def test_fast_path_slope_changes():
    """An output slope change counts when it exceeds tol * max(1, largest |slope|): 1.5e-9
    between slopes 0 and 1.5e-9 does, 5e-7 between slopes of 1000 does not; a last layer of
    width 0 leaves a constant."""
    tiny = one_layer([1], [0], [F(3, 2) / 10**9])
    assert count_pieces(tiny, exact=False) == PieceCount(2, (0.0,)) == count_pieces(tiny)
    steep = one_layer([1, 1, 1], [10, 0, 0], [1000, 0, F(5, 10**7)])  # slopes 0, 1000, 1000 + 5e-7
    assert count_pieces(steep) == PieceCount(3, (-10, 0))
    assert count_pieces(steep, exact=False) == PieceCount(2, (-10.0,))
    empty_last = load_network({"layers": [ONE, {"weight": [], "bias": []}], "output": {"weight": []}})
    assert count_pieces(empty_last, exact=False) == PieceCount(1, ()) == count_pieces(empty_last)


def test_sampled_pieces_window_and_step():
    """Sampling sees only [lo, hi] (a kink half a step beyond hi is missed), and tol is
    relative to the largest secant slope, also when the step is not 1."""
    beyond = one_layer([1], [F(-101, 100)], [1])  # kink at 1.01; samples at -1, -0.98, ..., 1
    assert sampled_pieces(beyond, -1, 1, 100) == 1
    net = one_layer([1, 1], [0, -1], [1, F(1, 100)])  # slopes 0, 1, 101/100; kinks on the grid
    assert sampled_pieces(net, -2, 3, 10) == 3
    assert sampled_pieces(net, -2, 3, 10, tol=F(1, 200)) == 3  # 1/100 > 1/200 * 101/100
    assert sampled_pieces(net, -2, 3, 10, tol=F(1, 100)) == 2


def test_from_torch_refuses_lookalikes_and_non_finite_weights():
    """Only a module named ReLUGate that has c is a gate (a module with c alone is not);
    a NaN or infinite weight or bias is named in the error."""
    torch = pytest.importorskip("torch")
    from capacity.pieces import from_torch

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))

        def forward(self, z):
            return self.c * z

    with pytest.raises(NetworkError, match=r"^module 1 \(Scale\) is not Linear, ReLU, Hardtanh, LeakyReLU or ReLUGate$"):
        from_torch(torch.nn.Sequential(linear(torch, [[1.0]], [0.0]), Scale(), linear(torch, [[1.0]])))
    nan, inf = float("nan"), float("inf")
    for hidden, out, message in [(([[nan]], [0.0]), ([[1.0]], [0.0]), "weight must be finite, got nan"),
                                 (([[1.0]], [inf]), ([[1.0]], [0.0]), "bias must be finite, got inf"),
                                 (([[1.0]], [0.0]), ([[-inf]], [0.0]), "weight must be finite, got -inf"),
                                 (([[1.0]], [0.0]), ([[1.0]], [nan]), "bias must be finite, got nan")]:
        model = torch.nn.Sequential(linear(torch, *hidden), torch.nn.ReLU(), linear(torch, *out))
        with pytest.raises(NetworkError) as info:
            from_torch(model)
        assert str(info.value) == message


def test_later_threshold_inside_an_interval():
    """Hard-tanh, layer 2: z = t - 3/2 crosses -1 at t = 1/2 (left of layer 1's interval
    (1, inf)) and 1 at t = 5/2 (inside it): both kinks of hardtanh(t - 3/2) are found."""
    net = load_network({"activation": "hardtanh",
                        "layers": [{"weight": [[1], [1]], "bias": [0, 0], "mask": [1, 0]},
                                   {"weight": [[0, 1]], "bias": ["-3/2"]}],
                        "output": {"weight": [1]}})
    assert layer_breakpoints(net) == ((-1, 1), (-1, F(1, 2), 1, F(5, 2)))
    assert count_pieces(net) == PieceCount(3, (F(1, 2), F(5, 2)))
    mirrored = load_network({"activation": "hardtanh",  # the same with t -> -t (a negative slope)
                             "layers": [{"weight": [[-1], [-1]], "bias": [0, 0], "mask": [1, 0]},
                                        {"weight": [[0, 1]], "bias": ["-3/2"]}],
                             "output": {"weight": [1]}})
    assert layer_breakpoints(mirrored) == ((-1, 1), (F(-5, 2), -1, F(-1, 2), 1))
    assert count_pieces(mirrored) == PieceCount(3, (F(-5, 2), F(-1, 2)))
