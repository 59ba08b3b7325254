"""Tests of snl_train.gates: call-site coverage, exact identity at c = 1, removal, shapes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snl_train.gates import (GATE_CONTAINER, GatingError, NothingToGate, ReLUGate, _LerpFunction,
                             add_gates, binarize_gates, freeze_gates, gate_parameters, gate_sites,
                             gating_mechanism, is_gated, materialize_gates, remove_gates,
                             unsupported_activations, weight_parameters)
from snl_train.models import BasicBlock, SmallConvNet


class Head(nn.Module):
    """Linear -> (one ReLU of a given kind) -> Linear; ``act`` is that ReLU call."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))

    def reference(self, x, gate):
        """The output with the ReLU replaced by ``gate`` (a function of the pre-activation)."""
        return self.fc2(gate(self.fc1(x)))


class ModuleSite(Head):
    def act(self, h):
        return self.relu(h)


class FunctionalSite(Head):
    def act(self, h):
        return F.relu(h)


class TorchSite(Head):
    def act(self, h):
        return torch.relu(h)


class TorchInplaceSite(Head):
    def act(self, h):
        return torch.relu_(h)


class FunctionalInplaceSite(Head):
    def act(self, h):
        return F.relu(h, inplace=True)


class MethodSite(Head):
    def act(self, h):
        return h.relu()


class MethodInplaceSite(Head):
    def forward(self, x):
        h = self.fc1(x)
        h.relu_()  # result unused: only the in-place side effect carries the ReLU
        return self.fc2(h)


SITE_KINDS = [ModuleSite, FunctionalSite, TorchSite, TorchInplaceSite, FunctionalInplaceSite,
              MethodSite, MethodInplaceSite]


class Mixed(nn.Module):
    """Every call-site kind, a reused module, and a tracer-made tensor constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        h = self.relu(h - 0.1)
        h = F.relu(h - 0.2) + torch.relu(h - 0.3) + (h - 0.4).relu()
        h = torch.relu_(h - 1.0) + torch.ones(3, 4, 4)
        g = h - 1.5
        g.relu_()
        return self.fc(F.relu(g - 0.1, inplace=True).flatten(1))


def _lerp(z, c, activation):
    return _LerpFunction.apply(z, c, activation)


def set_gates(model, value):
    with torch.no_grad():
        for _, gate in gate_sites(model):
            gate.c.fill_(value)


@pytest.mark.parametrize("cls", SITE_KINDS, ids=lambda c: c.__name__)
def test_every_call_site_kind_is_gated(cls):
    """Each kind of ReLU call gets exactly one gate, and c interpolates ReLU and identity."""
    torch.manual_seed(0)
    model, x = cls(), torch.randn(6, 5)
    expected_relu = model.reference(x, torch.relu)
    add_gates(model, example_input=x)
    assert len(gate_sites(model)) == 1
    assert torch.equal(model(x), expected_relu)
    set_gates(model, 0.25)
    assert torch.allclose(model(x), model.reference(x, lambda z: z - 0.25 * z.clamp(max=0)), atol=1e-6)
    set_gates(model, 0.0)
    assert torch.allclose(model(x), model.reference(x, lambda z: z), atol=1e-6)


def test_reused_module_gets_one_gate_per_call_site():
    """BasicBlock calls one nn.ReLU twice: two gates, independently effective."""
    torch.manual_seed(0)
    block, x = BasicBlock(4, 4).eval(), torch.randn(2, 4, 5, 5)
    add_gates(block, example_input=x)
    names = [name for name, _ in gate_sites(block)]
    assert names == ["relu", "relu_1"]
    with torch.no_grad():
        gate_sites(block)[1][1].c.zero_()
        expected = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + x
        assert torch.allclose(block(x), expected, atol=1e-6)


def test_mixed_model_sites_names_and_identity():
    """All eight sites found in forward order; constants still work; c = 1 reproduces ReLU."""
    torch.manual_seed(0)
    model, x = Mixed(), torch.randn(3, 2, 4, 4)
    expected = model(x)
    add_gates(model, example_input=x)
    names = [name for name, _ in gate_sites(model)]
    assert names[:2] == ["relu", "relu_1"] and len(names) == 8 and len(set(names)) == 8
    assert torch.equal(model(x), expected)


def _grads(model, x):
    x = x.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    weight_grads = {n: p.grad.clone() for n, p in model.named_parameters()
                    if not n.startswith(GATE_CONTAINER)}
    return out.detach(), x.grad, weight_grads


@pytest.mark.parametrize("variant", ["linearize", "zero"])
@pytest.mark.parametrize("granularity", ["pixel", "channel"])
def test_gate_at_one_is_exactly_relu_forward_and_backward(variant, granularity):
    """At c = 1 outputs, input gradients and weight gradients equal the ungated model's."""
    torch.manual_seed(0)
    model, x = Mixed(), torch.randn(4, 2, 4, 4)
    gated = add_gates(copy.deepcopy(model), granularity, variant, example_input=x)
    out0, gx0, gw0 = _grads(model, x)
    out1, gx1, gw1 = _grads(gated, x)
    assert torch.equal(out0, out1)
    assert torch.equal(gx0, gx1)
    assert gw0.keys() == gw1.keys() and all(torch.equal(gw0[k], gw1[k]) for k in gw0)
    assert all(gate.c.grad is not None for _, gate in gate_sites(gated))


