"""Edge cases of snl_train.gates that a wrong gate could otherwise pass: torch parity of gated
LeakyReLU, Hardtanh and ReLU6 with non-default constants inside whole models (both gating
mechanisms, both granularities, outputs, input and weight gradients), slopes exactly at
epsilon, the channel-wise shape check, and excluded sites left as torch's own modules."""
from __future__ import annotations

import copy
import os
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch.nn.parameter import UninitializedParameter

from snl_train.gates import (GatingError, NothingToGate, ReLUGate, add_gates, binarize_gates,
                             freeze_gates, gate_parameters, gate_sites, gating_mechanism,
                             remove_gates, site_modules, weight_parameters)
from snl_train.sites import module_activation

SCALE = 16  # on the layer before ReLU6, whose input is clamped to [-0.5, 0.75]: reach 6


def family_net() -> nn.Sequential:
    """Every family member with constants that differ from torch's defaults."""
    net = nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.2), nn.Linear(6, 5),
                        nn.Hardtanh(-0.5, 0.75), nn.Linear(5, 5), nn.ReLU6(), nn.Linear(5, 3))
    with torch.no_grad():
        net[4].weight.mul_(SCALE)
    return net


class FunctionalFamily(nn.Module):
    """The same activations as functional calls, behind a data-dependent branch (not traceable)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.fc4 = (nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 5),
                                                  nn.Linear(5, 3))
        with torch.no_grad():
            self.fc3.weight.mul_(SCALE)

    def forward(self, x):
        if x.abs().sum() >= 0:  # always true, but fx cannot decide it while tracing
            x = F.leaky_relu(self.fc1(x), 0.2)
        x = F.hardtanh(self.fc2(x), -0.5, 0.75)
        return self.fc4(F.relu6(self.fc3(x)))


def inputs() -> torch.Tensor:
    """A batch whose pre-activations cross every breakpoint (scaled so ReLU6 saturates too)."""
    torch.manual_seed(3)
    return torch.randn(16, 4) * 8


def forward_backward(model: nn.Module, x: torch.Tensor):
    x = x.clone().requires_grad_()
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("snl_gates")}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
@pytest.mark.parametrize("build, mechanism", [(family_net, "fx"), (FunctionalFamily, "runtime")])
def test_gated_family_at_one_equals_torch_outputs_and_gradients(build, mechanism, granularity):
    """At c = 1 a gated LeakyReLU(0.2) / Hardtanh(-0.5, 0.75) / ReLU6 model is torch's, bit for bit."""
    torch.manual_seed(0)
    model, x = build(), inputs()
    gated = add_gates(copy.deepcopy(model), granularity, example_input=x)
    assert gating_mechanism(gated)[0] == mechanism
    assert [g.activation.family for _, g in gate_sites(gated)] == ["leaky_relu", "hardtanh", "relu6"]
    out0, gx0, gw0 = forward_backward(model, x)
    out1, gx1, gw1 = forward_backward(gated, x)
    assert torch.equal(out0, out1) and torch.equal(gx0, gx1)
    assert gw0.keys() == gw1.keys() and all(torch.equal(gw0[k], gw1[k]) for k in gw0)
    # the inputs reach every piece: the leaky slope, both clamps of each 3-piece activation
    torch.manual_seed(0)
    net = family_net()  # the same weights as ``model``: same layers, same seed
    h1 = net[0](x)
    h2 = net[2](net[1](h1))
    h3 = net[4](net[3](h2))
    assert (h1 < 0).any() and (h1 > 0).any()
    assert (h2 < -0.5).any() and ((h2 > -0.5) & (h2 < 0.75)).any() and (h2 > 0.75).any()
    assert (h3 < 0).any() and ((h3 > 0) & (h3 < 6)).any() and (h3 > 6).any()


@pytest.mark.parametrize("module", [nn.LeakyReLU(0.2), nn.Hardtanh(-0.5, 0.75), nn.ReLU6()],
                         ids=lambda m: type(m).__name__)
def test_zero_variant_at_one_is_the_activation_and_at_zero_is_zero(module):
    """Eq. 7: c * act(z); at c = 1 torch's module (forward and gradient), at c = 0 nothing passes."""
    net = nn.Sequential(nn.Linear(3, 8), module)
    x = torch.randn(5, 3) * 8
    gated = add_gates(copy.deepcopy(net), variant="zero", example_input=x)
    out0, gx0, gw0 = forward_backward(net, x)
    out1, gx1, gw1 = forward_backward(gated, x)
    assert torch.equal(out0, out1) and torch.equal(gx0, gx1)
    assert all(torch.equal(gw0[k], gw1[k]) for k in gw0)
    with torch.no_grad():
        gate_sites(gated)[0][1].c.zero_()
        assert torch.equal(gated(x), torch.zeros(5, 8))


