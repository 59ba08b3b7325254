"""Tests of snl_train.models: the paper's architectures (checked by ReLU count) and build_model."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from snl_train.accounting import count_relus, relu_counts
from snl_train.gates import add_gates, gate_sites
from snl_train.models import MLP, BasicBlock, SmallConvNet, WideResNet, build_model, resnet18


def test_resnet18_has_the_papers_491520_relus():
    """The paper's CIFAR ResNet-18: 16 ReLU sites, no stem ReLU, 491,520 ReLUs per image."""
    model, x = resnet18(100), torch.zeros(1, 3, 32, 32)
    counts = relu_counts(model, x)
    assert sum(c.total for c in counts) == 491_520
    assert len(counts) == 16 and counts[0].name == "layer1.0.relu" and counts[1].name == "layer1.0.relu_1"
    assert [c.total for c in counts[::4]] == [64 * 32 * 32, 128 * 16 * 16, 256 * 8 * 8, 512 * 4 * 4]


def test_resnet18_gated_counts_and_outputs():
    """Gating the ResNet-18 finds all 16 sites (reused modules included) at any input size."""
    model = build_model("resnet18", 10, (3, 16, 16)).eval()
    x = torch.randn(1, 3, 16, 16)
    expected = model(x)
    add_gates(model, example_input=x)
    assert len(gate_sites(model)) == 16 and torch.equal(model(x), expected)
    assert sum(c.total for c in relu_counts(model, x)) == 491_520 // 4
    assert expected.shape == (1, 10)


def test_basic_block_reuses_one_relu_module():
    block = BasicBlock(8, 16, stride=2)
    assert sum(isinstance(m, nn.ReLU) for m in block.modules()) == 1
    assert block(torch.zeros(2, 8, 6, 6)).shape == (2, 16, 3, 3)


def test_wide_resnet_counts_and_shape():
    """Pre-activation WRN: 2 ReLUs per block plus the final one (WRN-10-1 keeps the test fast)."""
    model = WideResNet(depth=10, widen=1, num_classes=7)
    x = torch.zeros(1, 3, 32, 32)
    # blocks: relu1 on 16x32x32, relu2 on 16x32x32; 16x32x32, 32x16x16; 32x16x16, 64x8x8; final 64x8x8
    expected = 2 * 16 * 1024 + 16 * 1024 + 32 * 256 + 32 * 256 + 64 * 64 + 64 * 64
    assert count_relus(model, x) == expected and model(x).shape == (1, 7)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=21)


def test_wrn22_8_relu_count():
    """WRN-22-8 at 32x32: 1,392,640 ReLUs (1360K, as DeepReDuce and SNL list it)."""
    assert count_relus(build_model("wrn22_8", 100, (3, 32, 32)), torch.zeros(1, 3, 32, 32)) == 1_392_640


def test_mlp_and_convnet_shapes():
    mlp = build_model("mlp", 10, (1, 8, 8), widths=[32, 16])
    assert isinstance(mlp, MLP) and mlp(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert [c.total for c in relu_counts(mlp, torch.zeros(1, 64))] == [32, 16]
    net = build_model("convnet", 10, (1, 8, 8), widths=[4])
    assert isinstance(net, SmallConvNet) and net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_build_model_from_user_factory():
    model = build_model("snl_train.models:resnet18", 5, (3, 16, 16))
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 5)


@pytest.mark.parametrize("name, message", [
    ("resnet50", "unknown model"),
    ("no_such_package_xyz:make", "cannot import"),
    ("snl_train.models:no_such_factory", "cannot import"),
    ("snl_train.models:MODEL_NAMES", "not callable"),
    ("builtins:dict", "expected an nn.Module"),
])
def test_build_model_errors(name, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, 10, (3, 32, 32))