def test_gate_formulas_at_zero_and_gradient_of_c():
    """c = 0: identity (linearize) or zero (zero-out); d out / d c = -min(z, 0) resp. relu(z)."""
    z = torch.tensor([[-2.0, -0.5, 0.0, 1.5]])
    lin, zero = ReLUGate(), ReLUGate(variant="zero")
    lin(z), zero(z)
    with torch.no_grad():
        lin.c.zero_(), zero.c.zero_()
    assert torch.equal(lin(z), z) and torch.equal(zero(z), torch.zeros_like(z))
    lin.c.data.fill_(0.5)
    lin(z).sum().backward()
    assert torch.equal(lin.c.grad, torch.tensor([2.0, 0.5, 0.0, 0.0]))
    double = torch.randn(3, 2, 3, dtype=torch.double, requires_grad=True)
    gate = ReLUGate("channel").double()
    gate(double)
    assert torch.autograd.gradcheck(gate, (double,))


def test_remove_gates_restores_class_parameters_and_outputs():
    """remove_gates gives back the same object, class, parameter objects, keys and outputs."""
    torch.manual_seed(0)
    model, x = Mixed().eval(), torch.randn(2, 2, 4, 4)
    cls, ids = type(model), [id(p) for p in model.parameters()]
    keys, expected = list(model.state_dict()), model(x)
    gated = add_gates(model, example_input=x)
    set_gates(gated, 0.0)
    assert gated is model and not torch.allclose(gated(x), expected)
    restored = remove_gates(gated)
    assert restored is model and type(restored) is cls and not is_gated(restored)
    assert [id(p) for p in restored.parameters()] == ids
    assert list(restored.state_dict()) == keys
    assert "forward" not in restored.__dict__ and not hasattr(restored, GATE_CONTAINER)
    assert torch.equal(restored(x), expected)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace this
            x = -x
        return F.relu(self.relu(self.fc(x)))


def test_untraceable_model_is_gated_at_run_time():
    """fx fails, so the module call and the F.relu call get gates at run time; c = 1 is the
    model, c = 0 the linear model, and removal restores the original forward."""
    model, x = Untraceable(), torch.randn(4, 3)
    relu, expected = model.relu, model(x)
    add_gates(model, example_input=x)
    mechanism, reason = gating_mechanism(model)
    assert mechanism == "runtime" and "cannot trace" in reason
    assert [name for name, _ in gate_sites(model)] == ["relu", "relu_1"]
    assert model.relu is relu and torch.equal(model(x), expected)
    set_gates(model, 0.0)
    assert torch.allclose(model(x), model.fc(-x if x.sum() > 0 else x), atol=1e-6)
    remove_gates(model)
    assert "forward" not in model.__dict__ and torch.equal(model(x), expected)


