"""Gating keeps every model-zoo pattern's own semantics, and budgets are what the model keeps.

The replicas (snl_train.replicas) stand for timm's norm-act layers, drop-path, auxiliary heads,
MobileNetV2's ReLU6 and untraceable code. Each is gated while in eval mode and while in
training mode; at c = 1 it must then equal the original in both modes (outputs, input and
weight gradients, BatchNorm buffers, the RNG stream), and removal must restore it. After a
short training run, an independent recount of executed kernels (tests/kernel_recount.py)
must agree with the budget the trainer reports.
"""

from __future__ import annotations

import copy

import pytest
import torch

from kernel_recount import recount_kept
from snl_train.config import RunConfig, digits_defaults
from snl_train.data import random_images
from snl_train.gates import (GATE_CONTAINER, add_gates, gate_sites, gating_mechanism, is_gated,
                             remove_gates, training_only_sites)
from snl_train.replicas import REPLICAS
from snl_train.trainer import Trainer

SHAPE = (3, 8, 8)
NAMES = sorted(REPLICAS)


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return REPLICAS[name](num_classes=4, in_shape=SHAPE, width=4)


def step(model, x, training: bool):
    """One seeded forward/backward: output, input gradient, weight gradients, buffers, next draw."""
    model.train(training)
    torch.manual_seed(123)
    x = x.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if not n.startswith(GATE_CONTAINER)}
    buffers = {n: b.clone() for n, b in model.named_buffers() if not n.startswith(GATE_CONTAINER)}
    return out.detach(), x.grad, grads, buffers, torch.rand(3)


def assert_same_step(a, b):
    out_a, gx_a, gw_a, buf_a, rng_a = a
    out_b, gx_b, gw_b, buf_b, rng_b = b
    assert torch.equal(out_a, out_b) and torch.equal(gx_a, gx_b)
    assert gw_a.keys() == gw_b.keys() and buf_a.keys() == buf_b.keys()
    for key in gw_a:
        assert (gw_a[key] is None) == (gw_b[key] is None), key
        assert gw_a[key] is None or torch.equal(gw_a[key], gw_b[key]), key
    assert all(torch.equal(buf_a[k], buf_b[k]) for k in buf_a)
    assert torch.equal(rng_a, rng_b)


@pytest.mark.parametrize("gated_in", ["eval", "train"])
@pytest.mark.parametrize("name", NAMES)
def test_gates_at_one_keep_the_models_semantics_in_both_modes(name, gated_in):
    """Gated in either mode, at c = 1 the model steps exactly like the original in train and
    eval mode (including BatchNorm updates and drop-path draws); removal restores it."""
    x = torch.randn(4, *SHAPE)
    original = make(name)
    gated = copy.deepcopy(original).train(gated_in == "train")
    add_gates(gated, example_input=x[:1])
    for training in (True, False, True):
        assert_same_step(step(original, x, training), step(gated, x, training))
    ids = [id(p) for n, p in gated.named_parameters() if not n.startswith(GATE_CONTAINER)]
    remove_gates(gated)
    assert not is_gated(gated) and type(gated) is type(original)
    assert [id(p) for p in gated.parameters()] == ids
    for training in (True, False):
        assert_same_step(step(original, x, training), step(gated, x, training))


EXPECTED = {
    "normact_net": ("runtime", ["bn1.act", "bn2.act"], []),
    "droppath_net": ("runtime", ["stem.2", "blocks.0.relu", "blocks.0.relu_1", "blocks.1.relu",
                                 "blocks.1.relu_1"], []),
    "aux_head_net": ("runtime", ["stem.2", "body.2"], ["aux.3"]),
    "mobilenet_v2_like": ("fx", ["features.2", "features.3.conv.2", "features.3.conv.5",
                                 "features.4.conv.2", "features.4.conv.5", "features.5.conv.2",
                                 "features.5.conv.5", "features.8"], []),
    "untraceable_net": ("runtime", ["relu", "shared.2", "shared.2_1", "relu_1", "relu_2",
                                    "leaky_relu", "hardtanh"], []),
}


