"""Edge cases of snl_train.accounting that a wrong count or estimate could otherwise pass:
slopes exactly at epsilon, exact integer counts, excluded sites, several sites of one family,
the latency estimate's arguments and clock (a fake one: plaintext time per sample is exact),
0 ReLUs, and the MPC cost model's every term on a profile with distinct constants."""

from __future__ import annotations

import dataclasses
import itertools
import json
import types
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snl_train import accounting
from snl_train.accounting import (CostProfile, ModeCosts, NetworkPreset, PrivateLayer, SiteCount,
                                  comparison_costs, load_cost_profile, network_preset, online_latency,
                                  latency_cost_model, private_cost, relu_counts, relu_layer_cost,
                                  relu_prices, total_kept, training_only_counts)
from snl_train.gates import add_gates, gate_sites


class Two(nn.Module):
    """LeakyReLU (3 wide) then ReLU (2 wide); counts forward calls; takes a second argument."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 3), nn.Linear(3, 2)
        self.leaky = nn.LeakyReLU(0.1)
        self.calls = 0

    def forward(self, x, shift=0.0):
        self.calls += 1
        return F.relu(self.fc2(self.leaky(self.fc1(x)) + shift))


def _gated_two(values):
    model, x = Two(), torch.zeros(4, 5)
    add_gates(model, example_input=x)
    (_, first), (_, second) = gate_sites(model)
    with torch.no_grad():
        first.c.copy_(torch.tensor(values[:3]))
        second.c.copy_(torch.tensor(values[3:]))
    return model, x


def test_a_slope_exactly_at_epsilon_is_not_kept():
    """kept counts c > epsilon, strictly: c == epsilon is linear, at the default 0.01 too."""
    model, x = _gated_two([0.25, 0.2500001, 0.0, 0.01, 0.5])
    assert [s.kept for s in relu_counts(model, x, epsilon=0.25)] == [1, 1]
    assert total_kept(model, x, 0.25) == 2
    # default epsilon 0.01: 0.25, 0.2500001 and 0.5 are above it, 0.0 and 0.01 are not
    assert [s.kept for s in relu_counts(model, x)] == [2, 1]
    assert total_kept(model, x) == 3
    assert relu_counts(model, x) == [SiteCount("leaky", 3, 2, "leaky_relu"),
                                     SiteCount("relu", 2, 1, "relu")]


def test_counts_are_exact_integers_for_channel_gates_and_tuple_inputs():
    """A channel slope covers H*W ReLUs; counts are ints (not floats that compare equal)."""
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
    x = torch.zeros(2, 1, 2, 3)
    add_gates(net, "channel", example_input=x)
    with torch.no_grad():
        gate_sites(net)[0][1].c.copy_(torch.tensor([0.5, 0.0, 2.0]).view(3, 1, 1))
    (site,) = relu_counts(net, x)
    assert (site.total, site.kept) == (18, 12)
    assert type(site.total) is int and type(site.kept) is int
    model = Two()
    counts = relu_counts(model, (torch.zeros(3, 5), torch.ones(3)))
    assert [(s.name, s.total, s.kept) for s in counts] == [("leaky", 3, 3), ("relu", 2, 2)]


def test_an_excluded_site_keeps_all_of_its_activations_and_its_family():
    """An excluded site counts as kept in full; the gated sites after it are still counted."""
    model, x = Two(), torch.zeros(2, 5)
    add_gates(model, exclude=["leaky"], example_input=x)
    with torch.no_grad():
        gate_sites(model)[0][1].c.zero_()
    assert relu_counts(model, x) == [SiteCount("leaky", 3, 3, "leaky_relu"),
                                     SiteCount("relu", 2, 0, "relu")]


def test_unshaped_gates_are_shaped_by_the_count_itself():
    """Gated without an example input, the gates get their shapes from relu_counts' input."""
    model = add_gates(Two())
    assert relu_counts(model, torch.zeros(2, 5)) == [SiteCount("leaky", 3, 3, "leaky_relu"),
                                                     SiteCount("relu", 2, 2, "relu")]