class InplaceUntraceable(nn.Module):
    """In-place activations whose effect is only seen through their input, in untraceable code."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x) * 1
        if h.sum() > 1e9:  # data-dependent control flow: fx cannot trace this
            h = h * 0
        h.relu_()  # result unused
        g = h - 0.5
        F.hardtanh(g, -0.25, 0.25, inplace=True)
        return g + h


def test_in_place_calls_are_gated_in_place_at_run_time():
    """At c = 1 outputs and gradients are the original's; at c = 0 both calls are linear."""
    torch.manual_seed(0)
    model, x = InplaceUntraceable(), torch.randn(6, 3)
    gated = add_gates(copy.deepcopy(model), example_input=x)
    assert gating_mechanism(gated)[0] == "runtime" and len(gate_sites(gated)) == 2
    out0, gx0, gw0 = _grads(model, x)
    out1, gx1, gw1 = _grads(gated, x)
    assert torch.equal(out0, out1) and torch.equal(gx0, gx1) and all(torch.equal(gw0[k], gw1[k]) for k in gw0)
    set_gates(gated, 0.0)
    h = gated.fc(x)
    assert torch.allclose(gated(x), 2 * h - 0.5, atol=1e-6)


class TrainingBranch(nn.Module):
    """Traceable, but its forward branches on self.training (fx would freeze the branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = F.relu(self.fc(x))
        return h * 2 if self.training else h


def test_tracing_is_used_only_where_it_is_faithful():
    """A self.training branch sends the model to run-time gating; without an example input
    that is refused with a line saying to pass one."""
    model, x = TrainingBranch(), torch.randn(2, 3)
    add_gates(model, example_input=x)
    assert gating_mechanism(model)[0] == "runtime"
    assert torch.equal(model.train()(x), 2 * model.eval()(x))
    with pytest.raises(GatingError, match="differs between training and eval.*example_input"):
        add_gates(TrainingBranch())
    assert gating_mechanism(add_gates(ModuleSite()))[0] == "fx"


def test_runtime_gating_of_a_sequential_and_its_copies():
    """A root nn.Sequential gated at run time does not call its gate container; deep copies
    and state dicts carry the gates over."""
    from snl_train.replicas import DropPath

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), DropPath(0.5), nn.ReLU6(), nn.Flatten(), nn.Linear(16, 2))
    x = torch.randn(5, 3, 2, 2)
    add_gates(net, example_input=x)
    assert gating_mechanism(net)[0] == "runtime"
    set_gates(net, 0.0)
    net.eval()
    assert torch.allclose(net(x), net[4](net[0](x).flatten(1)), atol=1e-6)
    clone = copy.deepcopy(net)
    assert torch.equal(clone(x), net(x)) and gate_sites(clone)[0][1] is not gate_sites(net)[0][1]
    with torch.no_grad():
        gate_sites(clone)[0][1].c.fill_(1.0)
    assert not torch.equal(clone(x), net(x))
    net.load_state_dict(clone.state_dict())
    assert torch.equal(clone(x), net(x))


class DataDependentSites(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = F.relu(self.fc(x))
        if x.sum() > 100:  # a ReLU that only some inputs reach
            h = F.relu(h - 1)
        return h


def test_a_call_never_seen_when_gating_is_refused_not_run_ungated():
    model = add_gates(DataDependentSites(), example_input=torch.zeros(1, 4))
    model(torch.zeros(2, 4))
    with pytest.raises(GatingError, match="relu call at .*test_gates.py:.* was not seen"):
        model(torch.full((2, 4), 100.0))


class KernelOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.ops.aten.relu.default(self.fc(x)) + F.relu(x)


class Folded(nn.Module):
    """Folds the spatial positions into the batch before its ReLU."""

    def forward(self, x):
        return F.relu(x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1])).sum()


def test_activations_that_cannot_be_covered_are_refused_with_a_line_naming_them():
    """An activation kernel outside any Python-level call, or a ReLU on a folded batch, would
    escape the gates or the per-sample count: add_gates and relu_counts refuse the model."""
    with pytest.raises(GatingError, match=r"aten\.relu \(.*test_gates.py"):
        add_gates(KernelOnly(), example_input=torch.zeros(1, 4))
    with pytest.raises(GatingError, match="relu call at .*test_gates.py.*shape \\(9, 2\\)"):
        add_gates(Folded(), example_input=torch.zeros(1, 2, 3, 3))


class Smooth(nn.Module):
    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.fc, self.act, self.relu = nn.Linear(3, 3), nn.GELU(), relu

    def forward(self, x):
        h = F.silu(self.act(self.fc(x)))
        return h.relu() if self.relu else h


def test_unsupported_activations_are_listed_and_nothing_to_gate_is_refused():
    with pytest.warns(UserWarning, match="GELU x1, SiLU x1: activations SNL gates cannot linearize"):
        model = add_gates(Smooth(relu=True), example_input=torch.zeros(1, 3))
    assert unsupported_activations(model) == {"GELU": 1, "SiLU": 1} and len(gate_sites(model)) == 1
    with pytest.raises(NothingToGate, match="Smooth has no ReLU.*GELU x1, SiLU x1"):
        add_gates(Smooth(relu=False), example_input=torch.zeros(1, 3))
    with pytest.raises(NothingToGate):
        add_gates(Smooth(relu=False))
    assert not is_gated(Smooth(relu=False))


FAMILY = [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-2.0, 1.5), nn.LeakyReLU(0.1)]


def family_input(module):
    """Values on both sides of every breakpoint and exactly on it."""
    points = [-7.0, -2.0, -1.0, -0.25, 0.0, 0.5, 1.5, 2.0, 6.0, 9.0]
    return torch.tensor([points, [p / 3 for p in points]])


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("module", FAMILY, ids=lambda m: type(m).__name__)
def test_family_gate_at_one_is_the_torch_module_and_at_zero_the_identity(module, inplace):
    """At c = 1 outputs and input gradients equal torch's module bit for bit (also in place);
    at c = 0 the gate is the identity; in between it is c * act(z) + (1 - c) * z."""
    from snl_train.sites import module_activation

    gate, weight = ReLUGate(activation=module_activation(module)), torch.linspace(-1, 2, 20).view(2, 10)

    def run(fn, z):
        z = z.clone().requires_grad_()
        source = z * 1  # an in-place call needs a non-leaf input
        out = fn(source)
        (out * weight).sum().backward()
        return out.detach(), z.grad

    z = family_input(module)
    gate(z)
    reference = copy.deepcopy(module)
    reference.inplace = inplace
    out0, grad0 = run(reference, z)
    out1, grad1 = run(lambda s: gate(s, inplace=inplace), z)
    assert torch.equal(out0, out1) and torch.equal(grad0, grad1)
    with torch.no_grad():
        gate.c.zero_()
    out, grad = run(lambda s: gate(s, inplace=inplace), z)
    assert torch.equal(out, z) and torch.equal(grad, weight)
    with torch.no_grad():
        gate.c.fill_(0.3)
    out, _ = run(gate, z)
    assert torch.allclose(out, 0.3 * module(z) + 0.7 * z, atol=1e-6)


@pytest.mark.parametrize("module", FAMILY[1:], ids=lambda m: type(m).__name__)
def test_family_gate_gradients_of_c(module):
    """The slope's gradient is act(z) - z summed over the batch (checked numerically)."""
    from snl_train.sites import module_activation

    gate = ReLUGate("channel", activation=module_activation(module)).double()
    z = (torch.randn(3, 2, 4, dtype=torch.double) * 4).requires_grad_()
    gate(z)
    with torch.no_grad():
        gate.c.uniform_()
    assert torch.autograd.gradcheck(lambda z, c: _lerp(z, c, gate.activation), (z, gate.c))
    frozen = freeze_gates(add_gates(nn.Sequential(nn.Linear(2, 3), copy.deepcopy(module)),
                                    example_input=torch.zeros(1, 2)))
    assert not gate_parameters(frozen)[0].requires_grad


