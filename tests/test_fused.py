"""Tests of snl_train.fused: the fused gate kernels against torch's activations and the eager gates."""

from __future__ import annotations

import contextlib
import os
import warnings
from unittest import mock

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from snl_train import fused
from snl_train.gates import ReLUGate, _FrozenLinearizeFunction, _LerpFunction, _LinearizeFunction
from snl_train.sites import module_activation

pytestmark = pytest.mark.skipif(not fused.fused_available(), reason="fused kernels not built here")

MODULES = {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "hardtanh": nn.Hardtanh(-0.5, 0.75),
           "leaky_relu": nn.LeakyReLU(0.1)}
# torch's AVX2/AVX512 kernels use fused multiply-adds as the fused kernels do: bit-identical there
SAME_BITS = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


class FusedCalls(TorchDispatchMode):
    """Counts the fused kernels that run (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.forward = self.backward = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "snl_fused":
            if "forward" in func.__name__:
                self.forward += 1
            else:
                self.backward += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def eager_gates():
    with mock.patch.dict(os.environ, {fused.ENV_VAR: "0"}):
        yield


def breakpoint_input(shape, dtype, activation_name, seed=0):
    """Random values with a quarter of them exactly on the activation's breakpoints."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, dtype=dtype, generator=generator) * 4
    points = {"relu": [0.0], "leaky_relu": [0.0], "relu6": [0.0, 6.0], "hardtanh": [-0.5, 0.75]}
    points = torch.tensor(points[activation_name] + [-0.0], dtype=dtype)
    mask = torch.rand(shape, generator=generator) < 0.25
    picks = points[torch.randint(len(points), shape, generator=generator)]
    return torch.where(mask, picks, z)


def gate_step(gate, z, inplace=False, grad_seed=1):
    """Output, input gradient and slope gradient of ``gate`` on ``z`` (behind a multiply, so an
    in-place call site writes into a non-leaf tensor as in a network)."""
    leaf = z.clone().requires_grad_()
    h = leaf * 1.0
    out = gate(h, inplace=inplace) if isinstance(gate, ReLUGate) else gate(h)
    if inplace:
        assert out is h
    grad = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(grad_seed))
    out.backward(grad)
    c_grad = gate.c.grad.clone() if isinstance(gate, ReLUGate) and gate.c.grad is not None else None
    return out.detach(), leaf.grad, c_grad


def make_gate(name, granularity, z, c=None, dtype=torch.float64):
    module = MODULES[name]
    gate = ReLUGate(granularity, activation=module_activation(module)).to(dtype)
    gate(z)  # shapes c
    if c is not None:
        with torch.no_grad():
            gate.c.copy_(c(gate.c.shape))
    return gate


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_at_one_the_fused_gate_is_torchs_activation_bit_for_bit(name, inplace, granularity, dtype):
    """c = 1: output and input gradient equal nn.ReLU / ReLU6 / Hardtanh / LeakyReLU exactly."""
    z = breakpoint_input((4, 3, 5, 6), dtype, name)
    gate = make_gate(name, granularity, z, dtype=dtype)
    with FusedCalls() as calls:
        out, grad_z, _ = gate_step(gate, z, inplace)
    assert (calls.forward, calls.backward) == (1, 1)
    module = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardtanh": lambda inplace: nn.Hardtanh(-0.5, 0.75, inplace),
              "leaky_relu": lambda inplace: nn.LeakyReLU(0.1, inplace)}[name](inplace)
    want_out, want_grad, _ = gate_step(module, z, inplace)
    assert torch.equal(out, want_out) and torch.equal(grad_z, want_grad)


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
@pytest.mark.parametrize("name", list(MODULES))
def test_at_zero_the_fused_gate_is_the_identity(name, granularity):
    """c = 0: output is z and the input gradient is the output gradient, exactly."""
    z = breakpoint_input((3, 4, 5), torch.float32, name)
    gate = make_gate(name, granularity, z, c=torch.zeros, dtype=torch.float32)
    for inplace in (False, True):
        with FusedCalls() as calls:
            out, grad_z, _ = gate_step(gate, z, inplace, grad_seed=7)
        assert calls.forward == 1
        assert torch.equal(out, z)
        assert torch.equal(grad_z, torch.randn(z.shape, generator=torch.Generator().manual_seed(7)))