class TrainingOnlyHead(nn.Module):
    """A ReLU6 auxiliary head that runs only in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.aux = nn.Linear(4, 3), nn.Linear(3, 5)

    def forward(self, x):
        h = F.relu(self.body(x))
        if self.training:
            return h + F.relu6(self.aux(h)).sum(1, keepdim=True)
        return h


def test_training_only_sites_keep_their_family_and_need_an_input_when_ungated():
    model, x = TrainingOnlyHead(), torch.zeros(2, 4)
    (site,) = training_only_counts(model, x)
    assert (site.total, site.kept, site.family) == (5, 0, "relu6")
    with pytest.raises(ValueError, match="^training_only_counts: an ungated model needs an "
                                         "example_input$"):
        training_only_counts(model)


def test_training_only_counts_of_an_ungated_and_a_gated_model():
    from snl_train.replicas import aux_head_net

    torch.manual_seed(0)
    model, x = aux_head_net(3, (3, 8, 8), width=2), torch.zeros(1, 3, 8, 8)
    (ungated,) = training_only_counts(model, x)
    assert (ungated.name, ungated.total, ungated.kept, ungated.family) == ("aux.3", 16, 0, "relu")
    add_gates(model, example_input=x)
    assert training_only_counts(model, x) == training_only_counts(model) == [ungated]


def test_comparison_costs_add_up_several_sites_of_one_family():
    counts = [SiteCount("a", 10, 4), SiteCount("b", 6, 3), SiteCount("c", 5, 5, "hardtanh"),
              SiteCount("d", 7, 2, "hardtanh")]
    assert comparison_costs(counts) == {
        "relu": {"sites": 2, "total": 16, "kept": 7, "comparisons_per_element": 1,
                 "kept_comparisons": 7},
        "hardtanh": {"sites": 2, "total": 12, "kept": 7, "comparisons_per_element": 2,
                     "kept_comparisons": 14}}
    assert comparison_costs([]) == {}


# ----------------------------------------------------------------------------- latency

class FakeClock:
    """``time.perf_counter`` stand-in: each timed forward lasts the next of ``durations``."""

    def __init__(self, durations) -> None:
        # each forward starts at a later, non-zero time: a wrong sign in end - start shows
        starts = [10.0 * (k + 1) for k in range(len(durations))]
        self.readings = itertools.chain.from_iterable((t, t + d) for t, d in zip(starts, durations))

    def perf_counter(self) -> float:
        return next(self.readings)


def test_plaintext_time_is_the_median_forward_divided_by_the_batch(monkeypatch):
    """Forwards of 0.8, 0.2 and 0.4 s on a batch of 4: 0.4 / 4 = 0.1 s per sample."""
    monkeypatch.setattr(accounting, "time", types.SimpleNamespace(
        perf_counter=FakeClock([0.8, 0.2, 0.4]).perf_counter))
    model = Two()
    estimate = online_latency(model, torch.zeros(4, 5), relu_count=3000, repeats=3, warmup=2)
    assert model.calls == 5  # 2 untimed, 3 timed
    assert estimate == {"plaintext_seconds": pytest.approx(0.1), "relu_count": 3000,
                        "relu_seconds": pytest.approx(0.063), "total_seconds": pytest.approx(0.163),
                        "seconds_per_1000_relus": 0.021, "batch_size": 4}
    assert type(estimate["relu_count"]) is int


def test_latency_defaults_tuple_inputs_and_the_argument_bounds():
    model = Two()
    online_latency(model, torch.zeros(3, 5), relu_count=1)
    assert model.calls == 6  # warmup 1 + repeats 5 by default
    args = (torch.zeros(3, 5), torch.ones(1, 3))  # the batch is the first argument's: 3
    estimate = online_latency(model, args, relu_count=0, repeats=1, warmup=0,
                              seconds_per_1000_relus=0)
    assert estimate["batch_size"] == 3 and estimate["relu_seconds"] == 0
    for bad in ({"repeats": 0}, {"warmup": -1}, {"repeats": 0, "warmup": 0},
                {"seconds_per_1000_relus": -0.001}, {"relu_count": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            online_latency(model, args, **{"relu_count": 1, **bad})


def test_latency_at_zero_relus_and_the_default_count_with_its_epsilon():
    """A fully linearized model costs its plaintext time only; the default count uses epsilon."""
    model, x = _gated_two([0.0, 0.0, 0.0, 0.0, 0.0])
    zero = online_latency(model, x, repeats=1)
    assert zero["relu_count"] == 0 and zero["relu_seconds"] == 0
    assert zero["total_seconds"] == zero["plaintext_seconds"] > 0
    model, x = _gated_two([0.3, 0.6, 0.9, 0.6, 0.05])
    assert online_latency(model, x, repeats=1)["relu_count"] == 5
    assert online_latency(model, x, repeats=1, epsilon=0.5)["relu_count"] == 3


# ----------------------------------------------------------------------------- MPC cost model

def _profile() -> CostProfile:
    """Constants that are distinct powers of two, so every term is exact and identifiable."""
    secret = ModeCosts(linear_bytes_per_input=4, linear_bytes_per_weight=2, linear_rounds=3,
                       seconds_per_inference=0.5, seconds_per_relu_layer=0.25,
                       seconds_per_relu=2.0 ** -4, seconds_per_linear_layer=2.0 ** -5,
                       seconds_per_mac=2.0 ** -10)
    public = ModeCosts(0, 0, 0, 0.75, 0.125, 2.0 ** -6, 2.0 ** -7, 2.0 ** -12)
    return CostProfile("test", "none", bytes_per_relu=64, rounds_per_relu_layer=5,
                       output_bytes_per_element=16, output_rounds=7,
                       loopback=NetworkPreset("localhost", 2.0 ** -3, 2.0 ** 8, "test loop"),
                       modes={"secret": secret, "public": public})


def test_one_relu_layer_costs_its_rounds_bytes_and_compute():
    profile = _profile()
    net = NetworkPreset("n", 0.5, 1024.0, "test")
    assert relu_layer_cost(3, profile, net, batch_size=2) == {
        "bytes": 64 * 3 * 2, "rounds": 5, "compute_seconds": 0.25 + 2.0 ** -4 * 6,
        "seconds": 0.25 + 2.0 ** -4 * 6 + 5 * 0.5 + 384 / 1024}
    public = relu_layer_cost(3, profile, net, batch_size=2, weights="public")
    assert public["compute_seconds"] == 0.125 + 2.0 ** -6 * 6 and public["bytes"] == 384
    assert public["seconds"] == pytest.approx(0.125 + 2.0 ** -6 * 6 + 5 * 0.5 + 384 / 1024)
    one = relu_layer_cost(1, profile)  # defaults: localhost (the loopback), batch 1, secret
    assert one == {"bytes": 64, "rounds": 5, "compute_seconds": 0.25 + 2.0 ** -4,
                   "seconds": 0.25 + 2.0 ** -4 + 5 * 2.0 ** -3 + 64 / 256}
    assert relu_layer_cost(0, profile, net) == {"bytes": 0, "rounds": 0, "compute_seconds": 0.0,
                                                "seconds": 0.0}
    for kept, batch in ((-1, 1), (1, 0)):
        with pytest.raises(ValueError, match="kept >= 0 and batch_size >= 1"):
            relu_layer_cost(kept, profile, net, batch)
    with pytest.raises(ValueError, match="weights must be one of"):
        relu_layer_cost(1, profile, net, weights="hidden")


def test_private_cost_is_the_sum_of_its_layers_and_the_output():
    profile = _profile()
    layers = [PrivateLayer("fc1", "linear", inputs=8, weights=32, macs=64),
              PrivateLayer("r1", "relu", total=9, kept=3), PrivateLayer("r2", "relu", total=4),
              PrivateLayer("fc2", "linear", inputs=4, weights=8, macs=16)]
    net = NetworkPreset("n", 0.5, 1024.0, "test")
    cost = private_cost(layers, outputs=2, profile=profile, network=net, batch_size=2)
    relu_bytes, linear_bytes, out_bytes = 64 * 3 * 2, 4 * (8 + 4) * 2 + 2 * (32 + 8), 16 * 2 * 2
    compute = 0.5 + (0.25 + 2.0 ** -4 * 6) + 2 * 2.0 ** -5 + 2.0 ** -10 * (64 + 16) * 2
    rounds = 5 + 3 + 3 + 7
    assert cost == {"bytes": relu_bytes + linear_bytes + out_bytes, "rounds": rounds,
                    "relu_bytes": relu_bytes, "linear_bytes": linear_bytes, "output_bytes": out_bytes,
                    "compute_seconds": compute,
                    "seconds": pytest.approx(compute + rounds * 0.5
                                             + (relu_bytes + linear_bytes + out_bytes) / 1024),
                    "network": "n", "weights": "secret", "batch_size": 2}
    public = private_cost(layers, 2, profile, "localhost", 1, "public")
    assert (public["linear_bytes"], public["relu_bytes"], public["rounds"]) == (0, 192, 5 + 7)
    assert public["network"] == "localhost" and public["weights"] == "public"
    assert public["compute_seconds"] == 0.75 + 0.125 + 3 * 2.0 ** -6 + 2 * 2.0 ** -7 + 80 * 2.0 ** -12
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        private_cost(layers, 2, profile, net, 0)
    with pytest.raises(ValueError, match=r"does not model 'maxpool' layers \(pool\)"):
        private_cost([PrivateLayer("pool", "maxpool")], 2, profile, net)


def test_relu_prices_are_compute_rounds_and_bytes_per_relu_and_per_layer():
    """beta = (compute per ReLU + bytes / bandwidth) x batch; rho = compute per layer +
    rounds x RTT; written out from the profile's constants, for both weight modes."""
    profile, net = _profile(), NetworkPreset("n", 0.5, 1024.0, "test")
    assert relu_prices(profile, net, batch_size=2) == ((2.0 ** -4 + 64 / 1024) * 2, 0.25 + 5 * 0.5)
    assert relu_prices(profile, net, 1, "public") == (2.0 ** -6 + 64 / 1024, 0.125 + 5 * 0.5)
    # defaults: the profile's loopback, batch 1, secret weights
    assert relu_prices(profile) == (2.0 ** -4 + 64 / 256, 0.25 + 5 * 2.0 ** -3)
    # a layer keeping k ReLUs costs rho + k beta, as relu_layer_cost says
    beta, rho = relu_prices(profile, net, 2)
    assert relu_layer_cost(3, profile, net, 2)["seconds"] == pytest.approx(rho + 3 * beta)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        relu_prices(profile, net, 0)
    with pytest.raises(ValueError, match="weights must be one of"):
        relu_prices(profile, net, 1, "hidden")


