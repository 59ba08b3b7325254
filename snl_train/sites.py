"""Where a model calls ReLU-family activations: the call sites that SNL gates and counts.

This module finds sites; :mod:`snl_train.gates` decides what a gate computes. Two discovery
mechanisms share one naming scheme, so a site has the same name whichever found it:

* **tracing** (:func:`trace_relu_sites`): ``torch.fx`` lists the activation calls of the
  traced graph. Fast to run (the gated forward is generated code), but Python control flow
  is frozen at trace time, so :mod:`snl_train.gates` only uses it when the traced graph is
  the same in training and eval mode and agrees with what runs;
* **run-time recording** (:func:`discover`): the model runs on an example input under a
  ``TorchFunctionMode`` that sees every activation call, in eval mode (the sites that run at
  inference) and in training mode (sites reached only while training, e.g. auxiliary heads).
  A ``TorchDispatchMode`` watches the kernels at the same time: an activation kernel that ran
  without passing through a Python-level call (``torch.ops.aten.relu``, a fused transformer
  kernel, a scripted submodule) cannot be gated, and the model is refused with a line that
  names it. :class:`CallSites` gives each call a stable key at run time: the module that
  made it and the chain of code locations from that module's frame down to the call, plus
  how many times that key has been seen in this forward pass.

The ReLU family (:class:`Activation`): ``relu`` (2 linear pieces), ``leaky_relu`` (2),
``relu6`` and ``hardtanh`` (3). Other non-linear activations (GELU, SiLU, Hardswish, ...)
cannot be linearized this way; they are listed (:data:`UNSUPPORTED_FUNCTIONS`) so callers can
warn about them. Sites are named like modules: an activation module's qualified name
(``"layer1.0.relu"``, then ``"layer1.0.relu_1"`` for its second call), or the calling
module's name plus the function's name (``"block.relu"``, ``"relu_2"`` at the top level).
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["Activation", "RELU", "Call", "parse_call", "module_activation", "ReLUSite",
           "trace_relu_sites", "SiteRecord", "Discovery", "discover", "CallSites",
           "GatingError", "first_sample", "preserved_state", "describe_frame",
           "UNSUPPORTED_FUNCTIONS", "unique_name", "is_excluded", "hidden_activation_modules",
           "unsupported_in_graph", "record_calls"]


class GatingError(ValueError):
    """The model cannot be gated (or counted) as asked; the message says what and where."""


# ----------------------------------------------------------------------------- the family

@dataclass(frozen=True)
class Activation:
    """One member of the ReLU family, with its constants.

    ``relu`` = max(z, 0); ``leaky_relu`` = z for z > 0, ``slope * z`` otherwise;
    ``hardtanh`` = clamp(z, low, high); ``relu6`` = hardtanh with (0, 6).

    Example:
        >>> Activation("relu6", 0.0, 6.0).pieces, RELU.comparisons
        (3, 1)
    """

    family: str = "relu"  # "relu", "leaky_relu", "relu6" or "hardtanh"
    low: float = 0.0  # lower breakpoint (relu6, hardtanh)
    high: float = 0.0  # upper breakpoint (relu6, hardtanh)
    slope: float = 0.0  # slope below 0 (leaky_relu)

    @property
    def pieces(self) -> int:
        """Linear pieces p of the activation (the paper's p: 2 for ReLU)."""
        return 3 if self.family in ("relu6", "hardtanh") else 2

    @property
    def comparisons(self) -> int:
        """Secure comparisons per element under MPC: one per breakpoint."""
        return self.pieces - 1

    def apply(self, z: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The activation itself, as torch computes it."""
        if self.family == "relu":
            return F.relu(z, inplace)
        if self.family == "leaky_relu":
            return F.leaky_relu(z, self.slope, inplace)
        return F.hardtanh(z, self.low, self.high, inplace)

    def backward(self, grad: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The gradient torch's own backward gives for input ``z`` and output gradient ``grad``."""
        if self.family == "relu":
            return torch.ops.aten.threshold_backward(grad, z, 0)
        if self.family == "leaky_relu":
            return torch.ops.aten.leaky_relu_backward(grad, z, self.slope, False)
        return torch.ops.aten.hardtanh_backward(grad, z, self.low, self.high)

    def module(self, inplace: bool = False) -> nn.Module:
        """The torch module computing the activation (what a site left ungated calls)."""
        if self.family == "relu":
            return nn.ReLU(inplace)
        if self.family == "leaky_relu":
            return nn.LeakyReLU(self.slope, inplace)
        if self.family == "relu6":
            return nn.ReLU6(inplace)
        return nn.Hardtanh(self.low, self.high, inplace)


RELU = Activation("relu")


def _hardtanh(low: float, high: float) -> Activation:
    low, high = float(low), float(high)
    return Activation("relu6", 0.0, 6.0) if (low, high) == (0.0, 6.0) else Activation("hardtanh", low, high)


# (short name, activation builder, parameter names after the input with defaults, inplace)
# inplace None: read from the "inplace" parameter.
_SIGNATURES: dict[Any, tuple] = {}


def _register(functions, short, build, params=(), inplace=None) -> None:
    for function in functions:
        _SIGNATURES[function] = (short, build, params, inplace)


_register([F.relu], "relu", lambda: RELU, (("inplace", False),))
_register([torch.relu, torch.Tensor.relu, torch._C.TensorBase.relu], "relu", lambda: RELU, (), False)
_register([torch.relu_, torch.Tensor.relu_, torch._C.TensorBase.relu_], "relu", lambda: RELU, (), True)
_register([F.relu6], "relu6", lambda: _hardtanh(0, 6), (("inplace", False),))
_register([torch._C._nn.relu6], "relu6", lambda: _hardtanh(0, 6), (), False)
_register([F.hardtanh], "hardtanh", _hardtanh,
          (("min_val", -1.0), ("max_val", 1.0), ("inplace", False)))
_register([torch._C._nn.hardtanh], "hardtanh", _hardtanh, (("min_val", -1.0), ("max_val", 1.0)), False)
_register([F.hardtanh_], "hardtanh", _hardtanh, (("min_val", -1.0), ("max_val", 1.0)), True)
_register([F.leaky_relu], "leaky_relu", lambda slope: Activation("leaky_relu", slope=float(slope)),
          (("negative_slope", 0.01), ("inplace", False)))
_register([torch._C._nn.leaky_relu], "leaky_relu",
          lambda slope: Activation("leaky_relu", slope=float(slope)), (("negative_slope", 0.01),), False)
_register([F.leaky_relu_], "leaky_relu",
          lambda slope: Activation("leaky_relu", slope=float(slope)), (("negative_slope", 0.01),), True)
_METHODS = {"relu": torch.Tensor.relu, "relu_": torch.Tensor.relu_}

#: Non-linear activations SNL gates cannot linearize (listed in warnings, never counted).
UNSUPPORTED_FUNCTIONS: dict[Any, str] = {}
for _name, _functions in {
    "GELU": [F.gelu], "SiLU": [F.silu], "Hardswish": [F.hardswish], "Mish": [F.mish],
    "ELU": [F.elu, F.elu_], "SELU": [F.selu, torch.selu, torch.selu_], "CELU": [F.celu, torch.celu],
    "Softplus": [F.softplus], "Hardsigmoid": [F.hardsigmoid], "PReLU": [F.prelu, torch.prelu],
    "RReLU": [F.rrelu, F.rrelu_, torch.rrelu], "Sigmoid": [torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid],
    "Tanh": [torch.tanh, torch.Tensor.tanh, F.tanh], "GLU": [F.glu], "LogSigmoid": [F.logsigmoid],
    "Threshold": [F.threshold, torch.threshold],
}.items():
    for _function in _functions:
        UNSUPPORTED_FUNCTIONS[_function] = _name
_UNSUPPORTED_METHODS = {"sigmoid": "Sigmoid", "tanh": "Tanh"}

_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU)


@dataclass
class Call:
    """One parsed activation call: its input, which activation, in place or not."""

    input: Any
    activation: Activation
    inplace: bool
    short: str  # the function's name, used in site names ("relu", "hardtanh", ...)


def parse_call(func: Any, args: tuple, kwargs: dict) -> Call | None:
    """A :class:`Call` if ``func(*args, **kwargs)`` is a ReLU-family call, else None.

    Constants may be fx Nodes (the call is then traced, not run); :func:`trace_relu_sites`
    checks for that.

    Example:
        >>> call = parse_call(F.leaky_relu, (torch.zeros(1),), {"negative_slope": 0.2})
        >>> call.activation.family, call.activation.slope, call.inplace
        ('leaky_relu', 0.2, False)
    """
    signature = _SIGNATURES.get(func)
    if signature is None:
        return None
    short, build, params, inplace = signature
    values = dict(params)
    values.update(zip(values, args[1:]))
    values.update({k: v for k, v in kwargs.items() if k in values})
    inplace = bool(values.pop("inplace")) if inplace is None else inplace
    z = args[0] if args else kwargs.get("input", kwargs.get("self"))
    return Call(z, build(*values.values()), inplace, short)


def module_activation(module: nn.Module) -> Activation | None:
    """The activation an ``nn.ReLU`` / ``ReLU6`` / ``Hardtanh`` / ``LeakyReLU`` module computes."""
    kind = type(module)
    if kind is nn.ReLU:
        return RELU
    if kind is nn.LeakyReLU:
        return Activation("leaky_relu", slope=float(module.negative_slope))
    if kind in (nn.ReLU6, nn.Hardtanh):
        return _hardtanh(module.min_val, module.max_val)
    return None


def unique_name(name: str, taken: set[str]) -> str:
    """``name`` or ``name_k``: unique, and neither a dotted prefix of a taken name nor vice versa."""

    def clashes(candidate: str) -> bool:
        return any(candidate == t or t.startswith(candidate + ".") or candidate.startswith(t + ".")
                   for t in taken)

    candidate, k = name, 1
    while clashes(candidate):
        candidate, k = f"{name}_{k}", k + 1
    return candidate


def is_excluded(name: str, exclude) -> bool:
    """Whether site ``name`` matches one of the fnmatch patterns ``exclude``."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def _base_name(kind: str, owner: str, short: str) -> str:
    """Module sites: the module's name; function sites: the calling module's name + function."""
    if kind == "module":
        return owner
    return f"{owner}.{short}" if owner else short


# ----------------------------------------------------------------------------- tracing

@dataclass
class ReLUSite:
    """One activation call site found in a traced model.

    ``kind`` is ``"module"`` (an activation module), ``"function"`` or ``"method"``.
    """

    name: str
    kind: str
    inplace: bool
    node: fx.Node
    activation: Activation = RELU


class _NotConstant(Exception):
    """An activation's constants are computed at run time, so tracing cannot gate it."""


def _node_call(node: fx.Node, root: nn.Module) -> tuple[str, Activation, bool, str] | None:
    """``(kind, activation, inplace, short name)`` if ``node`` calls the ReLU family."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        activation = module_activation(module)
        if activation is None:
            return None
        return "module", activation, bool(getattr(module, "inplace", False)), ""
    if node.op == "call_function":
        func, kind = node.target, "function"
    elif node.op == "call_method" and node.target in _METHODS:
        func, kind = _METHODS[node.target], "method"
    else:
        return None
    if func not in _SIGNATURES:
        return None
    constants = list(node.args[1:]) + [v for k, v in node.kwargs.items() if k not in ("input", "self")]
    if any(isinstance(v, fx.Node) for v in constants):
        raise _NotConstant(f"{node.name}: its constants are computed in the forward pass")
    call = parse_call(func, node.args, dict(node.kwargs))
    return kind, call.activation, call.inplace, call.short


def trace_relu_sites(model: nn.Module) -> tuple[fx.GraphModule, list[ReLUSite]]:
    """Trace ``model`` with ``torch.fx`` and list its ReLU-family call sites in forward order.

    Args:
        model: any module fx can trace.

    Returns:
        The traced ``GraphModule`` (sharing the model's leaf modules) and the sites.

    Raises:
        Exception: whatever ``torch.fx.symbolic_trace`` raises for an untraceable model, or
            a ``_NotConstant`` error when an activation's constants are traced values.

    Example:
        >>> _, sites = trace_relu_sites(nn.Sequential(nn.Linear(2, 2), nn.ReLU6()))
        >>> [(s.name, s.activation.family) for s in sites]
        [('1', 'relu6')]
    """
    gm = fx.symbolic_trace(model)
    sites, taken = [], set()
    for node in gm.graph.nodes:
        found = _node_call(node, gm)
        if found is None:
            continue
        kind, activation, inplace, short = found
        if kind == "module":
            owner = node.target
        else:
            # The innermost module's path (its key carries "@k" for the k-th call of a module).
            stack = node.meta.get("nn_module_stack") or {}
            owner = stack[next(reversed(stack))][0] if stack else ""
        name = unique_name(_base_name("module" if kind == "module" else "function", owner, short), taken)
        taken.add(name)
        sites.append(ReLUSite(name, kind, inplace, node, activation))
    return gm, sites


def unsupported_in_graph(gm: fx.GraphModule) -> Counter:
    """Non-linear activations a traced graph calls that SNL gates cannot linearize."""
    found: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in UNSUPPORTED_FUNCTIONS:
            found[UNSUPPORTED_FUNCTIONS[node.target]] += 1
        elif node.op == "call_method" and node.target in _UNSUPPORTED_METHODS:
            found[_UNSUPPORTED_METHODS[node.target]] += 1
        elif node.op == "call_module":
            name = _unsupported_module(gm.get_submodule(node.target))
            if name:
                found[name] += 1
    return found


def _unsupported_module(module: nn.Module) -> str | None:
    names = {nn.GELU: "GELU", nn.SiLU: "SiLU", nn.Hardswish: "Hardswish", nn.Mish: "Mish",
             nn.ELU: "ELU", nn.SELU: "SELU", nn.CELU: "CELU", nn.Softplus: "Softplus",
             nn.Hardsigmoid: "Hardsigmoid", nn.PReLU: "PReLU", nn.RReLU: "RReLU",
             nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.GLU: "GLU", nn.LogSigmoid: "LogSigmoid",
             nn.Threshold: "Threshold"}
    return names.get(type(module))


def hidden_activation_modules(gm: fx.GraphModule) -> list[str]:
    """Leaf modules of a traced graph that hold ReLU-family modules fx did not trace into."""
    hidden = set()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if module_activation(module) is None and any(
                module_activation(m) is not None for m in module.modules()):
            hidden.add(node.target)
    return sorted(hidden)


# ----------------------------------------------------------------------------- run time

@functools.lru_cache(maxsize=None)
def _normalized(filename: str) -> str:
    return os.path.normcase(os.path.abspath(filename))


_SKIPPED_FILES = frozenset(_normalized(f) for f in (torch.overrides.__file__, F.__file__, __file__))
_MODULE_FILE = _normalized(nn.modules.module.__file__)
_TORCH_DIR = _normalized(os.path.dirname(torch.__file__)) + os.sep


def _file(code) -> str:
    return _normalized(code.co_filename)


_OWN_FILES = frozenset(_normalized(os.path.join(os.path.dirname(__file__), f))
                      for f in ("sites.py", "gates.py"))


def describe_frame(frame) -> str:
    """``file:line`` of the first frame outside torch and this package's gating, for messages."""
    while frame is not None and (_file(frame.f_code).startswith(_TORCH_DIR)
                                 or _file(frame.f_code) in _OWN_FILES):
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _frame_self(frame) -> Any:
    """The first argument of a frame's function (``self`` for a method), or None."""
    code = frame.f_code
    return frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None


def _location(frame) -> tuple:
    code = frame.f_code
    return (code.co_filename, code.co_name, code.co_firstlineno, frame.f_lasti)


class CallSites:
    """Keys for the activation calls of one forward pass, from the Python call stack.

    A call made inside an activation module of the model (``nn.ReLU`` ...) belongs to that
    module; its key adds the code locations from the module's caller up to the nearest
    enclosing model module, so one module called at two places gets two keys. Any other
    call belongs to the innermost model module whose method is on the stack; its key adds
    the code locations from the calling line up to that module's frame. A key seen again in
    the same forward pass (a loop, a block reused twice) gets the next occurrence number.
    Frames of torch's hook machinery (``nn.Module.__call__``) are left out of keys.

    Args:
        model: the root module; its submodules' qualified names name the sites.
        stop: code objects at which the walk up the stack stops (the forward's entry point).
        modules: a ready ``{id(module): (name, module)}`` index of ``model`` (default: built).
    """

    def __init__(self, model: nn.Module, stop: frozenset, modules: dict | None = None) -> None:
        self.modules = modules if modules is not None else self.index(model)
        self.stop = stop
        self.seen: Counter = Counter()

    @staticmethod
    def index(model: nn.Module) -> dict:
        """``{id(module): (qualified name, module)}`` for every submodule of ``model``."""
        return {id(m): (name, m) for name, m in model.named_modules()}

    def key(self, call: Call, depth: int = 2) -> tuple[tuple, str, str, Any]:
        """``(key, kind, owner, caller frame)`` for the call being made ``depth`` frames up.

        Only frames that can be methods of the model's modules have their ``self`` looked up,
        since reading a frame's locals is the costly step.
        """
        frame = sys._getframe(depth)
        while frame is not None and _file(frame.f_code) in _SKIPPED_FILES:
            frame = frame.f_back
        caller, kind, owner, chain = frame, "function", None, []
        this = self._model_module(frame)
        if this is not None and frame.f_code.co_name == "forward" and module_activation(this[1]) is not None:
            kind, owner = "module", this[0]
            frame = frame.f_back  # the activation module's caller (through nn.Module.__call__)
        while frame is not None and frame.f_code not in self.stop:
            if _file(frame.f_code) != _MODULE_FILE:
                chain.append(_location(frame))
                found = self._model_module(frame)
                if found is not None:
                    owner = found[0] if owner is None else owner
                    break
            frame = frame.f_back
        owner = "" if owner is None else owner
        base = (kind, owner, call.short, tuple(chain))
        occurrence = self.seen[base]
        self.seen[base] += 1
        return base + (occurrence,), kind, owner, caller

    def _model_module(self, frame) -> tuple[str, nn.Module] | None:
        obj = _frame_self(frame) if frame is not None else None
        return self.modules.get(id(obj)) if obj is not None else None


@dataclass(frozen=True)
class SiteRecord:
    """One activation call seen at run time: its key, name, activation and per-sample shape."""

    key: tuple
    name: str
    kind: str  # "module" or "function"
    activation: Activation
    shape: tuple  # input shape without the batch dimension
    where: str  # file:line of the call, for messages
    inplace: bool = False  # the call writes its result into its input

    @property
    def total(self) -> int:
        """Activations evaluated at this site per sample."""
        return math.prod(self.shape)


@dataclass
class Discovery:
    """What runs: ``inference`` sites (eval mode), ``training_only`` sites, unsupported calls."""

    inference: list[SiteRecord]
    training_only: list[SiteRecord] = field(default_factory=list)
    unsupported: Counter = field(default_factory=Counter)


# aten kernels of the family, and fused kernels that compute an activation inside.
_FAMILY_KERNELS = frozenset({"relu", "relu_", "relu6", "relu6_", "hardtanh", "hardtanh_",
                             "leaky_relu", "leaky_relu_", "_transformer_encoder_layer_fwd"})


class _KernelWatch(TorchDispatchMode):
    """Notes activation kernels that ran outside every intercepted Python-level call."""

    def __init__(self, recorder: "_Recorder") -> None:
        super().__init__()
        self.recorder = recorder
        self.uncovered: list[str] = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing here is compiled, and wrapping the handler to skip torch.compile would
        # import torch._dynamo (seconds) on first use.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _FAMILY_KERNELS and not self.recorder.inside:
            self.uncovered.append(f"aten.{name} ({describe_frame(sys._getframe(1))})")
        return func(*args, **(kwargs or {}))


class _Recorder(TorchFunctionMode):
    """Records every ReLU-family call of a forward pass with its key and input shape."""

    def __init__(self, sites: CallSites, batch: int) -> None:
        super().__init__()
        self.sites = sites
        self.batch = batch
        self.calls: list[tuple] = []
        self.unsupported: Counter = Counter()
        self.inside = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        call = parse_call(func, args, kwargs)
        if call is None:
            if func in UNSUPPORTED_FUNCTIONS:
                self.unsupported[UNSUPPORTED_FUNCTIONS[func]] += 1
            return func(*args, **kwargs)
        key, kind, owner, caller = self.sites.key(call)
        where = describe_frame(caller)
        shape = tuple(call.input.shape)
        if len(shape) < 2 or shape[0] != self.batch:
            # Counts and gates are per sample: dimension 0 must be the batch, unfolded.
            raise GatingError(f"the {call.short} call at {where} gets a tensor of shape {shape} "
                              f"from a batch of {self.batch}; gates need inputs of shape "
                              "(batch, ...) with the batch unfolded")
        self.calls.append((key, kind, owner, call.activation, shape[1:], where, call.inplace))
        self.inside += 1
        try:
            return func(*args, **kwargs)
        finally:
            self.inside -= 1


def first_sample(example_input: Any) -> Any:
    """The first sample of a batch (or of each tensor of a tuple of forward arguments)."""
    if isinstance(example_input, tuple):
        return tuple(first_sample(x) for x in example_input)
    return example_input[:1] if isinstance(example_input, torch.Tensor) else example_input


def _two_samples(example_input: Any) -> Any:
    """The first sample twice: a training-mode forward (BatchNorm) needs more than one."""
    if isinstance(example_input, tuple):
        return tuple(_two_samples(x) for x in example_input)
    if isinstance(example_input, torch.Tensor) and example_input.dim() > 0:
        return torch.cat([example_input[:1], example_input[:1]])
    return example_input


@contextmanager
def preserved_state(model: nn.Module, training: bool) -> Iterator[None]:
    """Run with every module in one mode and no grad; afterwards restore the modes, the
    buffers and the RNG states (a training-mode forward, or tracing one, updates buffers)."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = sorted({t.device.index or 0 for t in model.parameters() if t.is_cuda})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        model.train(training)
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode
            for buffer, saved in buffers:
                buffer.copy_(saved)


def _run_forward(forward: Callable, example_input: Any) -> Any:
    return forward(*example_input) if isinstance(example_input, tuple) else forward(example_input)


def record_calls(model: nn.Module, example_input: Any, training: bool,
                 forward: Callable | None = None) -> tuple[list, Counter]:
    """Run one no-grad forward in the given mode and record its activation calls.

    Args:
        model: the module (its state is restored afterwards).
        example_input: one sample (eval mode) or two (training mode), or a tuple of forward
            arguments holding such batches.
        training: run in training mode (restoring buffers and RNG states) or eval mode.
        forward: what to call instead of ``model`` (default: ``model`` itself).

    Returns:
        The calls ``(key, kind, owner, activation, shape, where, inplace)`` in order, and the
        unsupported activations seen.

    Raises:
        GatingError: an activation kernel ran outside a Python-level call, an activation
            input's first dimension is not the batch, or the forward pass failed.
    """
    stop = frozenset({record_calls.__code__, _run_forward.__code__})
    recorder = _Recorder(CallSites(model, stop), 2 if training else 1)
    watch = _KernelWatch(recorder)
    mode = "training" if training else "eval"
    with preserved_state(model, training):
        try:
            with recorder, watch:
                _run_forward(forward or model, example_input)
        except GatingError:
            raise
        except Exception as error:  # the user's model failed; say so in one line
            first = (str(error).strip().splitlines() or [""])[0]
            raise GatingError(f"the model's {mode}-mode forward failed on the example input "
                              f"({type(error).__name__}: {first})") from error
    if watch.uncovered:
        shown = ", ".join(sorted(set(watch.uncovered))[:3])
        raise GatingError(f"activation kernels ran outside any Python-level call and cannot be "
                          f"gated or counted ({mode} mode): {shown}")
    return recorder.calls, recorder.unsupported


def discover(model: nn.Module, example_input: Any, training: bool = True,
             forward: Callable | None = None) -> Discovery:
    """Find the ReLU-family sites that run at inference and those reached only in training.

    Eval mode runs the first sample; training mode runs it twice (BatchNorm needs two
    values), restoring buffers and RNG states, so the model is left as it was.

    Args:
        model: the module to inspect (ungated).
        example_input: a batch or a tuple of forward arguments.
        training: also run in training mode to find training-only sites.
        forward: what to call instead of ``model``.

    Returns:
        A :class:`Discovery`; names follow forward order, inference sites first.

    Raises:
        GatingError: see :func:`record_calls`, or a site whose activation or shape changes
            between calls.

    Example:
        >>> found = discover(nn.Sequential(nn.Linear(3, 4), nn.ReLU6()), torch.zeros(1, 3))
        >>> [(s.name, s.activation.family, s.total) for s in found.inference]
        [('1', 'relu6', 4)]
    """
    calls, unsupported = record_calls(model, first_sample(example_input), False, forward)
    taken: set[str] = set()
    inference = _name_records(calls, taken, {})
    training_only: list[SiteRecord] = []
    if training:
        train_calls, train_unsupported = record_calls(model, _two_samples(example_input), True, forward)
        unsupported |= train_unsupported
        known = {r.key: r for r in inference}
        _check_consistent(known, train_calls)
        training_only = _name_records([c for c in train_calls if c[0] not in known], taken, {})
    return Discovery(inference, training_only, unsupported)


def _name_records(calls: list, taken: set[str], by_key: dict) -> list[SiteRecord]:
    records = []
    for key, kind, owner, activation, shape, where, inplace in calls:
        if key in by_key:
            continue
        name = unique_name(_base_name(kind, owner, key[2]), taken)
        taken.add(name)
        by_key[key] = SiteRecord(key, name, kind, activation, shape, where, inplace)
        records.append(by_key[key])
    return records


def _check_consistent(known: dict, calls: list) -> None:
    for key, _, _, activation, shape, where, _ in calls:
        record = known.get(key)
        if record is not None and (record.activation != activation or record.shape != shape):
            raise GatingError(f"the activation call at {where} changes between training and eval "
                              f"mode ({record.activation.family} on {record.shape} vs "
                              f"{activation.family} on {shape}); one gate cannot serve both")