def random_slopes(shape, dtype=torch.float64, seed=3):
    """Slopes in [-0.3, 1.5): inside [0, 1] mostly, some above 1 and below 0."""
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * 1.8 - 0.3


def assert_slope_grads_close(got, want, terms_scale):
    # a sum of terms in another order: within a few ulps of the terms' magnitude
    tolerance = 1e-12 if got.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance * terms_scale)


@pytest.mark.parametrize("shape", [(6, 3, 7, 5), (1, 4, 9, 9), (5, 11)], ids=["conv", "batch1", "linear"])
@pytest.mark.parametrize("granularity", ["pixel", "channel"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_fused_gate_agrees_with_the_eager_gate(dtype, name, inplace, granularity, shape):
    """Random c (also < 0 and > 1): outputs and gradients as the eager path computes them."""
    z = breakpoint_input(shape, dtype, name, seed=5)
    gate = make_gate(name, granularity, z, c=lambda s: random_slopes(s, dtype), dtype=dtype)
    with FusedCalls() as calls:
        got = gate_step(gate, z, inplace)
    assert (calls.forward, calls.backward) == (1, 1)
    gate.c.grad = None
    with eager_gates(), FusedCalls() as calls:
        want = gate_step(gate, z, inplace)
    assert (calls.forward, calls.backward) == (0, 0)
    if SAME_BITS:
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    else:
        torch.testing.assert_close(got[:2], want[:2], rtol=1e-6, atol=1e-6)
    assert_slope_grads_close(got[2], want[2], terms_scale=float(z.abs().sum()) / gate.c.numel())


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
@pytest.mark.parametrize("name", list(MODULES))
def test_fused_slope_gradient_is_the_sum_over_batch_and_positions(name, granularity):
    """grad_c in float64 against an independent sum of d(out)/dc * grad, to 1e-12 relative."""
    z = breakpoint_input((5, 3, 4, 6), torch.float64, name, seed=11)
    gate = make_gate(name, granularity, z, c=random_slopes)
    _, _, grad_c = gate_step(gate, z)
    grad = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    act = MODULES[name](z)
    terms = (act - z) * grad  # d/dc lerp(z, act, c) = act - z; for ReLU -min(z, 0) = relu(z) - z
    want = terms.sum(0) if granularity == "pixel" else terms.sum((0, 2, 3)).view(3, 1, 1)
    torch.testing.assert_close(grad_c, want, rtol=1e-12, atol=1e-12 * float(terms.abs().sum()))


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
@pytest.mark.parametrize("name", list(MODULES))
def test_gradcheck_on_the_fused_path(name, granularity):
    """torch.autograd.gradcheck in float64, input and slope, away from the breakpoints."""
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(3, 2, 3, 4, dtype=torch.float64, generator=generator) * 3
    kinks = {"relu": [0.0], "leaky_relu": [0.0], "relu6": [0.0, 6.0], "hardtanh": [-0.5, 0.75]}[name]
    for kink in kinks:  # keep every value 0.05 away from a breakpoint (gradcheck steps 1e-6)
        near = (z - kink).abs() < 0.05
        z = torch.where(near, z + 0.1, z)
    gate = make_gate(name, granularity, z, c=random_slopes)
    activation = gate.activation
    c = gate.c.detach().clone().requires_grad_()
    if name == "relu":
        function = lambda z, c: fused.linearize(z, c)  # noqa: E731
    else:
        function = lambda z, c: fused.lerp_gate(z, c, activation)  # noqa: E731
    with FusedCalls() as calls:
        assert torch.autograd.gradcheck(function, (z.requires_grad_(), c))
    assert calls.forward > 0 and calls.backward > 0


@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("granularity", ["pixel", "channel"])
def test_frozen_gate_is_fused_and_reads_only_the_output(granularity, inplace):
    """A binarized, frozen gate: fused, equal to the eager frozen gate, ReLU where c = 1."""
    z = breakpoint_input((4, 3, 5, 5), torch.float32, "relu", seed=9)
    gate = make_gate("relu", granularity, z, c=lambda s: (random_slopes(s, torch.float32) > 0.5).float(),
                     dtype=torch.float32)
    gate.c.requires_grad_(False)
    with FusedCalls() as calls:
        out, grad_z, _ = gate_step(gate, z, inplace)
    assert (calls.forward, calls.backward) == (1, 1)
    with eager_gates():
        want_out, want_grad, _ = gate_step(gate, z, inplace)
    assert torch.equal(out, want_out) and torch.equal(grad_z, want_grad)
    c = gate.c.expand_as(z[0])
    assert torch.equal(out[:, c == 1], torch.relu(z)[:, c == 1])
    assert torch.equal(out[:, c == 0], z[:, c == 0])


def test_fractional_frozen_slopes_match_the_eager_frozen_function():
    """Frozen c in [0, 1]: the fused frozen kernels against _FrozenLinearizeFunction."""
    z = breakpoint_input((6, 40), torch.float64, "relu", seed=13).requires_grad_()
    c = random_slopes((40,)).clamp(0, 1)
    grad = torch.randn(6, 40, dtype=torch.float64)
    got = torch.autograd.grad(out := fused.frozen_linearize(z, c), z, grad)[0]
    want_out = _FrozenLinearizeFunction.apply(z, c)
    want = torch.autograd.grad(want_out, z, grad)[0]
    assert torch.equal(out, want_out) and torch.equal(got, want)


@pytest.mark.parametrize("layout", ["channels_last", "strided", "bf16"])
def test_inputs_the_kernels_do_not_take_run_eagerly_and_correctly(layout):
    """Channels-last, non-contiguous and bf16 inputs take the eager path, with its results."""
    base = breakpoint_input((4, 3, 6, 6), torch.float32, "relu6", seed=17)
    z = {"channels_last": base.to(memory_format=torch.channels_last), "strided": base[:, :, ::2, ::2],
         "bf16": base.bfloat16()}[layout]
    gate = ReLUGate("channel", activation=module_activation(nn.ReLU6())).to(z.dtype)
    gate(z)
    with torch.no_grad():
        gate.c.copy_(random_slopes(gate.c.shape, z.dtype))
    with FusedCalls() as calls:
        out = gate(z)
    assert calls.forward == 0
    want = _LerpFunction.apply(z.contiguous(), gate.c, gate.activation)
    assert torch.equal(out, want)


def test_disabled_by_the_environment_runs_the_eager_gates_silently(monkeypatch):
    """SNL_FUSED_GATES=0: no fused kernel runs, no warning, and the results are the eager ones."""
    z = breakpoint_input((4, 6), torch.float64, "relu", seed=19)
    gate = make_gate("relu", "pixel", z, c=random_slopes)
    monkeypatch.setenv(fused.ENV_VAR, "0")
    assert not fused.fused_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with FusedCalls() as calls:
            out, grad_z, grad_c = gate_step(gate, z, inplace=True)
    assert (calls.forward, calls.backward) == (0, 0)
    zc, c = z.clone().requires_grad_(), gate.c.detach().clone().requires_grad_()
    want = _LinearizeFunction.apply(zc, c)
    want.backward(torch.randn(z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(out, want.detach()) and torch.equal(grad_z, zc.grad) and torch.equal(grad_c, c.grad)


def test_a_failed_build_falls_back_with_one_warning(monkeypatch):
    """The loader raising: one RuntimeWarning naming the reason, then eager gates, same results."""
    z = breakpoint_input((3, 2, 4), torch.float32, "leaky_relu", seed=23)
    gate = make_gate("leaky_relu", "channel", z, c=lambda s: random_slopes(s, torch.float32),
                     dtype=torch.float32)
    with eager_gates():
        want = gate_step(gate, z)
    gate.c.grad = None

    def no_compiler():
        raise RuntimeError("Error building extension 'snl_fused_gates': g++: not found")

    monkeypatch.setattr(fused, "_LOADED", {})
    monkeypatch.setattr(fused, "_load_ops", no_compiler)
    with pytest.warns(RuntimeWarning) as caught:
        got = gate_step(gate, z)
        gate.c.grad = None
        again = gate_step(gate, z, inplace=True)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "g++: not found" in message and "results are the same" in message
    assert not fused.fused_available() and "g++: not found" in fused.load_error()
    for result in (got, again):
        assert all(torch.equal(a, b) for a, b in zip(result, want))


@pytest.mark.parametrize("granularity", ["pixel", "channel"])
@pytest.mark.parametrize("name", ["relu", "hardtanh"])
def test_slope_gradient_does_not_depend_on_the_thread_count(name, granularity):
    """grad_c is bit-identical with 1 and 2 threads (inputs large enough to be split)."""
    z = breakpoint_input((8, 16, 24, 24), torch.float32, name, seed=29)
    gate = make_gate(name, granularity, z, c=lambda s: random_slopes(s, torch.float32), dtype=torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            gate.c.grad = None
            results.append(gate_step(gate, z))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("name", ["relu", "relu6"])
def test_inplace_call_site_keeps_autograd_version_checks(name):
    """A tensor saved by an earlier op and then overwritten in place fails backward, as with torch."""
    z = breakpoint_input((2, 3, 4), torch.float32, name).requires_grad_()
    gate = make_gate(name, "pixel", z.detach(), c=lambda s: torch.full(s, 0.5), dtype=torch.float32)
    h = z * 1.0
    saved_by_sin = h.sin()
    version = h._version
    out = gate(h, inplace=True)
    assert out is h and h._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (saved_by_sin.sum() + out.sum()).backward()


def test_inference_mode_and_no_grad_overwrite_in_place():
    """Without autograd an in-place call site is overwritten by the fused kernel, nothing saved."""
    z = breakpoint_input((3, 5), torch.float32, "relu", seed=31)
    gate = make_gate("relu", "pixel", z, c=lambda s: random_slopes(s, torch.float32), dtype=torch.float32)
    want = _LinearizeFunction.apply(z, gate.c.detach())
    for context in (torch.no_grad, torch.inference_mode):
        h = z.clone()
        with context(), FusedCalls() as calls:
            out = gate(h, inplace=True)
        assert out is h and calls.forward == 1 and torch.equal(h, want)



@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_inplace_on_an_input_that_needs_no_gradient_still_learns_the_slope(name):
    """In place on data (no gradient of its own): the original z is kept for the slope's gradient."""
    z = breakpoint_input((5, 2, 3), torch.float64, name, seed=37)
    gate = make_gate(name, "channel", z, c=random_slopes)
    h = z.clone()
    with FusedCalls() as calls:
        gate(h, inplace=True).backward(torch.ones_like(h))
    assert calls.forward == 1
    got = gate.c.grad.clone()
    gate.c.grad = None
    with eager_gates():
        gate(z.clone(), inplace=True).backward(torch.ones_like(z))
    assert_slope_grads_close(got, gate.c.grad, terms_scale=float(z.abs().sum()))


def test_a_first_build_says_why_the_run_pauses(monkeypatch, capsys):
    """No build in the extensions directory: one line on stderr before compiling; a cached build: none."""
    import torch.utils.cpp_extension as cpp_extension

    assert fused._is_built(fused.extension_name())  # built: the module is not skipped
    assert not fused._is_built("snl_fused_gates_never_built")
    monkeypatch.setattr(cpp_extension, "load_inline", lambda *args, **kwargs: None)
    for cached, expected in ((True, ""), (False, "compiling the fused gate kernels")):
        monkeypatch.setattr(fused, "_is_built", lambda name, cached=cached: cached)
        fused._load_ops()
        err = capsys.readouterr().err
        assert (expected in err) if expected else err == ""
        assert err.count("\n") == (0 if cached else 1)