def test_lerp_gate_gradients_at_one_half_are_the_average_of_identity_and_activation():
    """Halfway: d out / d z = (1 + act'(z)) / 2, and d out / d c = act(z) - z, summed over the batch."""
    z = torch.tensor([[-3.0, -0.25, 0.5, 1.0], [2.0, -1.0, 0.25, -0.75]])
    gate = ReLUGate(activation=module_activation(nn.Hardtanh(-0.5, 0.75)))
    gate(z)
    with torch.no_grad():
        gate.c.fill_(0.5)
    zz = z.clone().requires_grad_()
    gate(zz).sum().backward()
    inside = ((z > -0.5) & (z < 0.75)).float()
    assert torch.equal(zz.grad, (1 + inside) / 2)
    assert torch.equal(gate.c.grad, (z.clamp(-0.5, 0.75) - z).sum(0))


def test_binarize_drops_a_slope_exactly_at_epsilon():
    """1(c > epsilon), strictly: c == epsilon becomes 0, the next float above it 1."""
    net = add_gates(nn.Sequential(nn.Linear(2, 5), nn.ReLU()), example_input=torch.zeros(1, 2))
    gate = gate_sites(net)[0][1]
    above = torch.nextafter(torch.tensor(0.25), torch.tensor(1.0)).item()
    with torch.no_grad():
        gate.c.copy_(torch.tensor([0.25, above, 0.0, -0.5, 3.0]))
    binarize_gates(net, epsilon=0.25)
    assert gate.c.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    with torch.no_grad():
        gate.c.copy_(torch.tensor([0.01, 0.02, 0.0, 0.005, 1.0]))
    binarize_gates(net)  # the paper's epsilon, 0.01
    assert gate.c.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]


def test_channel_gates_accept_any_spatial_size_and_refuse_other_channels_or_ranks():
    gate = ReLUGate("channel")
    gate(torch.zeros(2, 3, 4, 4))
    assert tuple(gate.c.shape) == (3, 1, 1)
    assert gate(torch.ones(1, 3, 5, 2)).shape == (1, 3, 5, 2)
    for shape in ((2, 4, 4, 4), (2, 3, 4), (2, 3, 4, 4, 1)):
        with pytest.raises(ValueError, match=r"shaped for inputs \(N, 3, 1, 1\) \(channel-wise\)"):
            gate(torch.zeros(shape))
    pixel = ReLUGate()
    pixel(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"shaped for inputs \(N, 3\) \(pixel-wise\) but got an "
                                         r"input of shape \(2, 4\)"):
        pixel(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, \.\.\.\), got shape \(3,\)"):
        ReLUGate()(torch.zeros(3))


def test_excluded_sites_call_torchs_own_module_with_its_constants():
    """An excluded LeakyReLU / Hardtanh stays that module (same constants), never a gate."""
    torch.manual_seed(0)
    net, x = family_net(), inputs()
    expected = net(x)
    add_gates(net, exclude=["1", "3"], example_input=x)
    kinds = [(name, type(m).__name__) for name, m in site_modules(net)]
    assert kinds == [("1", "LeakyReLU"), ("3", "Hardtanh"), ("5", "ReLUGate")]
    leaky, hard = site_modules(net)[0][1], site_modules(net)[1][1]
    assert leaky.negative_slope == 0.2 and (hard.min_val, hard.max_val) == (-0.5, 0.75)
    with torch.no_grad():
        gate_sites(net)[0][1].c.zero_()
    # the last site is now the identity; the excluded ones still clamp
    h = F.hardtanh(net[2](F.leaky_relu(net[0](x), 0.2)), -0.5, 0.75)
    assert torch.equal(net(x), net[6](net[4](h)))
    assert not torch.equal(net(x), expected)


def test_frozen_family_gates_still_pass_torchs_gradient_to_their_input():
    """A frozen gate (no gradient for c) still gives the input torch's gradient at c = 1."""
    torch.manual_seed(0)
    model, x = family_net(), inputs()
    frozen = freeze_gates(add_gates(copy.deepcopy(model), example_input=x))
    out0, gx0, gw0 = forward_backward(model, x)
    out1, gx1, gw1 = forward_backward(frozen, x)
    assert torch.equal(out0, out1) and torch.equal(gx0, gx1)
    assert all(torch.equal(gw0[k], gw1[k]) for k in gw0)
    assert all(gate.c.grad is None for _, gate in gate_sites(frozen))