def test_latency_cost_model_prices_the_relus_apart_from_everything_else():
    """linear = the private cost with every ReLU layer emptied (whatever the layers keep),
    beta and rho = relu_prices, each read exactly from the decimal its float prints as."""
    profile, net = _profile(), NetworkPreset("n", 0.5, 1024.0, "test")
    layers = [PrivateLayer("fc1", "linear", inputs=8, weights=32, macs=64),
              PrivateLayer("r1", "relu", total=9, kept=3), PrivateLayer("r2", "relu", total=4, kept=4),
              PrivateLayer("fc2", "linear", inputs=4, weights=8, macs=16)]
    cost = latency_cost_model(layers, 2, profile, net, batch_size=2)
    compute = 0.5 + 2 * 2.0 ** -5 + 2.0 ** -10 * (64 + 16) * 2  # inference, linear layers, MACs
    rounds, sent = 3 + 3 + 7, 4 * (8 + 4) * 2 + 2 * (32 + 8) + 16 * 2 * 2
    linear = compute + rounds * 0.5 + sent / 1024
    assert cost.linear == Fraction(repr(linear))
    assert (cost.per_relu, cost.per_layer) == (Fraction(repr((2.0 ** -4 + 64 / 1024) * 2)),
                                               Fraction(repr(0.25 + 5 * 0.5)))
    # what the ReLU layers keep does not change the model; the whole cost is linear + ReLUs
    emptied = [dataclasses.replace(layer, kept=0) for layer in layers]
    assert latency_cost_model(emptied, 2, profile, net, batch_size=2) == cost
    full = private_cost(layers, 2, profile, net, 2)["seconds"]
    assert float(cost.linear + 2 * cost.per_layer + 7 * cost.per_relu) == pytest.approx(full)
    public = latency_cost_model(layers, 2, profile, net, 1, "public")
    assert public.per_layer == Fraction(repr(0.125 + 5 * 0.5))
    assert public.linear == Fraction(repr(0.75 + 2 * 2.0 ** -7 + 2.0 ** -12 * 80 + 7 * 0.5 + 32 / 1024))
    assert latency_cost_model([PrivateLayer("r", "relu", total=2, kept=1)], 1) == \
        latency_cost_model([PrivateLayer("r", "relu", total=2, kept=1)], 1, load_cost_profile(),
                           "localhost", 1, "secret")


