"""Tests of snl_train.sites: parsing activation calls, naming, run-time discovery."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snl_train.sites import (RELU, Activation, GatingError, discover, module_activation, parse_call,
                             trace_relu_sites)

Z = torch.zeros(1, 3)


@pytest.mark.parametrize("func, args, kwargs, expected, inplace", [
    (F.relu, (Z,), {}, RELU, False),
    (F.relu, (Z, True), {}, RELU, True),
    (F.relu, (), {"input": Z, "inplace": True}, RELU, True),
    (torch.relu_, (Z,), {}, RELU, True),
    (torch.Tensor.relu, (Z,), {}, RELU, False),
    (F.relu6, (Z,), {}, Activation("relu6", 0.0, 6.0), False),
    (F.hardtanh, (Z,), {}, Activation("hardtanh", -1.0, 1.0), False),
    (F.hardtanh, (Z, 0.0, 6.0, True), {}, Activation("relu6", 0.0, 6.0), True),
    (F.hardtanh, (Z,), {"max_val": 2.5, "min_val": -0.5}, Activation("hardtanh", -0.5, 2.5), False),
    (F.hardtanh_, (Z, -3.0), {}, Activation("hardtanh", -3.0, 1.0), True),
    (F.leaky_relu, (Z,), {}, Activation("leaky_relu", slope=0.01), False),
    (F.leaky_relu, (Z, 0.2, True), {}, Activation("leaky_relu", slope=0.2), True),
    (F.leaky_relu_, (Z,), {"negative_slope": 0.3}, Activation("leaky_relu", slope=0.3), True),
])
def test_parse_call_reads_every_form_of_the_family(func, args, kwargs, expected, inplace):
    call = parse_call(func, args, kwargs)
    assert call.activation == expected and call.inplace is inplace and call.input is Z


def test_non_family_calls_and_modules():
    assert parse_call(F.gelu, (Z,), {}) is None and parse_call(torch.add, (Z, Z), {}) is None
    assert module_activation(nn.ReLU6()) == Activation("relu6", 0.0, 6.0)
    assert module_activation(nn.Hardtanh(0.0, 6.0)) == Activation("relu6", 0.0, 6.0)
    assert module_activation(nn.LeakyReLU(0.2)).slope == 0.2 and module_activation(nn.GELU()) is None
    assert [Activation(f).pieces for f in ("relu", "leaky_relu", "relu6", "hardtanh")] == [2, 2, 3, 3]


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x):
        return F.relu(self.act(self.fc(x))) + torch.relu(x).relu()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.block(x))
        h = self.block(h)  # the block again: its sites get suffixed names
        return F.hardtanh(self.relu(h), -2.0, 2.0)


def test_tracing_and_run_time_discovery_name_sites_alike():
    """Both mechanisms give the same names in the same order, so counts match gates."""
    model, x = Net(), torch.randn(2, 4)
    _, traced = trace_relu_sites(model)
    found = discover(model, x)
    names = ["block.act", "block.relu", "block.relu_1", "block.relu_2", "relu", "block.act_1",
             "block.relu_3", "block.relu_4", "block.relu_5", "relu_1", "hardtanh"]
    assert [s.name for s in traced] == names == [r.name for r in found.inference]
    assert [s.activation for s in traced] == [r.activation for r in found.inference]
    assert found.training_only == [] and all(r.total == 4 for r in found.inference)


class Stateful(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.aux = nn.Linear(3, 3)

    def forward(self, x):
        h = F.relu(self.bn(x)) * (torch.rand(1) + 1)
        if self.training:
            h = h + F.relu6(self.aux(h))
        return h


def test_discovery_leaves_the_model_as_it_was_and_finds_training_only_sites():
    """Modes, BatchNorm statistics and the RNG stream are restored after the training pass."""
    model = Stateful().eval()
    model.bn.train()  # a mixed mode must survive too
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    found = discover(model, torch.randn(4, 3) + 3)
    after = torch.rand(2)
    torch.manual_seed(5)
    torch.randn(4, 3)
    assert torch.equal(after, torch.rand(2))
    assert not model.training and model.bn.training and not model.aux.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [r.name for r in found.inference] == ["relu"]
    assert [(r.name, r.activation.family) for r in found.training_only] == [("relu6", "relu6")]


def test_a_failing_forward_is_reported_in_one_line():
    class Broken(nn.Module):
        def forward(self, x):
            if self.training:
                raise KeyError("labels needed")
            return F.relu(x)

    with pytest.raises(GatingError, match="training-mode forward failed .*KeyError"):
        discover(Broken(), torch.zeros(1, 2))