class Scaled(nn.Module):
    """A keyword argument and a data-dependent branch: gated at run time."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x, scale=1.0):
        if x.abs().sum() >= 0:
            x = x * scale
        return self.fc2(F.leaky_relu(self.fc1(x), 0.2))


def _negated(self, x, scale=1.0):
    return -Scaled.forward(self, x, scale=scale)


def test_run_time_gating_passes_keyword_arguments_and_keeps_an_instance_forward():
    torch.manual_seed(0)
    x = inputs()
    model = Scaled()
    gated = add_gates(copy.deepcopy(model), example_input=x)
    assert gating_mechanism(gated)[0] == "runtime"
    assert torch.equal(gated(x, scale=3.0), model(x, scale=3.0))
    assert not torch.equal(model(x, scale=3.0), model(x))
    own = copy.deepcopy(model)
    own.forward = types.MethodType(_negated, own)  # an instance-level forward
    add_gates(own, example_input=x)
    assert torch.equal(own(x, scale=3.0), -model(x, scale=3.0))
    remove_gates(own)
    assert own.__dict__["forward"].__func__ is _negated and torch.equal(own(x), -model(x))


def test_a_state_dict_shapes_unshaped_gates_with_its_dtype_and_strictly():
    torch.manual_seed(0)
    x = inputs().double()
    source = add_gates(family_net().double(), example_input=x)
    target = add_gates(family_net())  # traced, gates not shaped yet
    target.load_state_dict(source.state_dict())
    assert [(tuple(g.c.shape), g.c.dtype) for _, g in gate_sites(target)] == [
        ((6,), torch.float64), ((5,), torch.float64), ((5,), torch.float64)]
    extra = dict(source.state_dict(), **{"snl_gates.1.bogus": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"snl_gates.1.bogus\""):
        add_gates(family_net()).load_state_dict(extra)


class OnlyInTraining(nn.Module):
    """GELU at inference; a ReLU only in training mode: nothing SNL can linearize."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(3, 3), nn.GELU()

    def forward(self, x):
        h = self.act(self.fc(x))
        return h + F.relu(h) if self.training else h


def test_nothing_to_gate_says_what_the_model_calls_and_what_runs_only_in_training():
    head = ("OnlyInTraining has no ReLU, ReLU6, Hardtanh or LeakyReLU that runs at inference, "
            "so SNL has nothing to linearize")
    with pytest.raises(NothingToGate) as info:
        add_gates(OnlyInTraining(), example_input=torch.zeros(2, 3))
    assert str(info.value) == (head + " (it calls GELU x1, which SNL gates cannot linearize; "
                               "1 activation site(s) run only in training mode)")
    with pytest.raises(NothingToGate) as info:
        add_gates(nn.Sequential(nn.Linear(3, 3)), example_input=torch.zeros(2, 3))
    assert str(info.value) == head.replace("OnlyInTraining", "Sequential")


def test_a_forward_that_is_no_module_method_is_keyed_from_where_it_starts():
    """An instance forward that is a plain function (no module frame above the activation call):
    its call sites are keyed up to the gated forward's entry, so it runs gated from anywhere."""
    torch.manual_seed(0)
    model, x = Scaled(), inputs()
    fc1, fc2 = model.fc1, model.fc2

    def plain(x):
        if x.abs().sum() >= 0:  # not traceable: gated at run time
            x = x * 2
        return fc2(F.relu6(fc1(x)))

    model.forward = plain
    expected = plain(x)
    add_gates(model, example_input=x)
    assert gating_mechanism(model)[0] == "runtime"

    def elsewhere():  # another call stack than the one add_gates saw
        return model(x)

    assert torch.equal(elsewhere(), expected) and torch.equal(model(x), expected)


def test_state_dicts_of_unshaped_and_shaped_gates():
    """Unshaped gates still name their slope in the state dict; keep_vars gives the parameter."""
    unshaped = add_gates(family_net()).state_dict()
    assert [k for k in unshaped if k.startswith("snl_gates.")] == [
        "snl_gates.1.c", "snl_gates.3.c", "snl_gates.5.c"]
    assert all(isinstance(unshaped[f"snl_gates.{i}.c"], UninitializedParameter) for i in (1, 3, 5))
    shaped = add_gates(family_net(), example_input=inputs())
    kept = shaped.state_dict(keep_vars=True)
    assert all(kept[f"snl_gates.{name}.c"] is gate.c for name, gate in gate_sites(shaped))


