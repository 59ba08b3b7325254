"""Tests of snl_train.private (measured two-party private inference) and its cost model.

The converter is checked in plaintext first (cheap, any number of masks); one shared
two-party run then checks, for the digits MLP, the ConvNet and a small ResNet with BatchNorm
and residual adds, pixel- and channel-wise, that the secure output equals the plaintext one
and that the traffic is exactly 464 bytes per kept ReLU plus the linear layers' share.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from snl_train.accounting import (NETWORK_PRESETS, PROFILE_DIR, PrivateLayer, load_cost_profile,
                                  private_cost, relu_counts, relu_layer_cost, total_kept)
from snl_train.crypten_compat import crypten_available
from snl_train.gates import add_gates, binarize_gates, gate_sites
from snl_train.models import MLP, BasicBlock, SmallConvNet
from snl_train.private import (CLIENT, SERVER, PartyError, UnsupportedOpError, convert,
                               run_parties)

needs_crypten = pytest.mark.skipif(not crypten_available(), reason="CrypTen is not installed")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the parties use one each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

BYTES_PER_RELU = 464  # CrypTen 0.4.1's ReLU, per party per element (measured, not from the code)
ROUNDS_PER_RELU_LAYER = 9
BYTES_PER_OPENED = 16  # a Beaver multiplication opens x - a and W - b: 2 x 8 bytes per element


class TinyResNet(nn.Module):
    """Stem conv + BN (no ReLU), an identity BasicBlock, a downsampling one, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block1, self.block2 = BasicBlock(4, 4), BasicBlock(4, 8, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _randomize_batchnorm(model: nn.Module) -> None:
    """Running statistics away from (0, 1), so that folding them wrongly changes the output."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def gated(model: nn.Module, x, granularity="pixel", seed=0, empty=(), variant="linearize"):
    """``model`` gated and binarized at random, every layer keeping some and dropping some
    entries except the sites in ``empty``, which keep nothing."""
    torch.manual_seed(seed)
    _randomize_batchnorm(model)
    add_gates(model, granularity, variant, example_input=x)
    for name, gate in gate_sites(model):
        c = gate.c.data.view(-1)
        c.uniform_(-1, 1)
        c[0], c[-1] = 1.0, -1.0
        if name in empty:
            c.fill_(-1.0)
    return binarize_gates(model, 0.0).eval()


CASES = {  # label -> (model, granularity, sites left empty, variant, seed)
    "mlp-pixel": (lambda: MLP(64, [32, 16, 8], 10), "pixel", ("features.4",), "linearize", 0),
    "mlp-zero": (lambda: MLP(64, [32, 16], 10), "pixel", (), "zero", 3),
    "convnet-channel": (lambda: SmallConvNet(1, 10, width=4, hidden=8), "channel", (), "linearize", 0),
    "resnet-pixel": (TinyResNet, "pixel", (), "linearize", 1),
    "resnet-channel": (TinyResNet, "channel", (), "linearize", 2),
}


def case(label):
    """(gated model, input batch of 2), built the same way on every call."""
    build, granularity, empty, variant, seed = CASES[label]
    torch.manual_seed(seed)
    x = torch.randn(2, 1, 8, 8)
    return gated(build(), x, granularity, seed, empty, variant), x


# ----------------------------------------------------------------------------- plaintext

@pytest.mark.parametrize("label", CASES)
def test_converted_program_computes_the_model_in_plaintext(label):
    """The program run on torch tensors equals the model (BatchNorm folded), and its layers
    keep exactly the ReLUs the accounting counts."""
    model, x = case(label)
    program = convert(model, x)
    with torch.no_grad():
        assert torch.allclose(program.run(x), model(x), atol=1e-5)
    relus = [layer for layer in program.layers if layer.kind == "relu"]
    counted = relu_counts(model, x, epsilon=0.5)
    assert [(r.name, r.total, r.kept) for r in relus] == [(c.name, c.total, c.kept) for c in counted]
    assert 0 < program.relu_kept < program.relu_total


@given(st.integers(0, 2**31 - 1), st.sampled_from(["pixel", "channel"]))
def test_any_binary_mask_converts_exactly(seed, granularity):
    """For random masks, the converted ConvNet equals the gated model and keeps its count."""
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    model = gated(SmallConvNet(1, 10, width=2, hidden=4), x, granularity, seed)
    program = convert(model, x)
    with torch.no_grad():
        assert torch.allclose(program.run(x), model(x), atol=1e-5)
    assert program.relu_kept == total_kept(model, x, 0.5)


def test_batchnorm_after_a_shared_input_is_an_affine_layer():
    """A BatchNorm that cannot be folded (its input has two users) stays a per-channel affine
    layer of C weights."""
    class PreAct(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            h = self.conv(x)
            return (self.bn(h) + h).flatten(1)

    model, x = PreAct(), torch.randn(2, 1, 4, 4)
    _randomize_batchnorm(model)
    program = convert(model.eval(), x)
    assert [(l.kind, l.inputs, l.weights) for l in program.layers] == [("linear", 16, 27), ("linear", 48, 3)]
    with torch.no_grad():
        assert torch.allclose(program.run(x), model(x), atol=1e-5)


class Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.fc(x))


class Product(nn.Module):
    def forward(self, x):
        return x * x


class Pair(nn.Module):
    def forward(self, x):
        return x.relu(), x


class Interpolate(nn.Module):
    def forward(self, x):
        return F.interpolate(x, size=4)


@pytest.mark.parametrize("model, x, named", [
    (Gelu(), torch.zeros(1, 4), "torch.nn.modules.activation.GELU at 'act'"),
    (Product(), torch.zeros(1, 4), "mul"),
    (Pair(), torch.zeros(1, 4), "returns one tensor"),
    (Interpolate(), torch.zeros(1, 1, 2, 2), "interpolate"),
    (nn.Sequential(nn.Linear(2, 2), nn.AvgPool1d(2)), torch.zeros(1, 2), "AvgPool1d"),
])
def test_unsupported_ops_are_named(model, x, named):
    with pytest.raises(UnsupportedOpError, match="not support|one tensor") as info:
        convert(model, x)
    assert named in str(info.value)


class DataDependent(nn.Module):
    def forward(self, x):
        return x.relu() if x.sum() > 0 else x


def test_an_untraceable_model_is_refused_in_one_line():
    """Control flow on values: fx cannot trace it; the message is one line naming the model."""
    with pytest.raises(UnsupportedOpError, match="needs a model torch.fx can trace.*DataDependent") as info:
        convert(DataDependent(), torch.zeros(1, 4))
    assert "\n" not in str(info.value)


def test_unbinarized_gates_are_refused():
    model = add_gates(MLP(4, [3], 2), example_input=torch.zeros(1, 4))
    gate_sites(model)[0][1].c.data.fill_(0.5)
    with pytest.raises(UnsupportedOpError, match="binarize"):
        convert(model, torch.zeros(1, 4))


# ----------------------------------------------------------------------------- cost model

def test_cost_profile_loads_by_name_and_path_and_refuses_junk(tmp_path):
    profile = load_cost_profile()
    assert (profile.bytes_per_relu, profile.rounds_per_relu_layer) == (464, 9)
    path = tmp_path / "p.json"
    path.write_text((PROFILE_DIR / "crypten-2pc.json").read_text())
    assert load_cost_profile(path) == profile
    with pytest.raises(ValueError, match="known names: crypten-2pc"):
        load_cost_profile("no-such-profile")
    path.write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="not a cost profile"):
        load_cost_profile(path)


def test_relu_layer_cost_is_zero_for_an_empty_layer_and_pays_its_rounds_otherwise():
    profile = load_cost_profile()
    assert relu_layer_cost(0, profile, "wan")["seconds"] == 0
    one, many = relu_layer_cost(1, profile, "wan"), relu_layer_cost(300, profile, "wan")
    assert one["rounds"] == many["rounds"] == 9
    assert one["seconds"] >= 9 * NETWORK_PRESETS["wan"].rtt
    assert many["bytes"] == 300 * one["bytes"] == 300 * 464


def test_private_cost_adds_compute_rounds_and_bytes():
    """latency = compute + rounds x RTT + bytes / bandwidth, with the profile's constants."""
    profile = load_cost_profile()
    layers = [PrivateLayer("fc1", "linear", inputs=64, weights=2048, macs=2048),
              PrivateLayer("r1", "relu", total=32, kept=7), PrivateLayer("r2", "relu", total=16),
              PrivateLayer("fc2", "linear", inputs=16, weights=160, macs=160)]
    lan, wan = (private_cost(layers, 10, profile, net, batch_size=3) for net in ("lan", "wan"))
    assert lan["bytes"] == 464 * 7 * 3 + 16 * (3 * (64 + 16) + 2048 + 160) + 8 * 10 * 3
    assert lan["rounds"] == 9 + 2 + 1
    assert lan["compute_seconds"] == pytest.approx(wan["compute_seconds"])
    for cost, net in ((lan, NETWORK_PRESETS["lan"]), (wan, NETWORK_PRESETS["wan"])):
        assert cost["seconds"] == pytest.approx(
            cost["compute_seconds"] + cost["rounds"] * net.rtt + cost["bytes"] / net.bandwidth)
    public = private_cost(layers, 10, profile, "lan", 3, "public")
    assert public["linear_bytes"] == 0 and public["rounds"] == 9 + 1
    with pytest.raises(ValueError, match="maxpool"):
        private_cost([PrivateLayer("m", "maxpool")], 10, profile)
    with pytest.raises(ValueError, match="unknown network"):
        private_cost(layers, 10, profile, "moon")


def test_relu_share_of_traffic_scales_with_the_kept_fraction():
    """The ReLU share of a 10%-kept network's traffic is 10% of the all-ReLU network's."""
    profile = load_cost_profile()
    linear = [PrivateLayer("fc", "linear", inputs=64, weights=64 * 320, macs=64 * 320)]
    full = private_cost(linear + [PrivateLayer("a", "relu", total=320, kept=320)], 10, profile)
    tenth = private_cost(linear + [PrivateLayer("a", "relu", total=320, kept=32)], 10, profile)
    assert tenth["relu_bytes"] * 10 == full["relu_bytes"] > 0
    assert tenth["linear_bytes"] == full["linear_bytes"] > tenth["relu_bytes"]


# ----------------------------------------------------------------------------- two parties

def _secure_outputs(rank, items):
    """Each case in both weight modes, with per-layer bytes and rounds of this party."""
    from snl_train.crypten_compat import import_crypten
    from snl_train.private import _Meter, _secure_forward, _share_params

    crypten = import_crypten()
    comm = crypten.communicator.get()
    out = {}
    for label, program, x in items:
        for mode in ("secret", "public"):
            params = _share_params(crypten, program.params, mode, rank)
            meter = _Meter(comm)
            logits = _secure_forward(crypten, program, params, x, rank, meter)
            out[label, mode] = (logits, {k: (int(v[0]), int(v[1])) for k, v in meter.rows.items()})
    return out


@pytest.fixture
def secure_runs():
    built = {label: case(label) for label in CASES}
    items = [(label, convert(model, x), x) for label, (model, x) in built.items()]
    return built, items, run_parties(_secure_outputs, (items,), timeout=300)


@needs_crypten
def test_secure_runs(secure_runs):
    """One two-party run of every case, checked three ways (the parties start only once)."""
    check_secure_output_equals_plaintext(*secure_runs)
    check_traffic_is_464_bytes_per_kept_relu_plus_the_linear_share(*secure_runs)
    check_an_empty_layer_costs_no_round(*secure_runs)


def check_secure_output_equals_plaintext(models, items, results):
    """Within fixed-point tolerance, and the same argmax wherever plaintext has a clear one."""
    for label, program, x in items:
        model, _ = models[label]
        with torch.no_grad():
            plain = model(x)
        for mode in ("secret", "public"):
            secure, _ = results[CLIENT][label, mode]
            assert results[SERVER][label, mode][0] is None  # the server never sees the logits
            assert torch.allclose(secure, plain, atol=5e-3, rtol=1e-3), (label, mode)
            top2 = plain.topk(2, dim=1).values
            clear = (top2[:, 0] - top2[:, 1]) > 0.02
            assert clear.any() and torch.equal(secure.argmax(1)[clear], plain.argmax(1)[clear])


def check_traffic_is_464_bytes_per_kept_relu_plus_the_linear_share(models, items, results):
    """Per layer and in total; a converter evaluating every ReLU fails this."""
    for label, program, x in items:
        batch = len(x)
        linear = [layer for layer in program.layers if layer.kind == "linear"]
        for mode in ("secret", "public"):
            rows = {}
            for rank in (SERVER, CLIENT):
                rows[rank] = results[rank][label, mode][1]
            assert rows[SERVER] == rows[CLIENT]  # both parties count the same traffic
            rows = rows[SERVER]
            for layer in program.layers:
                if layer.kind == "relu":
                    assert layer.kept < layer.total
                    assert rows.get(layer.name, (0, 0)) == (
                        ROUNDS_PER_RELU_LAYER if layer.kept else 0, BYTES_PER_RELU * batch * layer.kept)
            linear_share = 0 if mode == "public" else BYTES_PER_OPENED * sum(
                batch * layer.inputs + layer.weights for layer in linear)
            output = 8 * batch * program.outputs
            total = sum(b for _, b in rows.values())
            assert total == BYTES_PER_RELU * batch * program.relu_kept + linear_share + output
            predicted = private_cost(program.layers, program.outputs, batch_size=batch, weights=mode)
            assert (predicted["bytes"], predicted["rounds"]) == (total, sum(r for r, _ in rows.values()))


def check_an_empty_layer_costs_no_round(models, items, results):
    label, program, _ = items[0]
    empty = [layer for layer in program.layers if layer.kind == "relu" and layer.kept == 0]
    assert [layer.name for layer in empty] == ["features.4"]
    assert "features.4" not in results[CLIENT][label, "secret"][1] or \
        results[CLIENT][label, "secret"][1]["features.4"] == (0, 0)


def _fail_on_client(rank):
    if rank == CLIENT:
        raise ValueError("the client broke")
    return rank


def _die_on_server(rank):
    import os

    if rank == SERVER:
        os._exit(3)
    return rank


def _hang_on_client(rank):
    import time

    if rank == CLIENT:
        time.sleep(60)
    return rank


@needs_crypten
@pytest.mark.parametrize("fn, timeout, message", [
    (_fail_on_client, 60, "party 1 failed: ValueError: the client broke"),
    (_die_on_server, 60, "party 0 exited with code 3 without a result"),
    (_hang_on_client, 2, "did not finish within the timeout; still running: [1]"),
])
def test_a_failing_party_is_reported_never_a_silent_none(fn, timeout, message):
    with pytest.raises(PartyError) as info:
        run_parties(fn, timeout=timeout)
    assert message in str(info.value)


@needs_crypten
def test_parties_return_their_values_by_rank():
    assert run_parties(lambda rank, k: (rank, k * 2), (21,)) == [(0, 42), (1, 42)]


# ----------------------------------------------------------------------------- commands

@needs_crypten
def test_train_with_private_then_measure_again_with_the_command(tmp_path, capsys):
    """``python -m snl_train ... --private`` adds the measurement to result.json; then
    ``python -m snl_train.private`` measures the finished run again (one training for both)."""
    from snl_train.__main__ import main as train
    from snl_train.private import main

    out = tmp_path / "run"
    assert train(["--widths", "16,8", "--budget", "10", "--pretrain-epochs", "1", "--search-epochs",
                  "1", "--finetune-epochs", "1", "--out", str(out), "--quiet", "--private"]) == 0
    result = json.loads((out / "result.json").read_text())
    doc = json.loads((out / "private.json").read_text())
    assert doc["relu_kept"] == result["relu_count"] == result["private"]["relu_kept"]
    kept = {layer["name"]: layer["kept"] for layer in result["per_layer"]}
    for mode in ("secret", "public"):
        summary, full = result["private"]["modes"][mode], doc["modes"][mode]
        assert summary["bytes"] == full["bytes"] == sum(row["bytes"] for row in full["layers"])
        for row in full["layers"]:
            if row["kind"] == "relu":
                assert row["kept"] == kept[row["name"]]
                assert row["bytes"] == BYTES_PER_RELU * row["kept"]
        assert full["seconds_best"] <= full["seconds_median"]
        assert full["agreement"] >= 0.97 and full["samples"] == 100
    assert "online phase" in doc["engine"] and "trusted-dealer" in doc["engine"]
    capsys.readouterr()

    assert main([str(out), "--repeats", "2", "--warmup", "0", "--samples", "8", "--weights",
                 "public", "--batch-size", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "private.json").read_text())
    assert list(printed["modes"]) == ["public"] and printed["batch_size"] == 3
    assert len(printed["modes"]["public"]["seconds"]) == 2
    assert printed["modes"]["public"]["relu_bytes"] == 3 * BYTES_PER_RELU * printed["relu_kept"]


def _unfinished_run(path):
    from snl_train.checkpoint import FORMAT, save_checkpoint
    from snl_train.config import RunConfig

    save_checkpoint({"format": FORMAT, "stage": "search", "epoch": 3, "config": RunConfig().to_dict(),
                     "model": {}, "rng": {}}, path / "checkpoint.pt")
    return path


@pytest.mark.parametrize("make_args, message", [
    (lambda p: [str(p / "missing")], "no run directory"),
    (lambda p: [str(p)], "no finished run (no checkpoint.pt)"),
    (lambda p: [str(_unfinished_run(p))], "not finished (stage search, epoch 3)"),
    (lambda p: [str(p), "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (lambda p: [str(p), "--repeats", "-2"], "--repeats: must be >= 1, got -2"),
    (lambda p: [str(p), "--samples", "x"], "--samples: expected an integer"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, make_args, message):
    from snl_train.private import main

    if not crypten_available() and "must be" not in message and "expected" not in message:
        pytest.skip("without CrypTen the command stops at the install hint")
    assert main(make_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m snl_train.private: error: ") and message in err


def test_without_crypten_the_command_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys

    from snl_train.private import main

    monkeypatch.setitem(sys.modules, "crypten", None)  # what an uninstalled package looks like to import
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install --no-deps crypten==0.4.1" in err


def gelu_net(num_classes, in_shape):
    """A model factory with an op private inference cannot run (for --model test_private:gelu_net)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 8), nn.GELU(),
                         nn.Linear(8, num_classes))


@needs_crypten
def test_train_with_private_refuses_an_unsupported_model_before_training(tmp_path, capsys):
    from snl_train.__main__ import main as train

    code = train(["--model", "test_private:gelu_net", "--budget", "0", "--out", str(tmp_path),
                  "--quiet", "--private"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "GELU" in err
    assert not (tmp_path / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------- figure

def _row(model, mode, kept, seconds, nbytes, rounds, layers=1):
    return {"label": f"{model}-{kept}", "model": model, "mode": mode, "batch": 1, "kept": kept,
            "relu_layers": layers, "seconds": seconds, "bytes": nbytes, "rounds": rounds,
            "delphi_seconds": 0.001 + kept * 21e-6, "predicted": {"localhost": {"seconds": 2 * seconds}}}


PRIVATE_DOC = {
    "conditions": {"engine": "CrypTen, 2 parties: online phase only"},
    "networks": [_row("mlp", "secret", 40, 0.3, 600_000, 22, 2), _row("mlp", "secret", 10, 0.2, 545_000, 13),
                 _row("mlp", "public", 40, 0.2, 18_640, 19, 2), _row("mlp", "public", 10, 0.1, 4_720, 10),
                 _row("convnet", "secret", 160, 0.5, 200_000, 32, 3),
                 _row("convnet", "public", 160, 0.4, 74_320, 28, 3)],
    "fit": [_row("mlp", "public", k, s, 0, 0, layers) for k, s, layers in
            ((0, 0.01, 0), (1, 0.1, 1), (20, 0.11, 1), (2, 0.2, 2), (320, 0.22, 2))],
}


def test_private_figure_draws_the_measured_values():
    import matplotlib

    matplotlib.use("Agg")
    from figures import plots

    fig = plots.plot_private(PRIVATE_DOC)
    latency, traffic, rounds, layers = fig.axes
    secret = [l for l in latency.get_lines() if l.get_label() == "MLP, secret weights"][0]
    assert list(secret.get_xdata()) == [10, 40] and list(secret.get_ydata()) == [0.2, 0.3]
    delphi = [l for l in latency.get_lines() if l.get_label() == "MLP, DELPHI estimate"][0]
    assert list(delphi.get_ydata()) == pytest.approx([0.00121, 0.00184])
    conv = [l for l in rounds.get_lines() if l.get_label() == "ConvNet, public"][0]
    assert list(conv.get_ydata()) == [28]
    relu_only = [l for l in traffic.get_lines() if l.get_label().startswith("464 bytes")][0]
    assert list(relu_only.get_ydata()) == [464 * 10, 464 * 40, 464 * 160]
    by_layers = {l.get_label(): list(l.get_ydata()) for l in layers.get_lines()}
    assert by_layers["1 ReLU layer keeping any"] == [0.1, 0.11]
    assert by_layers["2 ReLU layers keeping any"] == [0.2, 0.22]


def test_figures_command_draws_the_private_figure_from_its_results_file():
    from figures import plots

    assert ("private", "private", plots.plot_private) in plots.FIGURES


@pytest.mark.parametrize("name", ["snl_train.private", "snl_train.accounting"])
def test_docstring_examples(name):
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(name))
    assert tried > 0 and failures == 0
