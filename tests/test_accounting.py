"""Tests of snl_train.accounting: per-site ReLU counts and the DELPHI latency estimate."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snl_train.accounting import (SiteCount, comparison_costs, count_relus, online_latency, relu_counts,
                                  total_kept, training_only_counts)
from snl_train.gates import GatingError, add_gates, gate_sites, remove_gates
from snl_train.models import MLP, BasicBlock, SmallConvNet


class Functional(nn.Module):
    """One module ReLU and two functional ReLUs on differently shaped tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2 * 6 * 6, 5)

    def forward(self, x):
        h = self.relu(self.conv(x))           # 2*6*6 = 72
        h = F.max_pool2d(h, 2).relu()         # 2*3*3 = 18
        return torch.relu(self.fc(F.interpolate(h, size=6).flatten(1)))  # 5


def test_mlp_counts_per_site():
    counts = relu_counts(MLP(4, [8, 3], 2), torch.zeros(7, 4))
    assert counts == [SiteCount("features.2", 8, 8), SiteCount("features.4", 3, 3)]


def test_ungated_counts_cover_functional_and_reused_sites():
    """Functional and method ReLUs count; a reused nn.ReLU counts at each of its sites."""
    assert [c.total for c in relu_counts(Functional(), torch.zeros(2, 1, 6, 6))] == [72, 18, 5]
    block_counts = relu_counts(BasicBlock(3, 3), torch.zeros(1, 3, 4, 5))
    assert [(c.name, c.total) for c in block_counts] == [("relu", 60), ("relu_1", 60)]


def test_gated_counts_match_ungated_and_follow_epsilon():
    """A fresh gated model keeps every ReLU; kept counts slopes strictly above epsilon."""
    model, x = Functional(), torch.zeros(3, 1, 6, 6)
    ungated = relu_counts(model, x)
    add_gates(model, example_input=x)
    assert relu_counts(model, x) == ungated
    last = gate_sites(model)[-1][1]
    last.c.data.copy_(torch.tensor([0.5, 0.01, 0.02, 0.0, -3.0]))
    assert relu_counts(model, x)[-1] == SiteCount(ungated[-1].name, 5, 2)
    assert total_kept(model, x, epsilon=0.001) == 72 + 18 + 3
    assert count_relus(model, x) == 95


def test_pixel_and_channel_counts_on_a_conv_net():
    """A channel slope covers H*W ReLUs; a pixel slope covers one."""
    x = torch.zeros(2, 1, 8, 8)
    pixel = add_gates(SmallConvNet(1, 10, width=4), "pixel", example_input=x)
    channel = add_gates(SmallConvNet(1, 10, width=4), "channel", example_input=x)
    totals = [4 * 64, 8 * 16, 64]
    assert [c.total for c in relu_counts(pixel, x)] == totals
    assert [c.total for c in relu_counts(channel, x)] == totals
    with torch.no_grad():
        gate_sites(pixel)[0][1].c[1, 2, 3] = 0.0
        gate_sites(channel)[0][1].c[1] = 0.0
        gate_sites(channel)[1][1].c[:3] = 0.0
    assert [c.kept for c in relu_counts(pixel, x)] == [4 * 64 - 1, 8 * 16, 64]
    assert [c.kept for c in relu_counts(channel, x)] == [3 * 64, 5 * 16, 64]


