"""Measured private inference: run a (linearized) network under two-party MPC with CrypTen.

A gated, binarized model (:func:`snl_train.gates.add_gates` + :func:`~snl_train.gates.binarize_gates`,
pixel- or channel-wise, residual blocks included) is traced with ``torch.fx`` and each node is
mapped to a CrypTen operation (:func:`convert`): Linear and Conv2d (a BatchNorm right after one
is folded into it in plaintext; any other BatchNorm is a per-channel affine map), average,
adaptive-average and max pooling, flatten / view / reshape, add, cat, and the gates. A gate
gathers its *kept* entries, evaluates the ReLU on those only and scatters the result back; the
other entries stay linear (``variant="linearize"``) or become 0 (``"zero"``), which costs nothing.
So a kept ReLU pays the engine's comparison and a layer with nothing kept pays nothing.
Anything else raises :class:`UnsupportedOpError` naming the op, before any party starts.

:func:`measure` runs the converted program with two parties on this machine (forked
processes, one thread each, ``gloo`` over loopback): the server (party 0) holds the weights,
the client (party 1) the input and receives the logits. It reports, per layer and in total,
kept ReLUs, bytes and rounds (CrypTen's own per-party counts), wall time (median and best of
the repeats), and the accuracy of the secure predictions against the labels and against the
plaintext model. Two modes: ``secret`` (the weights are secret-shared by the server, so each
linear layer is a Beaver multiplication) and ``public`` (only the input is private).

CrypTen's default provider is a trusted dealer ("trusted first party"): multiplication triples
and the other correlated randomness cost no communication, so every figure here is the
**online phase** only.

Command: ``python -m snl_train.private RUN_DIR`` measures a finished ``python -m snl_train``
run and writes ``RUN_DIR/private.json``. Without CrypTen it says in one line how to install it
(exit 2).

Example::

    >>> from snl_train.models import MLP
    >>> from snl_train.gates import add_gates, binarize_gates
    >>> net = binarize_gates(add_gates(MLP(4, [8], 2), example_input=torch.zeros(1, 4)))
    >>> program = convert(net, torch.zeros(1, 4))
    >>> [(layer.name, layer.kind, layer.kept) for layer in program.layers]
    [('features.1', 'linear', 0), ('features.2', 'relu', 8), ('classifier', 'linear', 0)]
"""
from __future__ import annotations

import math
import operator
import os
import pickle
import queue as queue_module
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from capacity.cli import quiet_broken_pipe, report_error

from .accounting import PrivateLayer
from .gates import ReLUGate, is_gated, site_modules

__all__ = ["UnsupportedOpError", "PartyError", "GateSpec", "register_gate", "PrivateProgram",
           "convert", "run_parties", "PrivateConfig", "measure", "measure_many", "measure_run",
           "load_run", "RunError", "SERVER", "CLIENT", "MODES", "ENGINE_NOTE", "main"]

SERVER, CLIENT = 0, 1  # party 0 holds the weights, party 1 the input (and gets the output)
MODES = ("secret", "public")
ENGINE_NOTE = ("CrypTen, 2 parties on one machine, trusted-dealer (TFP) provider: "
               "online phase only")


class UnsupportedOpError(ValueError):
    """The model contains an operation the private-inference converter cannot run."""


class PartyError(RuntimeError):
    """A party of a multiparty run failed, died or timed out (the message says which)."""


# ----------------------------------------------------------------------------- gates

@dataclass(frozen=True)
class GateSpec:
    """What one activation site computes on each input sample (flattened).

    ``kept`` lists the entries evaluated by ``activation`` (a key of :data:`ACTIVATIONS`);
    every other entry computes ``others``: ``"identity"`` (linearized) or ``"zero"``.
    """

    kept: torch.Tensor
    size: int
    activation: str = "relu"
    others: str = "identity"


ACTIVATIONS: dict[str, Callable[[Any], Any]] = {"relu": lambda x: x.relu()}


def _all_kept(shape: tuple[int, ...]) -> GateSpec:
    size = math.prod(shape)
    return GateSpec(torch.arange(size), size)


def _relu_gate_spec(gate: ReLUGate, shape: tuple[int, ...]) -> GateSpec:
    c = gate.c.detach().cpu()
    if not bool(((c == 0) | (c == 1)).all()):
        raise UnsupportedOpError("a gate has slopes other than 0 and 1; binarize the gates "
                                 "first (snl_train.gates.binarize_gates)")
    mask = (c == 1).expand(shape).reshape(-1)  # a channel slope covers its H*W entries
    others = "identity" if gate.variant == "linearize" else "zero"
    return GateSpec(mask.nonzero().flatten(), mask.numel(), "relu", others)


# Gate module type -> (gate, input shape per sample) -> GateSpec. Other activations' gates
# are added with register_gate; the plain nn.ReLU (an excluded or ungated site) keeps all.
GATE_TYPES: dict[type, Callable[[nn.Module, tuple[int, ...]], GateSpec]] = {
    ReLUGate: _relu_gate_spec,
    nn.ReLU: lambda module, shape: _all_kept(shape),
}
_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_)
_RELU_METHODS = ("relu", "relu_")


def register_gate(module_type: type, spec: Callable[[nn.Module, tuple[int, ...]], GateSpec],
                  activation: str | None = None, function: Callable | None = None) -> None:
    """Teach the converter a gate type (e.g. a ReLU6 gate).

    Args:
        module_type: the gate's ``nn.Module`` class (it becomes a leaf of the trace).
        spec: ``(gate, input shape without batch) -> GateSpec``.
        activation: a new key of :data:`ACTIVATIONS` used by ``spec``'s results, with
            ``function`` evaluating it on a CrypTen tensor (and on a torch tensor).

    Example::

        register_gate(ReLU6Gate, relu6_gate_spec, "relu6", lambda x: x.hardtanh(0, 6))
    """
    if activation is not None:
        if function is None:
            raise ValueError(f"register_gate: activation {activation!r} needs a function")
        ACTIVATIONS[activation] = function
    GATE_TYPES[module_type] = spec