def test_private_cost_defaults_to_the_shipped_profile_on_localhost():
    layers = [PrivateLayer("r", "relu", total=2, kept=2)]
    shipped = load_cost_profile()
    assert private_cost(layers, 1) == private_cost(layers, 1, shipped, shipped.loopback, 1, "secret")
    assert private_cost(layers, 1)["network"] == "localhost"


def test_network_presets_by_name_or_object():
    profile = _profile()
    assert network_preset("localhost", profile) is profile.loopback
    assert network_preset("wan", profile).rtt == 80e-3 and network_preset("lan", profile).rtt == 0.3e-3
    own = NetworkPreset("mine", 1.0, 2.0, "")
    assert network_preset(own, profile) is own
    with pytest.raises(ValueError, match="unknown network 'moon'; expected localhost, lan, wan"):
        network_preset("moon", profile)


def test_cost_profiles_load_every_field_and_name_what_is_wrong(tmp_path, monkeypatch):
    doc = json.loads((accounting.PROFILE_DIR / "crypten-2pc.json").read_text())
    doc["loopback"].pop("description")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(doc))
    profile = load_cost_profile(path)
    assert profile.name == "crypten-2pc" and profile.engine.startswith("CrypTen")
    assert (profile.bytes_per_relu, profile.rounds_per_relu_layer, profile.output_bytes_per_element,
            profile.output_rounds) == (464, 9, 8, 1)
    assert profile.loopback == NetworkPreset("localhost", doc["loopback"]["rtt"],
                                             doc["loopback"]["bandwidth"], "this machine's loopback")
    assert profile.modes["public"] == ModeCosts(**doc["modes"]["public"])
    assert profile.info == doc["info"]
    shipped = json.loads((accounting.PROFILE_DIR / "crypten-2pc.json").read_text())
    assert load_cost_profile("crypten-2pc").loopback.description == shipped["loopback"]["description"]
    other = tmp_path / "profile.txt"  # a file is read as it is, whatever its suffix
    other.write_text(json.dumps(doc))
    assert load_cost_profile(other) == profile
    doc.pop("info")
    path.write_text(json.dumps(doc))
    assert load_cost_profile(str(path)).info == {}
    missing = tmp_path / "gone.json"
    with pytest.raises(ValueError, match=r"^no cost profile '.*gone.json' \(No such file or "
                                         r"directory\); known names: crypten-2pc$"):
        load_cost_profile(missing)
    monkeypatch.setattr(accounting, "PROFILE_DIR", tmp_path)
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(ValueError, match=r"known names: a, mine$"):
        load_cost_profile("none")
    for text, error in (("[1]", "TypeError"), ('{"loopback": {}}', "KeyError"),
                        ("{", "JSONDecodeError")):
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"mine.json is not a cost profile \({error}: "):
            load_cost_profile(path)