def test_unshaped_gates_are_named_five_at_most_and_ungated_weights_are_all_parameters():
    net = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(2, 2), nn.ReLU())])
    assert weight_parameters(net) == list(net.parameters())
    add_gates(net)
    names = [name for name, _ in gate_sites(net)]
    assert len(names) == 6
    with pytest.raises(RuntimeError) as info:
        gate_parameters(net)
    assert str(info.value) == (f"gates {names[:5]} are not shaped yet; call "
                               "materialize_gates(model, example_input) first")


OFFSET = torch.linspace(-1.0, 1.0, 6)  # a global tensor: fx makes it a tracer-made constant


class Rewired(nn.Module):
    """Traced graphs a gate must rewire exactly: a keyword input, an input read again after a
    ReLU, in-place ReLUs whose input was read before them (by an earlier gate, by a sum), and
    parameters read directly, one of a submodule (get_attr nodes that are not tracer-made
    constants), and a global tensor (a tracer-made constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 6)
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, 6))

    def forward(self, x):
        h = self.fc1(x) + OFFSET
        a = torch.relu(input=h) * self.scale  # keyword input
        F.relu(h, inplace=True)  # h is read above by a gate, a node added while gating
        d = a - 0.5
        b = F.relu(d) + d  # d is read again after its ReLU: it stays d
        s = b.sum(1, keepdim=True)  # read before the in-place ReLU below
        F.relu(b, inplace=True)
        return self.fc2(b) + s + h * self.fc2.bias


def test_traced_gates_rewire_keyword_reused_and_in_place_inputs_exactly():
    """At c = 1 the gated graph computes the original; at c = 0 every ReLU is the identity."""
    torch.manual_seed(0)
    model, x = Rewired(), inputs()
    gated = add_gates(copy.deepcopy(model), example_input=x)
    assert gating_mechanism(gated)[0] == "fx" and len(gate_sites(gated)) == 4
    # only the global tensor is moved, as a buffer left out of the state dict; the
    # parameters stay the model's own
    assert [name for name, _ in gated.snl_gates._constants.named_buffers()] == ["_tensor_constant0"]
    assert gated.state_dict().keys() == model.state_dict().keys() | {
        f"snl_gates.{name}.c" for name, _ in gate_sites(gated)}
    out0, gx0, gw0 = forward_backward(model, x)
    out1, gx1, gw1 = forward_backward(gated, x)
    assert torch.equal(out0, out1) and torch.equal(gx0, gx1)
    assert all(torch.equal(gw0[k], gw1[k]) for k in gw0)
    with torch.no_grad():
        for _, gate in gate_sites(gated):
            gate.c.zero_()
        h = model.fc1(x) + OFFSET
        a = h * model.scale
        b = 2 * (a - 0.5)
        expected = model.fc2(b) + b.sum(1, keepdim=True) + h * model.fc2.bias
        assert torch.allclose(gated(x), expected, atol=1e-6)


def _reversed(self, x):
    return self[1](self[0](x.flip(1)))


def test_a_sequential_with_an_instance_forward_is_gated_through_that_forward():
    torch.manual_seed(0)
    net, x = nn.Sequential(nn.Linear(4, 3), nn.ReLU()), inputs()
    net.forward = types.MethodType(_reversed, net)
    expected = net(x)
    add_gates(net, example_input=x)
    assert gating_mechanism(net) == ("runtime", "it has an instance-level forward, which torch.fx "
                                                "does not trace")
    assert torch.equal(net(x), expected)
    with torch.no_grad():
        gate_sites(net)[0][1].c.zero_()
        assert torch.equal(net(x), net[0](x.flip(1)))


def test_a_gate_prints_its_settings_its_activation_unless_relu_and_its_shape():
    leaky = module_activation(nn.LeakyReLU(0.2))
    gate = ReLUGate("channel", "zero", leaky)
    assert repr(gate) == (f"ReLUGate(granularity='channel', variant='zero', activation={leaky!r}, "
                          "c=unshaped)")
    gate(torch.zeros(2, 3, 4))
    assert repr(gate).endswith(", c=(3, 1))")
    assert repr(ReLUGate()) == "ReLUGate(granularity='pixel', variant='linearize', c=unshaped)"


class InPlaceBranch(nn.Module):
    """An in-place ReLU and a GELU behind a data-dependent branch (gated at run time)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(4, 6), nn.Linear(6, 2), nn.GELU()

    def forward(self, x):
        h = self.fc1(x)
        if h.abs().sum() >= 0:
            F.relu(h, inplace=True)
        return self.act(self.fc2(h))