@pytest.mark.parametrize("name", NAMES)
def test_each_pattern_gets_the_right_mechanism_and_sites(name):
    """Tracing only where it is faithful; one gate per call site; training-only sites apart."""
    mechanism, sites, training_only = EXPECTED[name]
    model = add_gates(make(name), example_input=torch.randn(1, *SHAPE))
    assert gating_mechanism(model)[0] == mechanism
    assert [n for n, _ in gate_sites(model)] == sites
    assert [r.name for r in training_only_sites(model)] == training_only
    families = {g.activation.family for _, g in gate_sites(model)}
    assert families == ({"relu6"} if name == "mobilenet_v2_like" else
                        {"relu", "leaky_relu", "hardtanh"} if name == "untraceable_net" else {"relu"})


def test_module_reused_at_two_shapes_gets_a_gate_per_call():
    """The shared block's ReLU runs at 8x8 and 4x4: two gates of two shapes, both effective."""
    model = add_gates(make("untraceable_net"), "channel", example_input=torch.randn(1, *SHAPE))
    gates = dict(gate_sites(model))
    assert gates["shared.2"] is not gates["shared.2_1"]
    x = torch.randn(2, *SHAPE)
    model.eval()
    before = model(x)
    with torch.no_grad():
        gates["shared.2_1"].c.zero_()  # only the 4x4 call becomes linear
    assert not torch.equal(model(x), before)


def tiny_run(name: str, budget_fraction: float = 0.25, exclude: tuple = ()):
    cfg = digits_defaults(RunConfig(model=name, dataset="random", budget_fraction=budget_fraction))
    cfg.search.exclude = exclude
    cfg.pretrain.epochs, cfg.search.max_epochs, cfg.finetune.epochs = 1, 2, 1
    cfg.pretrain.batch_size = cfg.search.batch_size = cfg.finetune.batch_size = 16
    data = random_images(SHAPE, num_classes=4, n=32)
    trainer = Trainer(cfg, lambda: make(name, seed=1), data)
    return trainer, trainer.run()


@pytest.mark.parametrize("name", NAMES)
def test_the_reported_budget_is_what_the_trained_model_keeps(name):
    """After training, an independent count of executed kernels equals relu_count (within the
    budget) and, on the plain model, relu_total; BatchNorm statistics moved during training."""
    trainer, result = tiny_run(name)
    x = trainer.example_input
    kept = recount_kept(trainer.model, x)
    assert kept == result["relu_count"] <= result["relu_budget"]
    assert recount_kept(make(name), x) == result["relu_total"]
    families = result["activation_families"]
    assert sum(f["kept"] for f in families.values()) == kept
    assert sum(f["kept_comparisons"] for f in families.values()) == sum(
        f["kept"] * f["comparisons_per_element"] for f in families.values())
    assert [s["name"] for s in result["training_only_sites"]] == EXPECTED[name][2]
    assert result["gating"]["mechanism"] == EXPECTED[name][0]
    means = [k for k in trainer.model.state_dict() if k.endswith("running_mean")]
    assert means and any(not torch.equal(trainer.model.state_dict()[k], trainer.teacher.state_dict()[k])
                         for k in means)


def test_excluded_run_time_sites_stay_plain_and_count_as_kept():
    """Excluding the in-place body ReLU of a model gated at run time: it keeps all 8x4x4 of
    its ReLUs, inside the budget, and the recount agrees."""
    trainer, result = tiny_run("aux_head_net", budget_fraction=0.5, exclude=("body.*",))
    body = next(layer for layer in result["per_layer"] if layer["name"] == "body.2")
    assert body["kept"] == body["total"] == 8 * 16
    assert recount_kept(trainer.model, trainer.example_input) == result["relu_count"] <= result["relu_budget"]
