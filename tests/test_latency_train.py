"""Training under a latency budget (snl_train.latency): the cost model in capacity's terms, the
binarization that keeps the budget exactly, the per-site group penalty, the trainer and
command, and the latency experiment's --quick path (one shared CrypTen run)."""
from __future__ import annotations

import functools
import itertools
import json
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from capacity.latency import cost_model, latency, parse_cost_profile
from snl_train.accounting import (PrivateLayer, latency_cost_model, load_cost_profile, private_cost,
                                  relu_counts)
from snl_train.crypten_compat import crypten_available
from snl_train.gates import add_gates, gate_parameters, gate_sites
from snl_train.latency import (LatencyPlan, binarize_within_latency, cost_profile_json, gate_penalty,
                               group_weight, latency_allocation, latency_plan)
from snl_train.models import MLP, SmallConvNet

X_MLP = torch.zeros(1, 12)


# ----------------------------------------------------------------------------- the cost model

@pytest.mark.parametrize("network", ["localhost", "lan", "wan"])
def test_capacity_cost_model_prices_a_network_as_private_cost_does(network):
    """latency(kept, CostModel) = private_cost(layers keeping kept)["seconds"] for any kept
    counts, empty sites included: one cost arithmetic, two formats."""
    x = torch.zeros(1, 1, 8, 8)
    from snl_train.private import convert

    program = convert(SmallConvNet(1, 10, 4), x)
    profile = load_cost_profile()
    cost = latency_cost_model(program.layers, program.outputs, profile, network)
    relus = [layer for layer in program.layers if layer.kind == "relu"]
    for kept in itertools.product(*[(0, 1, layer.total // 3, layer.total) for layer in relus]):
        it = iter(kept)
        layers = [PrivateLayer(layer.name, layer.kind, layer.total, next(it), layer.inputs, layer.weights,
                               layer.macs) if layer.kind == "relu" else layer for layer in program.layers]
        expected = private_cost(layers, program.outputs, profile, network)["seconds"]
        assert float(latency(kept, cost)) == pytest.approx(expected, rel=1e-12)
    # capacity.optimize --cost reads the same numbers back, exactly
    assert parse_cost_profile(json.dumps(cost_profile_json(cost))) == cost


def test_latency_plan_prices_sites_and_refuses_what_cannot_fit():
    net = MLP(12, [8, 4], 3)
    plan = latency_plan(net, X_MLP, "3", "wan")
    assert [(name, total) for name, total, _ in plan.sites] == [("features.2", 8), ("features.4", 4)]
    assert plan.fixed == plan.cost.linear and plan.relu_budget() == 12
    tight = latency_plan(net, X_MLP, repr(float(plan.cost.linear + plan.cost.per_layer + 5 * plan.cost.per_relu) * (1 + 1e-12)), "wan")
    assert tight.max_sites == 1 and tight.relu_budget() == 5  # one site, 5 ReLUs
    with pytest.raises(ValueError, match="below the cost of the linear layers alone"):
        latency_plan(net, X_MLP, repr(float(plan.cost.linear) * 0.999), "wan")
    with pytest.raises(ValueError, match="must be at least 0"):
        latency_plan(net, X_MLP, -1.0)
    with pytest.raises(ValueError, match="unknown network 'moon'"):
        latency_plan(net, X_MLP, 1.0, "moon")
    gelu = nn.Sequential(nn.Linear(12, 4), nn.GELU(), nn.ReLU(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="needs the network priced by the cost model.*GELU"):
        latency_plan(gelu, X_MLP, 1.0)


# ----------------------------------------------------------------------------- binarization

@functools.lru_cache(maxsize=1)
def _mlp_with_gates():
    return add_gates(MLP(12, [6, 4, 3], 2), example_input=X_MLP)


def _gated_mlp(values):
    """An MLP with sites of 6, 4 and 3 ReLUs, gated, slopes set from ``values`` (one network
    for every call: gating it once keeps the property test fast)."""
    net = _mlp_with_gates()
    flat = iter(values)
    with torch.no_grad():
        for c in gate_parameters(net):
            c.copy_(torch.tensor([next(flat) for _ in range(c.numel())]).view_as(c))
    return net


def _plan(net, budget, beta, rho, linear=0):
    sites = tuple((s.name, s.total, True) for s in relu_counts(net, X_MLP))
    return LatencyPlan(Fraction(budget), cost_model(beta, rho, linear), "test", "test", sites)


def _best_kept(available, budget, beta, rho, linear):
    """Brute force: the most ReLUs any choice of active sites keeps within the budget."""
    best = 0
    for active in itertools.product((0, 1), repeat=len(available)):
        spare = budget - linear - rho * sum(active)
        if spare >= 0:
            affordable = spare // beta if beta else math.inf
            best = max(best, min(affordable, sum(a for a, on in zip(available, active) if on)))
    return best


def _fewest_sites(available, budget, beta, rho, linear, most):
    """Brute force: the fewest active sites of any choice that keeps ``most`` ReLUs."""
    fewest = len(available)
    for active in itertools.product((0, 1), repeat=len(available)):
        spare = budget - linear - rho * sum(active)
        if spare >= 0:
            affordable = spare // beta if beta else math.inf
            if min(affordable, sum(a for a, on in zip(available, active) if on)) == most:
                fewest = min(fewest, sum(active))
    return fewest


SLOPES = st.lists(st.sampled_from([-0.5, 0.0, 0.005, 0.3, 0.7, 1.0]), min_size=13, max_size=13)


@settings(max_examples=40, deadline=None)
@given(SLOPES, st.integers(0, 40), st.integers(1, 3), st.integers(0, 12), st.integers(0, 5))
@example([1.0] * 13, 14, 1, 5, 0)  # emptying two sites keeps 6 ReLUs; all three would keep 0
@example([1.0] * 6 + [0.3] * 4 + [0.005] * 3, 23, 1, 5, 0)  # two sites: 10 > 6 + ... fits exactly
@example([1.0] * 13, 40, 0, 12, 3)  # ReLUs are free: every site keeps everything it can afford
@example([0.3] * 6 + [1.0] * 4 + [0.0] * 3, 16, 1, 5, 0)  # 6 ReLUs in one site or in two: one
def test_binarization_keeps_the_budget_and_the_most_relus(values, budget, beta, rho, linear):
    """Within the budget under the cost model, every kept slope was above epsilon, and as
    many ReLUs kept as the best choice of active sites allows (emptying sites when that keeps
    more; of choices keeping as many, one with the fewest sites), whatever the search left
    (here: any slopes, as at its epoch limit)."""
    net = _gated_mlp(values)
    plan = _plan(net, max(budget, linear), beta, rho, linear)
    before = [c.detach().clone() for c in gate_parameters(net)]
    counts = binarize_within_latency(net, plan, 0.01, X_MLP)
    assert plan.estimate(counts) <= plan.budget
    available = [int((c > 0.01).sum()) for c in before]
    kept = [int(c.sum()) for c in gate_parameters(net)]
    most = _best_kept(available, plan.budget, beta, rho, linear)
    assert sum(kept) == most
    # ties go to fewer sites: no more sites keep ReLUs than the fewest that keep as many
    assert sum(k > 0 for k in kept) <= _fewest_sites(available, plan.budget, beta, rho, linear, most)
    for c, old in zip(gate_parameters(net), before):
        assert set(c.flatten().tolist()) <= {0.0, 1.0}
        assert bool((old[c == 1] > 0.01).all())
        if 0 < c.sum() < (old > 0.01).sum():  # a partly kept site keeps its largest slopes
            assert old[c == 1].min() >= old[(c == 0) & (old > 0.01)].max()


def test_binarization_with_channel_gates_keeps_the_budget():
    x = torch.zeros(1, 1, 8, 8)
    net = add_gates(SmallConvNet(1, 10, 2), granularity="channel", example_input=x)
    torch.manual_seed(0)
    with torch.no_grad():
        for c in gate_parameters(net):
            c.uniform_(0.02, 1.0)
    sites = tuple((s.name, s.total, True) for s in relu_counts(net, x))
    for budget in (0, 20, 64, 100, 200):
        copy_ = add_gates(SmallConvNet(1, 10, 2), granularity="channel", example_input=x)
        copy_.load_state_dict(net.state_dict())
        plan = LatencyPlan(Fraction(budget), cost_model(1, 30), "test", "test", sites)
        counts = binarize_within_latency(copy_, plan, 0.01, x)
        assert plan.estimate(counts) <= budget
        assert all(s.kept % (s.total // gate.c.numel()) == 0
                   for s, (_, gate) in zip(counts, gate_sites(copy_)))


def test_fixed_allocations_under_a_latency_budget_follow_capacity():
    from capacity.allocation import AllocationError, Site
    from capacity.latency import latency_sharp_optimum

    net = _gated_mlp([1.0] * 13)
    plan = _plan(net, 30, 1, 10)
    sites = [Site(name, total, 1, 2) for name, total, _ in plan.sites]
    sharp = latency_allocation("sharp", sites, plan)
    assert list(sharp.counts) == list(max(latency_sharp_optimum([6, 4, 3], 30, plan.cost).integer_retained))
    assert latency(sharp.counts, plan.cost) <= 30 and sharp.counts.count(0) == 1
    assert latency_allocation("uniform", sites, plan).counts == (0, 0, 0)  # three sites cost 30
    uniform = latency_allocation("uniform", sites, _plan(net, 40, 1, 10))
    assert uniform.total == 10 and 0 not in uniform.counts
    with pytest.raises(AllocationError, match="over the latency budget"):
        latency_allocation("file", sites, plan, {"features.2": 6, "features.4": 4, "features.6": 3})
    with pytest.raises(AllocationError, match="--granularity pixel"):
        latency_allocation("sharp", [Site("a", 8, 4, 2)], plan)


# ----------------------------------------------------------------------------- group penalty

def test_group_penalty_pushes_weak_sites_hardest_and_keeps_lambdas_scale():
    """At c = 1 the penalty is sum |c| whatever the weight; its gradient per slope is
    proportional to c_i / ||c_s||, so a site left with one small slope is pushed down far
    harder than a full one (sum |c| pushes every slope alike)."""
    net = _gated_mlp([1.0] * 13)
    assert gate_penalty(net, 500.0).item() == pytest.approx(gate_penalty(net).item()) == 13
    with torch.no_grad():
        third = gate_parameters(net)[2]
        third.copy_(torch.tensor([0.2, 0.0, 0.0]))
    for weight, ratio in ((0.0, 1.0), (500.0, None)):
        for c in gate_parameters(net):
            c.grad = None
        gate_penalty(net, weight).backward()
        full, weak = gate_parameters(net)[0].grad[0].item(), gate_parameters(net)[2].grad[0].item()
        if ratio is not None:
            assert weak == pytest.approx(full)
        else:  # 1 + w / sqrt(3), against 1 + w / sqrt(6) / sqrt(6), times the same scale
            assert weak / full == pytest.approx((1 + 500 / math.sqrt(3)) / (1 + 500 / 6))


def test_group_weight_is_the_cost_models_ratio():
    net = _gated_mlp([1.0] * 13)
    assert group_weight(_plan(net, 30, 2, 10), 1.0) == 5.0
    assert group_weight(_plan(net, 30, 2, 10), 0.0) == 0.0
    assert group_weight(_plan(net, 30, 0, 10), 1.0) == 6.0  # beta = 0: the widest site


# ----------------------------------------------------------------------------- trainer and command

def _tiny(tmp_path, *extra):
    return ["--dataset", "digits", "--widths", "8,4", "--pretrain-epochs", "1", "--search-epochs", "1",
            "--finetune-epochs", "1", "--threads", "1", "--quiet", "--out", str(tmp_path), *extra]


def test_search_at_its_epoch_limit_still_binarizes_within_the_latency_budget(tmp_path):
    """One search epoch leaves nearly every slope above epsilon; binarization keeps the budget
    (one site and 3 ReLUs) exactly, and result.json's estimate is the cost model's."""
    from snl_train.__main__ import main

    plan = latency_plan(MLP(64, [8, 4], 10), torch.zeros(1, 64), 1.0, "lan")
    budget = float(plan.cost.linear + plan.cost.per_layer + 3 * plan.cost.per_relu) * (1 + 1e-12)
    assert main(_tiny(tmp_path, "--latency-budget", repr(budget), "--network", "lan")) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    lat = result["latency_budget"]
    assert not lat["reached_by_search"] and result["relu_count_before"] > 3
    assert [layer["kept"] for layer in result["per_layer"]] in ([3, 0], [0, 3])
    cost = parse_cost_profile(json.dumps(lat["cost_model"]))
    kept = [layer["kept"] for layer in result["per_layer"]]
    assert latency(kept, cost) <= Fraction(repr(budget)) and lat["within_budget"]
    assert lat["estimated_seconds"] == pytest.approx(float(latency(kept, cost)))
    assert lat["network"] == "lan" and lat["active_sites"] == 1 and lat["predicted_sharp"]["integer_retained"] == [3, 0]


def test_measured_latency_joins_the_estimate_in_result_json(tmp_path):
    from snl_train.private import attach_to_result

    (tmp_path / "result.json").write_text(json.dumps({"latency_budget": {"weights": "secret"}}))
    doc = {"engine": "e", "batch_size": 1, "repeats": 3, "relu_kept": 5,
           "modes": {m: {"seconds_median": s, "bytes": 1} for m, s in (("secret", 0.2), ("public", 0.1))}}
    lat = attach_to_result(tmp_path, doc)["latency_budget"]
    assert lat["measured_seconds"] == 0.2 and lat["measured_network"] == "localhost"


@pytest.mark.parametrize("argv, fragment", [
    (["--latency-budget=-0.1"], "--latency-budget: must be >= 0"),
    (["--latency-budget", "0.2", "--budget", "3"], "give exactly one of --budget N, --budget-fraction F or --latency-budget"),
    (["--budget", "3", "--network", "wan"], "--network only applies with --latency-budget"),
    (["--latency-budget", "0.2", "--network", "moon"], "invalid choice: 'moon'"),
    (["--latency-budget", "0.2", "--cost-profile", "nowhere/p.json"], "cannot read --cost-profile"),
    (["--latency-budget", "0.2", "--group-penalty", "-1"], "--group-penalty: must be in [0, 1000000]"),
    (["--latency-budget", "0.01"], "below the cost of the linear layers alone"),
    (["--latency-budget", "0.2", "--cost-profile", "no-such-profile"], "no cost profile 'no-such-profile'"),
    (["--latency-budget", "0.2", "--allocation", "sharp", "--model", "convnet", "--widths", "4",
      "--granularity", "channel"], "--granularity pixel"),
])
def test_bad_latency_input_is_one_line_and_exit_2_before_training(tmp_path, capsys, argv, fragment):
    from snl_train.__main__ import main

    assert main(_tiny(tmp_path / "run", *argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# ----------------------------------------------------------------------------- the experiment

needs_crypten = pytest.mark.skipif(not crypten_available(), reason="CrypTen is not installed")


@pytest.fixture(scope="module")
def quick_doc(tmp_path_factory):
    from snl_train.experiments import main

    out = tmp_path_factory.mktemp("latency") / "latency.json"
    assert main(["latency", "--quick", "--jobs", "1", "--no-progress", "--out", str(out)]) == 0
    return json.loads(out.read_text())


@needs_crypten
def test_quick_latency_experiment_measures_every_method(quick_doc):
    from snl_train.experiments import LATENCY_METHODS

    (run,) = quick_doc["runs"]
    methods = {p["method"] for p in run["points"]}
    assert methods == set(LATENCY_METHODS)
    for p in run["points"]:
        lat = p["latency"]
        assert lat["measured"] > 0 and lat["wan"] > lat["lan"] and "file" not in p
        assert lat["rounds"] == 4 + 9 * sum(1 for k in p["kept"] if k)  # 3 linear + output, 9 per site
        if p["method"] == "latency-snl":  # within its budget, the trainer's estimate = the cost model's
            assert lat["localhost"] == pytest.approx(p["estimated_seconds"], rel=1e-9)
            assert p["estimated_seconds"] <= p["budget"]
        if p["method"] == "relu-snl":
            assert p["relu_count"] <= p["budget"]
    dropped = [p for p in run["points"] if p["method"] == "whole-layer"]
    assert [sum(1 for k in p["kept"] if k == 0) for p in dropped] == [0, 1, 2]
    assert quick_doc["measurement"]["networks_measured"] == len({tuple(p["kept"]) for p in run["points"]})
    info = quick_doc["by_model"]["mlp"]["networks"]["measured"]
    assert set(info["fronts"]) == set(LATENCY_METHODS) and info["gaps"]


@needs_crypten
def test_quick_latency_branch_equals_a_direct_run(quick_doc):
    """The larger ReLU budget branched off the search equals a run with that budget alone."""
    from snl_train.experiments import _latency_config, _trainer, latency_specs

    (spec,) = latency_specs(quick=True)
    (run,) = quick_doc["runs"]
    budget = max(spec["relu_budgets"])
    result = _trainer(spec, _latency_config(spec, "relu-snl", budget)).run()
    (branched,) = [p for p in run["points"] if p["method"] == "relu-snl" and p["budget"] == budget]
    assert [layer["kept"] for layer in result["per_layer"]] == branched["kept"]
    assert result["test_accuracy"] == branched["test_accuracy"]


@needs_crypten
def test_latency_figure_draws_the_fronts(quick_doc):
    from figures.plots import plot_latency

    fig = plot_latency(quick_doc)
    try:
        ax = fig.axes[0]
        info = quick_doc["by_model"]["mlp"]["networks"]["measured"]
        steps = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
        drawn = sorted(tuple(line.get_xdata()) for line in steps)
        assert drawn == sorted(tuple(1000 * c for c, _ in f) for f in info["fronts"].values())
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