def test_exclusion_by_name_pattern():
    """Excluded sites keep their plain ReLU; the others are gated."""
    torch.manual_seed(0)
    net, x = nn.Sequential(BasicBlock(3, 3), BasicBlock(3, 3)), torch.randn(2, 3, 4, 4)
    expected = net[0](x)
    add_gates(net, exclude=["0.*"], example_input=x)
    assert [name for name, _ in gate_sites(net)] == ["1.relu", "1.relu_1"]
    set_gates(net, 0.0)
    assert torch.equal(net[0](x), expected)  # the excluded block still applies ReLU
    remove_gates(net)
    add_gates(net, exclude=["*relu_1"])
    assert [name for name, _ in gate_sites(net)] == ["0.relu", "1.relu"]


def test_gates_are_shaped_lazily_per_model():
    """Gate shapes follow each model's own first input; unshaped gates refuse an optimizer."""
    small, large = SmallConvNet(1, 10, width=4), SmallConvNet(1, 10, width=4)
    add_gates(small), add_gates(large, granularity="channel")
    with pytest.raises(RuntimeError, match="materialize_gates"):
        gate_parameters(small)
    materialize_gates(small, torch.zeros(2, 1, 8, 8))
    materialize_gates(large, torch.zeros(1, 1, 12, 12))
    assert [tuple(g.c.shape) for _, g in gate_sites(small)] == [(4, 8, 8), (8, 4, 4), (64,)]
    assert [tuple(g.c.shape) for _, g in gate_sites(large)] == [(4, 1, 1), (8, 1, 1), (64,)]
    torch.optim.SGD([{"params": gate_parameters(small)}, {"params": weight_parameters(small)}], lr=0.1)
    with pytest.raises(ValueError, match="shaped for inputs"):
        small(torch.zeros(1, 1, 12, 12))