def test_counting_leaves_model_state_untouched():
    """Counting runs in eval mode without grad: BatchNorm statistics and the mode survive."""
    model = SmallConvNet(1, 10, width=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_relus(model, torch.randn(4, 1, 8, 8) + 5)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        if x.sum() > 0:
            x = x + 1
        return F.relu(self.relu(self.relu(x)))


def test_untraceable_model_counts_every_call_that_runs():
    """Without tracing, each call of the reused nn.ReLU and the F.relu call are counted."""
    counts = relu_counts(Untraceable(), torch.zeros(1, 2, 3))
    assert [(c.name, c.total) for c in counts] == [("relu", 6), ("relu_1", 6), ("relu_2", 6)]


def test_online_latency_adds_relu_cost_to_measured_plaintext_time():
    model, x = MLP(4, [8], 2), torch.zeros(4, 4)
    estimate = online_latency(model, x, relu_count=2000, repeats=2)
    assert estimate["relu_seconds"] == pytest.approx(0.042)
    assert estimate["plaintext_seconds"] > 0 and estimate["batch_size"] == 4
    assert estimate["total_seconds"] == pytest.approx(estimate["plaintext_seconds"] + 0.042)
    custom = online_latency(model, x, relu_count=500, seconds_per_1000_relus=1.0, repeats=1)
    assert custom["relu_seconds"] == pytest.approx(0.5)


def test_online_latency_counts_kept_relus_by_default():
    model, x = MLP(4, [10], 2), torch.zeros(2, 4)
    assert online_latency(model, x, repeats=1)["relu_count"] == 10
    add_gates(model, example_input=x)
    gate_sites(model)[0][1].c.data[:4] = 0
    assert online_latency(model, x, repeats=1)["relu_count"] == 6
    remove_gates(model)
    with pytest.raises(ValueError, match="repeats"):
        online_latency(model, x, repeats=0)
    with pytest.raises(ValueError, match="relu_count"):
        online_latency(model, x, relu_count=-1)


def test_excluded_sites_count_as_kept():
    """A site left ungated by ``exclude`` still evaluates all its ReLUs."""
    model, x = Functional(), torch.zeros(2, 1, 6, 6)
    add_gates(model, exclude=["relu"], example_input=x)
    for _, gate in gate_sites(model):
        gate.c.data.zero_()
    assert [(c.total, c.kept) for c in relu_counts(model, x)] == [(72, 72), (18, 0), (5, 0)]


class Family(nn.Module):
    """ReLU6 (in place, as MobileNetV2), LeakyReLU and ReLU at sites of different sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(3, 6), nn.ReLU6(inplace=True)
        self.fc2, self.fc3 = nn.Linear(6, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc3(F.leaky_relu(self.fc2(self.act1(self.fc1(x))), 0.2)).relu()


def test_every_family_member_is_counted_with_its_comparison_cost():
    """ReLU6 / Hardtanh cost 2 secure comparisons per kept activation, ReLU / LeakyReLU 1."""
    model, x = Family(), torch.zeros(2, 3)
    assert relu_counts(model, x) == [SiteCount("act1", 6, 6, "relu6"),
                                     SiteCount("leaky_relu", 4, 4, "leaky_relu"),
                                     SiteCount("relu", 2, 2, "relu")]
    add_gates(model, example_input=x)
    with torch.no_grad():
        gate_sites(model)[0][1].c[:4] = 0
        gate_sites(model)[1][1].c[:1] = 0
    costs = comparison_costs(relu_counts(model, x))
    assert costs == {
        "relu6": {"sites": 1, "total": 6, "kept": 2, "comparisons_per_element": 2, "kept_comparisons": 4},
        "leaky_relu": {"sites": 1, "total": 4, "kept": 3, "comparisons_per_element": 1, "kept_comparisons": 3},
        "relu": {"sites": 1, "total": 2, "kept": 2, "comparisons_per_element": 1, "kept_comparisons": 2}}


def test_sites_reached_only_in_training_are_listed_not_counted():
    from snl_train.replicas import aux_head_net

    torch.manual_seed(0)
    model, x = aux_head_net(3, (3, 8, 8), width=2), torch.zeros(1, 3, 8, 8)
    assert [c.name for c in relu_counts(model, x)] == ["stem.2", "body.2"]
    assert training_only_counts(model, x) == [SiteCount("aux.3", 16, 0)]
    add_gates(model, example_input=x)
    assert training_only_counts(model) == [SiteCount("aux.3", 16, 0)]
    assert count_relus(model, x) == 2 * 64 + 4 * 16
    with pytest.raises(ValueError, match="example_input"):
        training_only_counts(aux_head_net(3, (3, 8, 8)))


def test_counting_refuses_activations_it_cannot_see():
    class KernelOnly(nn.Module):
        def forward(self, x):
            return torch.ops.aten.relu.default(x)

    with pytest.raises(GatingError, match="aten.relu"):
        relu_counts(KernelOnly(), torch.zeros(1, 3))