def test_an_excluded_in_place_site_stays_in_place_and_warnings_name_the_model_and_caller():
    torch.manual_seed(0)
    model, x = InPlaceBranch(), inputs()
    expected = model(x)
    with pytest.warns(UserWarning) as record:
        add_gates(model, exclude=["*"], example_input=x)
    assert str(record[0].message) == (
        "add_gates: InPlaceBranch also calls GELU x1: activations SNL gates cannot linearize; "
        "they are neither gated nor counted in the ReLU budget")
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut adds a wrapper frame around add_gates
        assert record[0].filename == __file__  # attributed to the caller of add_gates
    ((_, module),) = site_modules(model)
    assert type(module) is nn.ReLU and module.inplace is True
    assert torch.equal(model(x), expected)
    with pytest.raises(ValueError, match="^expected a model gated by add_gates, got an ungated "
                                         "Linear$"):
        remove_gates(nn.Linear(2, 2))


class TraceFails(nn.Module):
    """Raises ``message`` while fx traces it; runs normally otherwise."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.fc, self.message = nn.Linear(4, 3), message

    def forward(self, x):
        if isinstance(x, torch.fx.Proxy):
            raise TypeError(self.message)
        return F.relu(self.fc(x))


class TrainingBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.fc(x))
        return h * 2 if self.training else h


@pytest.mark.parametrize("message, shown", [
    ("w" * 300 + "\nsecond line", "w" * 200),  # the first line, at most 200 characters
    ("  \n", "")])
def test_why_tracing_was_not_used_is_reported_exactly(message, shown):
    x = inputs()
    model = add_gates(TraceFails(message), example_input=x)
    assert gating_mechanism(model) == ("runtime", f"torch.fx cannot trace it (TypeError: {shown})")
    assert gating_mechanism(add_gates(TrainingBranch(), example_input=x)) == (
        "runtime", "its traced forward differs between training and eval mode")


def test_add_gates_refusals_are_exact():
    model = add_gates(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(ValueError, match="^add_gates: the model is already gated; call "
                                         "remove_gates first$"):
        add_gates(model)
    taken = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    taken.snl_gates = 1
    with pytest.raises(ValueError, match="^add_gates: the model already has an attribute "
                                         "'snl_gates'$"):
        add_gates(taken)


def test_without_an_example_input_the_traced_graph_decides_what_is_refused_or_warned():
    with pytest.warns(UserWarning, match="^add_gates: Sequential also calls GELU x1: "):
        add_gates(nn.Sequential(nn.Linear(2, 2), nn.GELU(), nn.ReLU()))
    with pytest.raises(GatingError) as info:
        add_gates(TraceFails("boom"))
    assert str(info.value) == ("add_gates: TraceFails cannot be gated by tracing: torch.fx cannot "
                               "trace it (TypeError: boom); pass example_input so its activation "
                               "calls are found at run time")


def test_traced_excluded_sites_run_out_of_place_and_bad_variants_are_named():
    """Traced, an excluded site's module must not write into its input (the graph reads it
    again); its output is the original's with every other gate at c = 1."""
    torch.manual_seed(0)
    model, x = Rewired(), inputs()
    gated = add_gates(copy.deepcopy(model), exclude=["relu_2"], example_input=x)
    assert gating_mechanism(gated)[0] == "fx" and site_modules(gated)[2][0] == "relu_2"
    with torch.no_grad():
        assert torch.equal(gated(x), model(x))
    with pytest.raises(ValueError, match=r"^variant must be one of \('linearize', 'zero'\), "
                                         r"got 'bogus'$"):
        ReLUGate(variant="bogus")


def test_a_state_dict_missing_a_slope_or_of_the_wrong_shape_is_refused_by_torch():
    torch.manual_seed(0)
    source = add_gates(family_net(), example_input=inputs()).state_dict()
    missing = {k: v for k, v in source.items() if k != "snl_gates.3.c"}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"snl_gates.3.c\""):
        add_gates(family_net()).load_state_dict(missing)
    wrong = dict(source, **{"snl_gates.3.c": torch.ones(4)})
    with pytest.raises(RuntimeError, match="size mismatch for snl_gates.3.c"):
        add_gates(family_net(), example_input=inputs()).load_state_dict(wrong)