def test_materialize_does_not_touch_batchnorm_statistics():
    model = SmallConvNet(1, 10, width=4).train()
    add_gates(model)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("features")}
    materialize_gates(model, torch.randn(4, 1, 8, 8) + 3)
    after = model.state_dict()
    assert any("running_mean" in k for k in before)
    assert all(torch.equal(before[k], after[k]) for k in before) and model.training


def test_binarize_freeze_and_parameter_split():
    model, x = SmallConvNet(1, 10, width=2), torch.randn(2, 1, 8, 8)
    add_gates(model, granularity="channel", example_input=x)
    first = gate_sites(model)[0][1]
    first.c.data.copy_(torch.tensor([0.5, 0.005]).view(2, 1, 1))
    binarize_gates(model, epsilon=0.01)
    assert first.c.flatten().tolist() == [1.0, 0.0]
    freeze_gates(model)
    assert not any(p.requires_grad for p in gate_parameters(model))
    gates, weights = gate_parameters(model), weight_parameters(model)
    assert {id(p) for p in gates} | {id(p) for p in weights} == {id(p) for p in model.parameters()}
    assert not {id(p) for p in gates} & {id(p) for p in weights} and len(gates) == 3


def test_state_dict_round_trip_and_deepcopy():
    """A state dict shapes a fresh gated model's gates; a deep copy computes the same."""
    torch.manual_seed(0)
    source, x = Mixed().eval(), torch.randn(2, 2, 4, 4)
    add_gates(source, example_input=x)
    for _, gate in gate_sites(source):
        gate.c.data.uniform_()
    target = add_gates(copy.deepcopy(Mixed()).eval())
    target.load_state_dict(source.state_dict())
    assert torch.equal(target(x), source(x))
    clone = copy.deepcopy(source)
    assert torch.equal(clone(x), source(x)) and is_gated(clone)
    assert gate_sites(clone)[0][1] is not gate_sites(source)[0][1]


def test_bad_arguments_raise():
    model = ModuleSite()
    with pytest.raises(ValueError, match="granularity"):
        add_gates(model, granularity="row")
    with pytest.raises(ValueError, match="ungated"):
        remove_gates(model)
    add_gates(model)
    with pytest.raises(ValueError, match="already gated"):
        add_gates(model)


@pytest.mark.parametrize("fill", ["uniform", "binary", "above_one"])
def test_frozen_gates_compute_what_trainable_gates_compute(fill):
    """Frozen gates (output-only backward when c <= 1) give the same outputs and gradients."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 4)
    trainable = add_gates(Mixed(), example_input=x)
    for _, gate in gate_sites(trainable):
        values = {"uniform": torch.rand_like(gate.c), "binary": (torch.rand_like(gate.c) > 0.5).float(),
                  "above_one": torch.full_like(gate.c, 1.5)}[fill]
        gate.c.data.copy_(values)
    frozen = freeze_gates(copy.deepcopy(trainable))
    out0, gx0, gw0 = _grads(trainable, x)
    out1, gx1, gw1 = _grads(frozen, x)
    assert torch.equal(out0, out1) and torch.equal(gx0, gx1)
    assert all(torch.equal(gw0[k], gw1[k]) for k in gw0)