def _gate_type(module: nn.Module) -> type | None:
    """The registered type ``module`` is handled as (None: not a gate or ReLU).

    A subclass of a registered gate counts as that gate, but a subclass of ``nn.ReLU`` does
    not: it may compute something else, and then it should be refused, not run as a ReLU.
    """
    return next((t for t in GATE_TYPES if type(module) is t), None) or next(
        (t for t in GATE_TYPES if isinstance(module, t) and t is not nn.ReLU), None)


# ----------------------------------------------------------------------------- ops

def _is_plain(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


@dataclass
class _Dense:
    """``x @ W^T + b``; ``weight`` names W^T (in, out) in the parameter dict."""

    layer: str
    weight: str
    bias: str | None

    def __call__(self, params, x):
        y = x.matmul(params[self.weight])
        return y if self.bias is None else y + params[self.bias]


@dataclass
class _Conv:
    """2-d convolution; ``bias`` names a (C, 1, 1) tensor."""

    layer: str
    weight: str
    bias: str | None
    options: dict

    def __call__(self, params, x):
        w = params[self.weight]
        y = F.conv2d(x, w, None, **self.options) if _is_plain(x) else x.conv2d(w, **self.options)
        return y if self.bias is None else y + params[self.bias]


@dataclass
class _ChannelAffine:
    """A BatchNorm that could not be folded: ``x * scale + shift`` per channel."""

    layer: str
    scale: str
    shift: str

    def __call__(self, params, x):
        return x * params[self.scale] + params[self.shift]


@dataclass
class _Gate:
    """Gather the kept entries, evaluate the activation on them only, scatter back."""

    layer: str
    spec: GateSpec

    def __call__(self, params, x):
        spec = self.spec
        flat = x.flatten(1)
        base = flat if spec.others == "identity" else flat * 0
        if spec.kept.numel() == 0:
            return base.view(x.size())
        chosen = flat.index_select(1, spec.kept)
        result = ACTIVATIONS[spec.activation](chosen)
        delta = result - chosen if spec.others == "identity" else result
        return base.index_add(1, spec.kept, delta).view(x.size())


@dataclass
class _Pool:
    """``avg_pool2d`` / ``adaptive_avg_pool2d`` / ``max_pool2d``, same keywords in both engines."""

    layer: str | None
    name: str
    options: dict

    def __call__(self, params, x):
        if _is_plain(x):
            return getattr(F, self.name)(x, **self.options)
        return getattr(x, self.name)(**self.options)


@dataclass
class _Call:
    """Shape ops, additions and plain Python values: the same code on both kinds of tensor."""

    fn: Callable
    layer: str | None = None

    def __call__(self, params, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _identity(x, *args, **kwargs):
    return x


def _add(a, b, alpha=1):
    if alpha != 1:
        b = b * alpha
    return b + a if _is_plain(a) and not _is_plain(b) else a + b  # CrypTen has no torch __radd__


def _sub(a, b):
    return -(b - a) if _is_plain(a) and not _is_plain(b) else a - b


def _method(name: str) -> Callable:
    def call(x, *args, **kwargs):
        return getattr(x, name)(*args, **kwargs)
    call.__name__ = name
    return call


def _cat(tensors, dim=0):
    if all(_is_plain(t) for t in tensors):
        return torch.cat(list(tensors), dim)
    from .crypten_compat import import_crypten
    return import_crypten().cat(list(tensors), dim=dim)


# ----------------------------------------------------------------------------- conversion

class _Tracer(fx.Tracer):
    """fx tracer that keeps every gate type (and torch.nn modules) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _gate_type(m) is not None or super().is_leaf_module(m, qualname)


class _Root(nn.Module):
    """Traces ``model(x)`` as called, so an instance-level (gated) forward is what is traced."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


class _ShapeProp(fx.Interpreter):
    """Stores each tensor-valued node's output shape in ``node.meta["shape"]``.

    (torch's own ShapeProp imports sympy, seconds of start-up for nothing we need.)
    """

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if isinstance(value, torch.Tensor):
            node.meta["shape"] = tuple(value.shape)
        return value


def _trace(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    root = _Root(model)
    try:
        graph = _Tracer().trace(root)
    except Exception as error:  # fx raises many kinds of errors for untraceable code
        from capacity.cli import first_line

        raise UnsupportedOpError(f"private inference needs a model torch.fx can trace; it cannot "
                                 f"trace {type(model).__name__} ({type(error).__name__}: "
                                 f"{first_line(error)})") from None
    gm = fx.GraphModule(root, graph)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # BatchNorm uses its running statistics, as the converted program does
    try:
        with torch.no_grad():
            _ShapeProp(gm).run(example_input[:1])
    finally:
        for m, training in modes:
            m.training = training
    return gm


def _shape(node) -> tuple[int, ...] | None:
    """Shape of a tensor-valued node's output (batch dimension included), else None."""
    return node.meta.get("shape") if isinstance(node, fx.Node) else None


def _per_sample(node) -> int:
    shape = _shape(node)
    return math.prod(shape[1:]) if shape else 0


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


_FUNCTIONS: dict[Callable, Callable] = {
    operator.add: _add, operator.iadd: _add, torch.add: _add, operator.sub: _sub,
    operator.isub: _sub, torch.sub: _sub, operator.neg: operator.neg,
    operator.getitem: operator.getitem, getattr: getattr, torch.flatten: _method("flatten"),
    torch.reshape: _method("reshape"), torch.cat: _cat, torch.squeeze: _method("squeeze"),
    torch.unsqueeze: _method("unsqueeze"), torch.mean: _method("mean"), torch.sum: _method("sum"),
}
_SCALAR_FUNCTIONS = {operator.mul: operator.mul, operator.imul: operator.mul, torch.mul: operator.mul,
                     operator.truediv: operator.truediv, operator.itruediv: operator.truediv,
                     operator.floordiv: operator.floordiv}
_METHODS = {"view", "reshape", "flatten", "size", "squeeze", "unsqueeze", "permute", "transpose",
            "mean", "sum", "add", "add_", "sub", "neg", "dim", "numel"}
_NO_OPS = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)


class _Converter:
    """Walks the traced graph once, building one op per node, the parameters and the layers."""

    def __init__(self, gm: fx.GraphModule, site_names: dict[int, str]) -> None:
        self.gm, self.site_names = gm, site_names
        self.ops: dict[str, Callable] = {}
        self.params: dict[str, torch.Tensor] = {}
        self.layers: dict[str, PrivateLayer] = {}
        self.module_calls: dict[str, int] = defaultdict(int)

    def convert(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "output":
                out = node.args[0]
                if not isinstance(out, fx.Node) or _shape(out) is None:
                    raise UnsupportedOpError("private inference needs a model that returns one tensor")
            elif node.op != "placeholder":
                self.ops[node.name] = getattr(self, f"_{node.op}")(node)

    # -- node kinds --------------------------------------------------------------------
    def _get_attr(self, node):
        value = self.gm
        for part in node.target.split("."):
            value = getattr(value, part)
        if isinstance(value, torch.Tensor):
            value = value.detach().clone()
        return _Call(lambda: value)

    def _call_module(self, node):
        module = self.gm.get_submodule(node.target)
        name = self._module_name(node.target, module)
        if _gate_type(module) is not None:
            return self._gate(node, name, GATE_TYPES[_gate_type(module)](module, _shape(node.args[0])[1:]))
        for kinds, build in ((nn.Linear, self._linear), (nn.Conv2d, self._conv),
                             ((nn.BatchNorm1d, nn.BatchNorm2d), self._batchnorm),
                             ((nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d), self._pool_module),
                             (nn.Flatten, lambda n, m, _: _Call(lambda x: x.flatten(m.start_dim, m.end_dim))),
                             (_NO_OPS, lambda n, m, _: _Call(_identity))):
            if isinstance(module, kinds):
                return build(node, module, name)
        raise self._unsupported(node, f"module {type(module).__module__}.{type(module).__name__}")

    def _call_function(self, node):
        fn = node.target
        if fn in _RELU_FUNCTIONS:
            return self._gate(node, self._function_name(node), _all_kept(_shape(node.args[0])[1:]))
        if fn in _FUNCTIONS:
            return _Call(_FUNCTIONS[fn])
        if fn in _SCALAR_FUNCTIONS and sum(_shape(a) is not None for a in node.args) <= 1:
            return _Call(_SCALAR_FUNCTIONS[fn])
        if fn in (F.avg_pool2d, F.adaptive_avg_pool2d, F.max_pool2d):
            return self._pool(node, fn.__name__, dict(zip(_POOL_ARGS[fn.__name__], node.args[1:])) | node.kwargs)
        what = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
        raise self._unsupported(node, f"function {getattr(fn, '__module__', '') or ''}.{what}".lstrip("."))

    def _call_method(self, node):
        if node.target in _RELU_METHODS:
            return self._gate(node, self._function_name(node), _all_kept(_shape(node.args[0])[1:]))
        if node.target == "contiguous":
            return _Call(_identity)
        if node.target in _METHODS:
            return _Call(_method(node.target.rstrip("_")))
        raise self._unsupported(node, f"tensor method .{node.target}()")

    # -- layers ------------------------------------------------------------------------
    def _gate(self, node, name: str, spec: GateSpec):
        if spec.activation not in ACTIVATIONS:
            raise self._unsupported(node, f"activation {spec.activation!r}")
        self.layers[node.name] = PrivateLayer(name, "relu", total=spec.size, kept=int(spec.kept.numel()))
        return _Gate(name, spec)

    def _linear(self, node, module: nn.Linear, name: str):
        source = node.args[0]
        self._param(f"{name}.weight_t", module.weight.t())
        bias = self._param(f"{name}.bias", module.bias)
        macs = _per_sample(source) * module.out_features
        self._add_linear(node, name, source, module.weight.numel(), macs)
        return _Dense(name, f"{name}.weight_t", bias)

    def _conv(self, node, module: nn.Conv2d, name: str):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise self._unsupported(node, f"Conv2d with padding={module.padding!r}, "
                                          f"padding_mode={module.padding_mode!r}")
        self._param(f"{name}.weight", module.weight)
        bias = self._param(f"{name}.bias", None if module.bias is None else module.bias.view(-1, 1, 1))
        options = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation,
                   "groups": module.groups}
        macs = _per_sample(node) * module.weight[0].numel()
        self._add_linear(node, name, node.args[0], module.weight.numel(), macs)
        return _Conv(name, f"{name}.weight", bias, options)

    def _add_linear(self, node, name, source, weights: int, macs: int) -> None:
        self.layers[node.name] = PrivateLayer(name, "linear", inputs=_per_sample(source),
                                              weights=weights, macs=macs)

    def _batchnorm(self, node, bn, name: str):
        if bn.running_mean is None or bn.running_var is None:
            raise self._unsupported(node, f"{type(bn).__name__} without running statistics")
        scale = bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)
        scale = scale / torch.sqrt(bn.running_var + bn.eps)
        shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * scale
        source = node.args[0]
        previous = self.ops.get(source.name) if isinstance(source, fx.Node) else None
        if isinstance(previous, (_Dense, _Conv)) and len(source.users) == 1:
            self._fold(previous, scale, shift)
            return _Call(_identity)
        shape = (-1,) + (1,) * (len(_shape(node)) - 2)
        self._param(f"{name}.scale", scale.view(shape))
        self._param(f"{name}.shift", shift.view(shape))
        self.layers[node.name] = PrivateLayer(name, "linear", inputs=_per_sample(node),
                                              weights=scale.numel(), macs=_per_sample(node))
        return _ChannelAffine(name, f"{name}.scale", f"{name}.shift")

    def _fold(self, op, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """BatchNorm after a Linear/Conv: W' = W * s (per output), b' = b * s + t."""
        p = self.params
        if isinstance(op, _Dense):
            p[op.weight] = p[op.weight] * scale.view(1, -1)
        else:
            p[op.weight] = p[op.weight] * scale.view(-1, *([1] * (p[op.weight].dim() - 1)))
        shape = (-1,) if isinstance(op, _Dense) else (-1, 1, 1)
        old = p[op.bias].view(-1) if op.bias is not None else torch.zeros_like(scale)
        op.bias = op.bias or f"{op.layer}.bias"
        p[op.bias] = (old * scale + shift).view(shape).detach().clone()

    def _pool_module(self, node, module, name: str):
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return self._pool(node, "adaptive_avg_pool2d", {"output_size": module.output_size})
        if isinstance(module, nn.AvgPool2d):
            return self._pool(node, "avg_pool2d", {
                "kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding,
                "ceil_mode": module.ceil_mode, "count_include_pad": module.count_include_pad,
                "divisor_override": module.divisor_override}, name)
        return self._pool(node, "max_pool2d", {
            "kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding,
            "dilation": module.dilation, "ceil_mode": module.ceil_mode,
            "return_indices": module.return_indices}, name)

    def _pool(self, node, fn_name: str, options: dict, name: str | None = None):
        """Check what CrypTen's pooling can do, keeping only the options it accepts."""
        options = dict(options)
        if options.pop("ceil_mode", False) or options.pop("return_indices", False):
            raise self._unsupported(node, f"{fn_name} with ceil_mode or return_indices")
        if options.pop("divisor_override", None) is not None or (
                not options.pop("count_include_pad", True) and _pair(options.get("padding", 0)) != (0, 0)):
            raise self._unsupported(node, f"{fn_name} with divisor_override or count_include_pad=False")
        if fn_name == "adaptive_avg_pool2d":
            size = _pair(options["output_size"])
            if None in size:
                raise self._unsupported(node, "adaptive_avg_pool2d with output size None")
            options["output_size"] = size
        if fn_name == "max_pool2d":
            name = name or node.name
            self.layers[node.name] = PrivateLayer(name, "maxpool", inputs=_per_sample(node.args[0]))
        return _Pool(name if fn_name == "max_pool2d" else None, fn_name, options)

    # -- helpers -----------------------------------------------------------------------
    def _param(self, key: str, value) -> str | None:
        if value is None:
            return None
        self.params[key] = value.detach().clone().float().contiguous()
        return key

    def _module_name(self, target: str, module: nn.Module) -> str:
        if id(module) in self.site_names:
            return self.site_names[id(module)]
        path = target.removeprefix("model.")
        count = self.module_calls[path]
        self.module_calls[path] += 1
        return path if count == 0 else f"{path}_{count}"

    def _function_name(self, node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        scope = next(reversed(stack), "") if stack else ""
        scope = scope.removeprefix("model").lstrip(".")
        return f"{scope}.{node.name}" if scope else node.name

    def _unsupported(self, node, what: str) -> UnsupportedOpError:
        where = f" at {node.target.removeprefix('model.')!r}" if node.op == "call_module" else ""
        return UnsupportedOpError(f"private inference does not support the {what}{where} "
                                  f"(fx node {node.name!r})")


_POOL_ARGS = {"avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                             "divisor_override"),
              "adaptive_avg_pool2d": ("output_size",),
              "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                             "return_indices")}


class _ProgramInterpreter(fx.Interpreter):
    """Runs the converted ops in graph order; ``meter`` (if any) is told each op's layer."""

    def __init__(self, program: "PrivateProgram", params: dict, meter=None) -> None:
        super().__init__(program.graph_module, garbage_collect_values=True)
        self.program, self.params, self.meter = program, params, meter

    def run_node(self, node: fx.Node) -> Any:
        if node.op in ("placeholder", "output"):
            return super().run_node(node)
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        op = self.program.ops[node.name]
        if self.meter is None:
            return op(self.params, *args, **kwargs)
        before = self.meter.snapshot()
        value = op(self.params, *args, **kwargs)
        self.meter.add(op.layer or "other", before)
        return value


@dataclass
class PrivateProgram:
    """A model converted for private inference (see :func:`convert`).

    Attributes:
        graph_module: the traced graph (its nodes name the ops).
        ops: node name -> op; each op runs on torch tensors and on CrypTen tensors alike.
        params: plaintext parameters (BatchNorm folded), the server's secret in ``secret`` mode.
        layers: the costly layers in forward order (:class:`~snl_train.accounting.PrivateLayer`).
        input_shape: one sample's shape. outputs: output elements per sample.
    """

    graph_module: fx.GraphModule
    ops: dict
    params: dict
    layers: list
    input_shape: tuple
    outputs: int

    @property
    def relu_total(self) -> int:
        """ReLUs per sample of the network with every gate kept."""
        return sum(layer.total for layer in self.layers if layer.kind == "relu")

    @property
    def relu_kept(self) -> int:
        """ReLUs per sample the program evaluates."""
        return sum(layer.kept for layer in self.layers if layer.kind == "relu")

    def run(self, x, params: dict | None = None, meter=None):
        """Evaluate on ``x`` (a torch tensor, or a CrypTen tensor with CrypTen/plain ``params``)."""
        return _ProgramInterpreter(self, self.params if params is None else params, meter).run(x)


def convert(model: nn.Module, example_input: torch.Tensor) -> PrivateProgram:
    """Convert a (gated, binarized) model to a program for private inference.

    Args:
        model: any ``nn.Module`` torch.fx can trace; gates must be binarized (slopes 0 or 1).
            An ungated model keeps every ReLU.
        example_input: a batch (its first sample fixes the shapes).

    Returns:
        A :class:`PrivateProgram`; ``program.run(x)`` on a torch tensor equals ``model(x)`` in
        eval mode (BatchNorm folded, so up to float rounding).

    Raises:
        UnsupportedOpError: an op the converter cannot run (named), an untraceable model, a
            gate that is not binarized, or an output that is not one tensor.

    Example:
        >>> program = convert(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), torch.zeros(1, 3))
        >>> program.relu_kept, program.relu_total
        (4, 4)
    """
    site_names = {id(m): name for name, m in site_modules(model)} if is_gated(model) else {}
    gm = _trace(model, example_input)
    converter = _Converter(gm, site_names)
    converter.convert()
    output = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    return PrivateProgram(gm, converter.ops, converter.params, list(converter.layers.values()),
                          tuple(example_input.shape[1:]), _per_sample(output))


# ----------------------------------------------------------------------------- parties

def _die_with_parent() -> None:
    """Linux: end this party when the parent dies (killed, it cannot stop the parties itself)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's clean-up has to do
        pass


def _party_main(rank: int, world_size: int, rendezvous: str, results, fn, args) -> None:
    """One party: join the MPC group, run ``fn(rank, *args)``, report its value or its error."""
    _die_with_parent()
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), RENDEZVOUS=rendezvous,
                      DISTRIBUTED_BACKEND="gloo")
    torch.set_num_threads(1)  # two parties on two cores: more threads make it 6-12x slower
    try:
        from .crypten_compat import import_crypten
        crypten = import_crypten()
        crypten.init()
        crypten.cfg.communicator.verbose = True  # CrypTen counts rounds and bytes only then
        # Pickled here: through the queue, torch would share tensor memory by file descriptors
        # that the parent can fetch only while this process lives (and it is about to exit).
        value = pickle.dumps(fn(rank, *args))
    except BaseException as error:  # reported to the parent, which stops the other parties
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        results.put((rank, False, f"{type(error).__name__}: {first}" if first else type(error).__name__))
        results.close()
        results.join_thread()
        os._exit(1)  # no traceback on stderr: the parent reports the error in one line
    results.put((rank, True, value))
    crypten.uninit()


def _next_message(procs, results, received: dict, deadline: float | None):
    """The next (rank, ok, value) from the parties, or PartyError for a dead or silent one."""
    while True:
        try:
            return results.get(timeout=0.1)
        except queue_module.Empty:
            pass
        dead = [rank for rank, p in enumerate(procs) if rank not in received and p.exitcode is not None]
        if dead:
            try:  # its last message may still be on the way
                return results.get(timeout=2.0)
            except queue_module.Empty:
                raise PartyError(f"party {dead[0]} exited with code {procs[dead[0]].exitcode} "
                                 "without a result") from None
        if deadline is not None and time.monotonic() > deadline:
            raise PartyError(f"the parties did not finish within the timeout; still running: "
                             f"{[r for r in range(len(procs)) if r not in received]}")


def run_parties(fn: Callable, args: tuple = (), world_size: int = 2,
                timeout: float | None = 600.0) -> list:
    """Run ``fn(rank, *args)`` in ``world_size`` CrypTen parties on this machine.

    Each party is a forked process with one torch thread, joined over ``gloo`` through a
    file rendezvous in a fresh temporary directory. Unlike ``crypten.mpc.run_multiprocess``
    (which returns None and only logs), a failure is raised: the first party to fail is named
    with its error, the other parties are stopped.

    Args:
        fn: called in each party after ``crypten.init()``; its return value must pickle.
        args: extra arguments (inherited through fork, so they need not pickle).
        world_size: number of parties.
        timeout: seconds before the parties are stopped (None: wait forever).

    Returns:
        The return values, by rank.

    Raises:
        PartyError: a party raised, died or the timeout passed.
        CryptenMissing: CrypTen is not installed.
    """
    import multiprocessing

    from .crypten_compat import import_crypten

    import_crypten()  # imported once here, inherited by the forked parties
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    deadline = None if timeout is None else time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="snl-private-") as tmp:
        rendezvous = f"file://{tmp}/rendezvous"
        procs = [ctx.Process(target=_party_main, args=(rank, world_size, rendezvous, results, fn, args),
                             daemon=True) for rank in range(world_size)]
        received: dict[int, Any] = {}
        try:
            for p in procs:
                p.start()
            while len(received) < world_size:
                rank, ok, value = _next_message(procs, results, received, deadline)
                if not ok:
                    raise PartyError(f"party {rank} failed: {value}")
                received[rank] = pickle.loads(value)  # written by our own party process
        finally:
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    p.join(timeout=5.0 if len(received) == world_size else 0.0)
                if p.is_alive():
                    p.terminate()
                p.join()
    return [received[rank] for rank in range(world_size)]


# ----------------------------------------------------------------------------- measurement

@dataclass
class PrivateConfig:
    """How :func:`measure` runs the parties."""

    batch_size: int = 1  # samples per timed secure inference
    repeats: int = 5  # timed inferences (median and best reported)
    warmup: int = 1  # untimed inferences before them
    samples: int = 100  # test samples whose secure predictions are checked (0: none)
    chunk: int = 100  # samples per secure inference in that check
    modes: tuple = MODES  # "secret": weights secret-shared by the server; "public": known to both
    timeout: float | None = 600.0  # seconds before the parties are stopped

    def __post_init__(self) -> None:
        for name in ("batch_size", "repeats", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"modes must be some of {MODES}, got {tuple(self.modes)}")


class _Meter:
    """One party's rounds, bytes, communication seconds and wall seconds, per layer key."""

    def __init__(self, comm) -> None:
        self.comm = comm
        self.rows: dict[str, list] = {}

    def snapshot(self) -> tuple:
        stats = self.comm.get_communication_stats()
        return stats["rounds"], stats["bytes"], stats["time"], time.perf_counter()

    def add(self, key: str, before: tuple) -> None:
        now = self.snapshot()
        row = self.rows.setdefault(key, [0, 0, 0.0, 0.0])
        for i in range(4):
            row[i] += now[i] - before[i]


def _share_params(crypten, params: dict, mode: str, rank: int) -> dict:
    if mode == "public":
        return params
    # Only the server has the weights; the client contributes zeros of the (public) shapes.
    return {key: crypten.cryptensor(value if rank == SERVER else torch.zeros_like(value), src=SERVER)
            for key, value in params.items()}


def _secure_forward(crypten, program: PrivateProgram, params: dict, x: torch.Tensor, rank: int,
                    meter: _Meter | None):
    """Share the client's input, run the program, reveal the logits to the client."""
    before = meter.snapshot() if meter else None
    x_enc = crypten.cryptensor(x if rank == CLIENT else torch.zeros_like(x), src=CLIENT)
    if meter:
        meter.add("input", before)
    y = program.run(x_enc, params, meter)
    before = meter.snapshot() if meter else None
    logits = y.get_plain_text(dst=CLIENT)
    if meter:
        meter.add("output", before)
    return logits if rank == CLIENT else None


def _measure_party(rank: int, jobs: list, config: PrivateConfig) -> list[dict]:
    """One party's timed runs (per-layer meters) and checked logits, per job and weights mode.

    The repeats are interleaved across jobs and modes, so that other load on a shared machine
    falls on every network alike.
    """
    from .crypten_compat import import_crypten

    crypten = import_crypten()
    comm = crypten.communicator.get()
    params = [{mode: _share_params(crypten, program.params, mode, rank) for mode in config.modes}
              for program, _, _ in jobs]
    runs = [{mode: [] for mode in config.modes} for _ in jobs]
    for k in range(config.warmup + config.repeats):
        for j, (program, timed, _) in enumerate(jobs):
            for mode in config.modes:
                comm.barrier()  # both parties start the clock together
                meter = _Meter(comm)
                start = time.perf_counter()
                _secure_forward(crypten, program, params[j][mode], timed, rank, meter)
                if k >= config.warmup:
                    runs[j][mode].append({"seconds": time.perf_counter() - start, "rows": meter.rows})
    reports = []
    for j, (program, _, checked) in enumerate(jobs):
        report = {}
        for mode in config.modes:
            logits = [_secure_forward(crypten, program, params[j][mode], x, rank, None) for x in checked]
            report[mode] = {"runs": runs[j][mode],
                            "logits": torch.cat(logits) if rank == CLIENT and logits else None}
        reports.append(report)
    return reports


def _layer_rows(program: PrivateProgram, party_runs: list[list[dict]]) -> list[dict]:
    """Per-layer bytes / rounds (per party) and median seconds (slowest party per repeat)."""
    described = {layer.name: layer for layer in program.layers}
    keys = ["input"] + [layer.name for layer in program.layers] + ["other", "output"]
    rows = []
    for key in keys:
        per_party = [[run["rows"].get(key, [0, 0, 0.0, 0.0]) for run in runs] for runs in party_runs]
        layer = described.get(key, PrivateLayer(key, key))
        nbytes = max(int(round(p[0][1])) for p in per_party)
        rows.append({"name": key, "kind": layer.kind, "total": layer.total, "kept": layer.kept,
                     "inputs": layer.inputs, "weights": layer.weights, "macs": layer.macs,
                     "bytes": nbytes, "rounds": max(int(p[0][0]) for p in per_party),
                     "seconds": statistics.median(max(p[k][3] for p in per_party)
                                                  for k in range(len(per_party[0])))})
    return rows


def _mode_report(program, mode_results: list[dict], reference, labels, batch_size: int) -> dict:
    runs = [r["runs"] for r in mode_results]
    seconds = [max(party[k]["seconds"] for party in runs) for k in range(len(runs[0]))]
    layers = _layer_rows(program, runs)
    totals = [[sum(row[1] for row in run["rows"].values()) for run in party] for party in runs]
    by_kind = defaultdict(int)
    for row in layers:
        by_kind[row["kind"] if row["kind"] in ("relu", "linear", "output") else "other"] += row["bytes"]
    report = {"seconds_median": statistics.median(seconds), "seconds_best": min(seconds),
              "seconds": seconds, "seconds_per_sample_median": statistics.median(seconds) / batch_size,
              "communication_seconds_median": statistics.median(
                  sum(row[2] for row in run["rows"].values()) for run in runs[CLIENT]),
              "bytes": sum(row["bytes"] for row in layers),
              "bytes_by_party": [int(round(t[0])) for t in totals],
              "rounds": sum(row["rounds"] for row in layers),
              "relu_bytes": by_kind["relu"], "linear_bytes": by_kind["linear"],
              "output_bytes": by_kind["output"], "other_bytes": by_kind["other"], "layers": layers}
    report.update(_check_predictions(mode_results[CLIENT]["logits"], reference, labels))
    return report


def _check_predictions(logits, reference, labels) -> dict:
    if logits is None or reference is None or len(reference) == 0:
        return {"samples": 0, "accuracy": None, "agreement": None, "max_abs_error": None}
    secure = logits.argmax(1)
    return {"samples": len(reference),
            "accuracy": None if labels is None else float((secure == labels).float().mean()),
            "plaintext_accuracy": None if labels is None else float((reference.argmax(1) == labels).float().mean()),
            "agreement": float((secure == reference.argmax(1)).float().mean()),
            "max_abs_error": float((logits - reference).abs().max())}


def measure(program: PrivateProgram, inputs: torch.Tensor, labels: torch.Tensor | None = None,
            config: PrivateConfig | None = None, reference: torch.Tensor | None = None) -> dict:
    """Run ``program`` with two parties on this machine and report what it cost.

    Args:
        program: from :func:`convert`.
        inputs: samples (N, ...): the first ``batch_size`` are timed, the first ``samples`` are
            classified securely and checked.
        labels: their labels (for the accuracy of the secure predictions), or None.
        config: a :class:`PrivateConfig`.
        reference: plaintext logits of the checked samples (default: the program run in plaintext).

    Returns:
        ``{"engine", "batch_size", "repeats", "relu_total", "relu_kept", "outputs", "modes"}``;
        ``modes[mode]`` has ``seconds_median``, ``seconds_best``, ``bytes``, ``rounds`` (per
        party, per batch), their split by layer kind, per-layer rows, ``accuracy``,
        ``agreement`` (secure argmax == plaintext argmax) and ``max_abs_error``.

    Raises:
        ValueError: fewer inputs than ``batch_size``. PartyError: a party failed.
        CryptenMissing: CrypTen is not installed.
    """
    return measure_many([(program, inputs, labels, reference)], config)[0]


def measure_many(jobs: list, config: PrivateConfig | None = None) -> list[dict]:
    """:func:`measure` for several ``(program, inputs, labels, reference)`` in one run of the
    parties (they start once)."""
    config = config or PrivateConfig()
    prepared, checks = [], []
    for program, inputs, labels, reference in jobs:
        if len(inputs) < config.batch_size:
            raise ValueError(f"batch size {config.batch_size} exceeds the {len(inputs)} samples available")
        checked_x = inputs[:config.samples]
        if reference is None and len(checked_x):
            with torch.no_grad():
                reference = program.run(checked_x)
        prepared.append((program, inputs[:config.batch_size],
                         list(checked_x.split(config.chunk)) if len(checked_x) else []))
        checks.append((reference, None if labels is None else labels[:config.samples]))
    results = run_parties(_measure_party, (prepared, config), timeout=config.timeout)
    reports = []
    for k, (program, _, _) in enumerate(prepared):
        modes = {mode: _mode_report(program, [r[k][mode] for r in results], *checks[k], config.batch_size)
                 for mode in config.modes}
        reports.append({"engine": ENGINE_NOTE, "batch_size": config.batch_size,
                        "repeats": config.repeats, "relu_total": program.relu_total,
                        "relu_kept": program.relu_kept, "outputs": program.outputs, "modes": modes})
    return reports


# ----------------------------------------------------------------------------- runs

class RunError(ValueError):
    """A run directory without a finished ``python -m snl_train`` run."""


@dataclass
class FinishedRun:
    """A finished run loaded from its directory: the gated model, its config and its data."""

    model: nn.Module
    config: Any  # snl_train.config.RunConfig
    data: Any  # snl_train.data.DataBundle
    example_input: torch.Tensor


def load_run(run_dir) -> FinishedRun:
    """Rebuild the binarized model of a finished run from ``RUN_DIR/checkpoint.pt`` (weights-only).

    Raises:
        RunError: no such directory, no checkpoint, or a run that has not finished;
            CheckpointError / DataError (ValueErrors) for a corrupt checkpoint or missing data.
    """
    from pathlib import Path

    from .checkpoint import load_checkpoint
    from .config import RunConfig
    from .data import load_dataset
    from .gates import add_gates
    from .models import build_model

    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"no run directory {path}")
    if not (path / "checkpoint.pt").is_file():
        raise RunError(f"{path} holds no finished run (no checkpoint.pt); train one with "
                       f"python -m snl_train ... --out {path}")
    state = load_checkpoint(path / "checkpoint.pt")
    if state["stage"] != "done":
        raise RunError(f"the run in {path} is not finished (stage {state['stage']}, epoch "
                       f"{state['epoch']}); finish it with the same python -m snl_train command plus --resume")
    cfg = RunConfig.from_dict(state["config"])
    data = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed)
    example = data.train[0][0].unsqueeze(0)
    model = build_model(cfg.model, data.num_classes, data.in_shape, cfg.widths)
    s = cfg.search
    add_gates(model, granularity=s.granularity, variant=s.variant, exclude=tuple(s.exclude),
              example_input=example)
    model.load_state_dict(state["model"])
    if cfg.threads > 0:  # as the trainer did (tiny models time best on one thread)
        torch.set_num_threads(cfg.threads)
    return FinishedRun(model.eval(), cfg, data, example)


def first_test_samples(data, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` (at least 1) test samples and labels of a DataBundle, in order."""
    from .trainer import batches

    x, y = next(iter(batches(data.test, max(count, 1), shuffle=False)))
    return x, y


def measure_run(run_dir, config: PrivateConfig | None = None) -> dict:
    """Measure a finished run's private inference and write ``RUN_DIR/private.json``.

    Returns the document written: :func:`measure`'s report plus the run, the plaintext test
    accuracy of the checked samples, the DELPHI estimate and the cost model's predictions.

    Raises:
        RunError, UnsupportedOpError, ValueError (bad input); PartyError; CryptenMissing.
    """
    from pathlib import Path

    from .accounting import online_latency
    from .gates import eval_forward

    config = config or PrivateConfig()
    run = load_run(run_dir)
    program = convert(run.model, run.example_input)
    x, y = first_test_samples(run.data, max(config.samples, config.batch_size))
    reference = eval_forward(run.model, x[:config.samples]) if config.samples else None
    doc = measure(program, x, y, config, reference)
    doc["run"] = {"dir": str(run_dir), "model": run.config.model, "dataset": run.config.dataset,
                  "granularity": run.config.search.granularity, "budget": run.config.budget,
                  "budget_fraction": run.config.budget_fraction}
    doc["layers_static"] = [vars(layer) for layer in program.layers]
    doc["delphi_estimate_seconds"] = online_latency(
        run.model, x[:config.batch_size], program.relu_kept)["total_seconds"] * config.batch_size
    for mode, report in doc["modes"].items():
        report["predicted"] = _predictions(program, config.batch_size, mode)
    _write_json(Path(run_dir) / "private.json", doc)
    return doc


def _predictions(program: PrivateProgram, batch_size: int, mode: str) -> dict | None:
    """The cost model's bytes, rounds and seconds on each network preset (None: not modelled)."""
    from .accounting import NETWORK_PRESETS, load_cost_profile, private_cost

    try:
        profile = load_cost_profile()
        return {net: private_cost(program.layers, program.outputs, profile, net, batch_size, mode)
                for net in ("localhost", *NETWORK_PRESETS)}
    except ValueError as error:
        return {"error": str(error)}


def _write_json(path, doc: dict) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary file in the same directory, renamed)."""
    import json

    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def attach_to_result(run_dir, doc: dict) -> dict:
    """Add the private-inference summary to ``RUN_DIR/result.json`` (rewritten atomically)."""
    import json
    from pathlib import Path

    path = Path(run_dir) / "result.json"
    result = json.loads(path.read_text())
    keep = ("seconds_median", "seconds_best", "seconds_per_sample_median", "bytes", "rounds",
            "relu_bytes", "linear_bytes", "output_bytes", "accuracy", "agreement", "max_abs_error")
    result["private"] = {"engine": doc["engine"], "batch_size": doc["batch_size"],
                         "repeats": doc["repeats"], "relu_kept": doc["relu_kept"],
                         "details": "private.json",
                         "modes": {mode: {k: r.get(k) for k in keep} for mode, r in doc["modes"].items()}}
    if "latency_budget" in result and result["latency_budget"].get("weights") in doc["modes"]:
        # the latency budget's cost model prices this weights mode at batch 1 (localhost measured)
        measured = doc["modes"][result["latency_budget"]["weights"]]
        result["latency_budget"].update(measured_seconds=measured["seconds_median"],
                                        measured_network="localhost",
                                        measured_batch_size=doc["batch_size"])
    _write_json(path, result)
    return result


# ----------------------------------------------------------------------------- command

def render_text(doc: dict) -> str:
    """The human-readable report of :func:`measure_run`'s document."""
    run = doc.get("run", {})
    lines = [f"private inference of {run.get('dir', 'the model')} ({run.get('model', '?')} on "
             f"{run.get('dataset', '?')}, {doc['relu_kept']} of {doc['relu_total']} ReLUs kept)",
             f"{doc['engine']}; batch {doc['batch_size']}, {doc['repeats']} timed repeats; "
             "bytes and rounds per party per batch",
             f"{'weights':8} {'median s':>9} {'best s':>9} {'bytes':>11} {'rounds':>6} "
             f"{'ReLU bytes':>11} {'linear bytes':>12} {'secure acc':>10} {'agrees':>7}"]
    for mode, r in doc["modes"].items():
        acc = "-" if r.get("accuracy") is None else f"{r['accuracy']:.4f}"
        agree = "-" if r.get("agreement") is None else f"{r['agreement']:.4f}"
        lines.append(f"{mode:8} {r['seconds_median']:9.4f} {r['seconds_best']:9.4f} {r['bytes']:11,} "
                     f"{r['rounds']:6} {r['relu_bytes']:11,} {r['linear_bytes']:12,} {acc:>10} {agree:>7}")
    for mode, r in doc["modes"].items():
        lines.append(f"per layer, {mode} weights:")
        lines.append(f"  {'layer':22} {'kind':7} {'kept/total':>13} {'bytes':>11} {'rounds':>6} {'median s':>9}")
        for row in r["layers"]:
            kept = f"{row['kept']}/{row['total']}" if row["kind"] == "relu" else ""
            lines.append(f"  {row['name'][:22]:22} {row['kind']:7} {kept:>13} {row['bytes']:11,} "
                         f"{row['rounds']:6} {row['seconds']:9.4f}")
        predicted = r.get("predicted") or {}
        if "localhost" in predicted:
            lines.append("  cost model: " + ", ".join(
                f"{net} {p['seconds']:.4f} s" for net, p in predicted.items()))
    if "delphi_estimate_seconds" in doc:
        lines.append(f"DELPHI estimate (plaintext forward + 0.021 s per 1000 ReLUs): "
                     f"{doc['delphi_estimate_seconds']:.4f} s")
    return "\n".join(lines)


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


PROG = "python -m snl_train.private"


def build_parser():
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line, no usage block
            raise SystemExit(f"{PROG}: error: {message} (see --help)")

    p = Parser(prog=PROG, description=(
        "Run a finished SNL run's network under two-party MPC (CrypTen, 2 parties on this machine, "
        "trusted-dealer provider: online phase only), check the secure predictions against "
        "plaintext, report time, bytes and rounds, and write RUN_DIR/private.json."))
    p.add_argument("run_dir", metavar="RUN_DIR", help="output directory of python -m snl_train")
    p.add_argument("--batch-size", metavar="N", type=_count(1), default=1, help="samples per timed inference (1)")
    p.add_argument("--repeats", metavar="N", type=_count(1), default=5, help="timed inferences (5)")
    p.add_argument("--warmup", metavar="N", type=_count(0), default=1, help="untimed inferences first (1)")
    p.add_argument("--samples", metavar="N", type=_count(0), default=100,
                   help="test samples classified securely and checked against plaintext (100)")
    p.add_argument("--weights", choices=("secret", "public", "both"), default="both",
                   help="weights secret-shared by the server, public, or both (default)")
    p.add_argument("--timeout", metavar="N", type=_count(1), default=600, help="seconds before the parties are stopped")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    return p


def config_from_args(args) -> PrivateConfig:
    modes = MODES if args.weights == "both" else (args.weights,)
    return PrivateConfig(batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup,
                         samples=args.samples, modes=modes, timeout=float(args.timeout))


@quiet_broken_pipe
def main(argv=None) -> int:
    """Entry point: 0 ok, 1 a party failed, 2 bad input (or no CrypTen), 130 interrupted."""
    import json
    import sys

    from .crypten_compat import INSTALL_HINT, CryptenMissing, crypten_available

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
            return 2
        return exit_.code
    if not crypten_available():
        return report_error(PROG, INSTALL_HINT)
    try:
        doc = measure_run(args.run_dir, config_from_args(args))
    except (CryptenMissing, ValueError) as error:  # RunError, CheckpointError, DataError, UnsupportedOpError
        return report_error(PROG, str(error))
    except PartyError as error:
        report_error(PROG, str(error))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(doc, indent=2) if args.json else render_text(doc) + f"\nwrote {args.run_dir}/private.json")
    return 0



def preflight(model: nn.Module, example_input: torch.Tensor) -> None:
    """Check, before training, that ``model`` can be measured: CrypTen installed, ops supported.

    Raises:
        CryptenMissing: CrypTen is not installed (the message says how to install it).
        UnsupportedOpError: the (ungated) model has an op the converter cannot run.
    """
    from .crypten_compat import require_crypten

    require_crypten()
    convert(model, example_input)


def measure_after_training(run_dir, log: Callable[[str], None] = print,
                           config: PrivateConfig | None = None) -> int:
    """``python -m snl_train ... --private``: measure the finished run, add it to result.json.

    Returns the exit code: 0, 1 (a party failed), 2 (the model cannot be measured) or 130.
    """
    import sys

    from .crypten_compat import CryptenMissing

    try:
        doc = measure_run(run_dir, config)
    except (CryptenMissing, ValueError) as error:  # RunError, DataError, UnsupportedOpError
        return report_error("python -m snl_train", str(error))
    except PartyError as error:
        report_error("python -m snl_train", f"private inference failed: {error}")
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; the run is finished, measure it with python -m snl_train.private "
              f"{run_dir}", file=sys.stderr)
        return 130
    attach_to_result(run_dir, doc)
    for mode, r in doc["modes"].items():
        log(f"private inference ({mode} weights, batch {doc['batch_size']}; online phase, "
            f"trusted dealer): {r['seconds_median']:.4f} s median, {r['bytes']:,} bytes and "
            f"{r['rounds']} rounds per party, secure accuracy "
            + ("n/a" if r["accuracy"] is None else f"{r['accuracy']:.4f}"))
    log(f"wrote {run_dir}/private.json; added 'private' to result.json")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
