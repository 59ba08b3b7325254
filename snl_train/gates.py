"""Learnable gates on ReLU-family activations of any ``nn.Module`` (SNL, Section 3 of the paper).

A gate replaces one activation *call site* ``act(z)`` by

* ``variant="linearize"`` (SNL, Eq. 2 / Eq. 6):  ``c * act(z) + (1 - c) * z``; for ReLU
  ``z - c * min(z, 0)``
* ``variant="zero"`` (Appendix B.2, Eq. 7):        ``c * act(z)``

with a learnable slope ``c`` that starts at 1, so a freshly gated model computes exactly what
the original computed, forward and backward; ``c = 0`` makes the site linear (the identity).
``act`` is ReLU, LeakyReLU (2 linear pieces), ReLU6 or Hardtanh (3 pieces). For the 3-piece
activations one slope covers both breakpoints: the gate moves the whole activation towards
the identity, and a linearized site saves both of its comparisons under MPC. Between 0 and 1
the output is ``torch.lerp(z, act(z), c)``, exact at both ends; the gradient is the same
interpolation of the identity's and the activation's gradients, so at ``c = 1`` it is
torch's own gradient bit for bit. ``c`` has one entry per neuron (``granularity="pixel"``: the
shape of ``z`` without its batch dimension) or one per channel (``granularity="channel"``:
shape ``(C, 1, ..., 1)``). Its shape comes from the first forward pass;
:func:`materialize_gates` runs that pass.

The functions come in pairs, like ``torch.nn.utils.prune``: :func:`add_gates` /
:func:`remove_gates` / :func:`is_gated`. They change the model in place and return it.

How sites are found (:mod:`snl_train.sites`) is separate from what a gate computes (here).
The gates live in a container submodule ``model.snl_gates`` (a site named
``"layer1.0.relu"`` is ``model.snl_gates.layer1.0.relu``), and an instance-level forward
routes every activation call to its gate, by one of two mechanisms:

* ``"fx"``: the model is traced with ``torch.fx`` and every activation node becomes a call to
  its gate; the generated forward runs with no overhead. Used only when it is faithful: the
  model has no instance-level forward (fx traces the class's), the traced graph is the same
  in training and eval mode (no ``self.training`` branches frozen into it) and, given
  ``example_input``, it has exactly the activation calls that run;
* ``"runtime"``: the model's own forward runs under a ``TorchFunctionMode`` that sends each
  activation call to the gate of its call site (:class:`snl_train.sites.CallSites`). Python
  control flow, ``self.training`` branches, randomness (dropout, drop-path), modules reused at
  several shapes and functional calls in untraceable code all behave as in the original.
  Sites reached only in training mode (auxiliary heads) keep their plain activation, are not
  counted, and are listed by :func:`training_only_sites`. A call at a site that was not seen
  when gating raises :class:`GatingError` rather than run ungated.

Either way the model keeps its class, its submodules and its parameter objects;
:func:`remove_gates` deletes the container and the instance forward. Gated models deep-copy
fine; save them with ``state_dict()`` (the generated forward cannot be pickled).
"""

from __future__ import annotations

import types
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.parameter import UninitializedParameter
from torch.overrides import TorchFunctionMode

from . import fused
from .sites import (RELU, Activation, CallSites, Discovery, GatingError, ReLUSite, SiteRecord,
                    describe_frame, discover, hidden_activation_modules, is_excluded,
                    module_activation, parse_call, preserved_state, trace_relu_sites,
                    unsupported_in_graph)

__all__ = [
    "GATE_CONTAINER",
    "Activation",
    "GatingError",
    "NothingToGate",
    "ReLUGate",
    "ReLUSite",
    "add_gates",
    "remove_gates",
    "is_gated",
    "gate_sites",
    "materialize_gates",
    "binarize_gates",
    "freeze_gates",
    "gate_parameters",
    "weight_parameters",
    "trace_relu_sites",
    "site_modules",
    "training_only_sites",
    "gating_mechanism",
    "unsupported_activations",
    "eval_forward",
]

GATE_CONTAINER = "snl_gates"
_STATE_ATTR = "_snl_gating"
VARIANTS = ("linearize", "zero")
GRANULARITIES = ("pixel", "channel")


class NothingToGate(GatingError):
    """The model calls no ReLU-family activation at inference: SNL has nothing to linearize."""


def _addcmul_into(out: torch.Tensor, base: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor,
                  value: float = 1) -> torch.Tensor:
    """``base + value * t1 * t2`` written into ``out`` (saves an allocation) when eager.

    Under torch.compile it is computed out of place, in ``out``'s dtype as eagerly (a bf16
    activation times an fp32 slope stays bf16): dynamo cannot trace ``out=`` into a
    non-contiguous (e.g. channels-last) tensor and would split the graph at every gate, and
    the compiler plans its own buffers anyway.
    """
    if torch.compiler.is_compiling():
        return torch.addcmul(base, t1, t2, value=value).to(out.dtype)
    return torch.addcmul(base, t1, t2, value=value, out=out)


class _LinearizeFunction(torch.autograd.Function):
    """``z - c * min(z, 0)`` saving only ``z`` and ``c`` for the backward pass.

    Plain autograd on the same formula would also keep ``min(z, 0)`` alive (and the paper's
    ``relu(z) * c + (1 - c) * z`` keeps ``relu(z)`` and ``z``); recomputing the clamp in the
    backward pass is cheaper than storing it.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, c)
        negative = z.clamp(max=0)
        return _addcmul_into(negative, z, c, negative, value=-1)  # one allocation

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, c = ctx.saved_tensors
        # r = -grad * 1(z <= 0): ReLU's own backward kernel, then one in-place pass.
        r = torch.ops.aten.threshold_backward(grad, z, 0).sub_(grad)
        grad_c = None
        if ctx.needs_input_grad[1]:
            # d/dc = -min(z, 0) = -z * 1(z <= 0), so grad_c = sum over the batch of r * z.
            grad_c = torch.mul(r, z).sum_to_size(c.shape)
        grad_z = None
        if ctx.needs_input_grad[0]:
            # d/dz = 1 - c * 1(z <= 0): grad + c * r, in place. At c = 1 this is exactly
            # ReLU's gradient (r + grad is 0 where z <= 0 and r is 0 elsewhere).
            grad_z = _addcmul_into(r, grad, c, r)
        return grad_z, grad_c


class _FrozenLinearizeFunction(torch.autograd.Function):
    """``z - c * min(z, 0)`` for a slope that needs no gradient and lies in ``c <= 1``.

    Then ``out > 0`` exactly where ``z > 0``, so the backward pass needs only the output, which
    the next layer keeps anyway: a frozen gate (the finetuning stage) costs no extra memory.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        negative = z.clamp(max=0)
        out = torch.addcmul(z, c, negative, value=-1, out=negative)
        ctx.save_for_backward(out, c)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out, c = ctx.saved_tensors
        r = torch.ops.aten.threshold_backward(grad, out, 0).sub_(grad)
        return torch.addcmul(grad, c, r, out=r), None


class _LerpFunction(torch.autograd.Function):
    """``lerp(z, act(z), c)`` for ReLU6, Hardtanh and LeakyReLU, saving only ``z`` and ``c``.

    ``torch.lerp`` returns its end points exactly at ``c = 0`` and ``c = 1``; the backward
    interpolates torch's own activation gradient the same way, so at ``c = 1`` outputs and
    gradients are those of the activation bit for bit.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, c: torch.Tensor, activation: Activation) -> torch.Tensor:
        ctx.activation = activation
        ctx.save_for_backward(z, c)
        out = activation.apply(z)
        # lerp needs one dtype: under autocast z may be bf16 / fp16 while c stays fp32
        return torch.lerp(z, out, c.to(z.dtype), out=out)  # writing over an end point is safe

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, c = ctx.saved_tensors
        activation = ctx.activation
        grad_z = grad_c = None
        if ctx.needs_input_grad[0]:
            own = activation.backward(grad, z)
            grad_z = torch.lerp(grad, own, c.to(own.dtype), out=own)
        if ctx.needs_input_grad[1]:
            # d/dc lerp(z, a, c) = a - z, summed over the batch in c's dtype (fp32 under autocast)
            grad_c = activation.apply(z).sub_(z).mul_(grad).to(c.dtype).sum_to_size(c.shape)
        return grad_z, grad_c, None


class ReLUGate(nn.Module):
    """A ReLU-family activation with a learnable slope ``c`` per neuron or per channel (starts at 1).

    Args:
        granularity: ``"pixel"`` (one ``c`` per entry of ``z`` without the batch dimension) or
            ``"channel"`` (one ``c`` per channel, dimension 1 of ``z``).
        variant: ``"linearize"`` computes ``lerp(z, act(z), c)`` (for ReLU ``z - c * min(z, 0)``);
            ``"zero"`` computes ``c * act(z)`` (Appendix B.2, Eq. 7).
        activation: which activation the gate stands for (default ReLU).

    Raises:
        ValueError: unknown granularity or variant; on forward, an input without a batch
            dimension or whose shape differs from the one ``c`` was shaped for.

    Example:
        >>> gate = ReLUGate("channel")
        >>> y = gate(torch.randn(2, 3, 4, 4))
        >>> tuple(gate.c.shape)
        (3, 1, 1)
    """

    def __init__(self, granularity: str = "pixel", variant: str = "linearize",
                 activation: Activation = RELU) -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.granularity = granularity
        self.variant = variant
        self.activation = activation
        self.c = UninitializedParameter()

    @property
    def is_materialized(self) -> bool:
        """Whether ``c`` has been shaped by a forward pass (or a loaded state dict)."""
        return not isinstance(self.c, UninitializedParameter)

    def c_shape_for(self, z: torch.Tensor) -> tuple[int, ...]:
        """The shape ``c`` takes for an input batch ``z`` (batch dimension first)."""
        if z.dim() < 2:
            raise ValueError(f"ReLUGate expects a batch of shape (N, ...), got shape {tuple(z.shape)}")
        if self.granularity == "pixel":
            return tuple(z.shape[1:])
        return (z.shape[1],) + (1,) * (z.dim() - 2)

    def _materialize(self, z: torch.Tensor) -> None:
        with torch.no_grad():
            self.c.materialize(self.c_shape_for(z), device=z.device, dtype=z.dtype)
            self.c.fill_(1.0)

    def _check_shape(self, z: torch.Tensor) -> None:
        c = self.c
        ok = z.shape[1:] == c.shape if self.granularity == "pixel" else (
            z.dim() == c.dim() + 1 and z.shape[1] == c.shape[0])
        if not ok:
            raise ValueError(
                f"ReLUGate was shaped for inputs (N, {', '.join(map(str, c.shape))}) "
                f"({self.granularity}-wise) but got an input of shape {tuple(z.shape)}")

    def forward(self, z: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The gated activation of ``z``; with ``inplace`` it is written into ``z`` as well."""
        if isinstance(self.c, UninitializedParameter):
            self._materialize(z)
        else:
            self._check_shape(z)
        if self.variant == "linearize" and fused.fused_applies(z, self.c):
            return self._fused_gate(z, inplace)
        if not inplace:
            return self._gate(z)
        # An in-place call site: later readers of z must see the result. The gate saves its
        # input for the backward pass, so it works on a copy that the write cannot change.
        return z.copy_(self._gate(z.clone() if torch.is_grad_enabled() else z))

    def _gate(self, z: torch.Tensor) -> torch.Tensor:
        c = self.c
        if self.variant == "zero":
            return self.activation.apply(z) * c
        if self.activation.family != "relu":
            return _LerpFunction.apply(z, c, self.activation)
        # The c <= 1 test reads tensor data, which would split a torch.compile graph at every
        # gate; compiled, the general function is used (the compiler chooses what to save).
        if not c.requires_grad and not torch.compiler.is_compiling() and bool((c <= 1).all()):
            return _FrozenLinearizeFunction.apply(z, c)
        return _LinearizeFunction.apply(z, c)

    def _fused_gate(self, z: torch.Tensor, inplace: bool) -> torch.Tensor:
        """``_gate`` (and, ``inplace``, the write into ``z``) in one pass each way: same results."""
        activation, c = self.activation, self.c
        if activation.family != "relu":
            return fused.lerp_gate(z, c, activation, inplace)
        if not c.requires_grad and bool((c <= 1).all()):
            return fused.frozen_linearize(z, c, inplace)
        return fused.linearize(z, c, inplace)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.is_materialized:
            super()._save_to_state_dict(destination, prefix, keep_vars)
        else:
            destination[prefix + "c"] = self.c

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # Loading a state dict into an unshaped gate shapes it, as lazy torch modules do.
        key = prefix + "c"
        value = state_dict.get(key)
        if not self.is_materialized and value is not None and not isinstance(value, UninitializedParameter):
            with torch.no_grad():
                self.c.materialize(value.shape, device=value.device, dtype=value.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        shape = tuple(self.c.shape) if self.is_materialized else "unshaped"
        family = "" if self.activation == RELU else f", activation={self.activation}"
        return f"granularity={self.granularity!r}, variant={self.variant!r}{family}, c={shape}"


@dataclass
class _GatingState:
    """What :func:`add_gates` changed, so :func:`remove_gates` can undo it exactly."""

    mode: str  # "fx": traced forward; "runtime": the own forward under a call interceptor
    sites: list[str] = field(default_factory=list)  # gated site names, forward order
    all_sites: list[str] = field(default_factory=list)  # gated and excluded, forward order
    saved_forward: Any = None  # an instance-level forward that existed before gating
    reason: str = ""  # why tracing was not used ("runtime" mode)
    keys: dict = field(default_factory=dict)  # run-time call key -> site name ("runtime")
    training_only: list[SiteRecord] = field(default_factory=list)  # plain, never counted
    unsupported: Counter = field(default_factory=Counter)  # GELU, SiLU, ... seen
    module_index: Any = None  # (id(model), CallSites index) cache for "runtime"


def _relu_input(node: fx.Node) -> Any:
    return node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("self"))


def _set_nested(container: nn.Module, dotted: str, module: nn.Module) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if part not in container._modules:
            container.add_module(part, nn.Module())
        container = container._modules[part]
    container.add_module(leaf, module)


def _site_container(sites, granularity: str, variant: str, exclude) -> tuple[nn.Module, list[str]]:
    """The gate container for ``(name, activation, inplace)`` sites; an excluded site gets the
    plain torch module of its activation (so it is still called, and counted, as a module)."""
    container, gated = nn.Module(), []
    for name, activation, inplace in sites:
        if is_excluded(name, exclude):
            _set_nested(container, name, activation.module(inplace))
        else:
            _set_nested(container, name, ReLUGate(granularity, variant, activation))
            gated.append(name)
    return container, gated


def _gate_site(gm: fx.GraphModule, site: ReLUSite, order: dict[fx.Node, int]) -> None:
    """Replace one activation node by a call to its gate (already in the container)."""
    graph, node = gm.graph, site.node
    source = _relu_input(node)
    with graph.inserting_after(node):
        gate_node = graph.call_module(f"{GATE_CONTAINER}.{site.name}", (source,))
    node.replace_all_uses_with(gate_node)
    if site.inplace and isinstance(source, fx.Node):
        # An in-place activation also changed its input: later readers of the input must see
        # the gate's output instead.
        for user in list(source.users):
            if user is not gate_node and order.get(user, -1) > order[node]:
                user.replace_input_with(source, gate_node)
    graph.erase_node(node)


def _resolves(model: nn.Module, target: str) -> bool:
    obj = model
    for part in target.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _move_constants(model: nn.Module, gm: fx.GraphModule, container: nn.Module) -> None:
    """Tracer-made constants live on the GraphModule only; keep them in the gate container."""
    constants = None
    for node in gm.graph.nodes:
        if node.op != "get_attr" or _resolves(model, node.target):
            continue
        if constants is None:
            constants = nn.Module()
            container.add_module("_constants", constants)
        name = node.target.replace(".", "_")
        value = gm
        for part in node.target.split("."):
            value = getattr(value, part)
        constants.register_buffer(name, value, persistent=False)
        node.target = f"{GATE_CONTAINER}._constants.{name}"


def _trace_in_mode(model: nn.Module, training: bool) -> tuple[fx.GraphModule, list[ReLUSite]]:
    # fx runs the forward's Python code on real buffers, so tracing can update them, and it
    # stores the tensor constants it makes on the model (the graph module keeps its own).
    attributes = set(model.__dict__)
    try:
        with preserved_state(model, training):
            return trace_relu_sites(model)
    finally:
        for name in set(model.__dict__) - attributes:
            del model.__dict__[name]


def _fx_plan(model: nn.Module, discovery: Discovery | None):
    """``(graph, sites)`` when tracing gates ``model`` faithfully, else the reason it does not."""
    if "forward" in model.__dict__:
        # torch.fx traces the class's forward; the instance's own would be silently replaced.
        return "it has an instance-level forward, which torch.fx does not trace"
    try:
        gm, sites = _trace_in_mode(model, False)
        train_gm, _ = _trace_in_mode(model, True)
    except Exception as error:  # fx raises many kinds of errors for untraceable code
        first = (str(error).strip().splitlines() or [""])[0]
        return f"torch.fx cannot trace it ({type(error).__name__}: {first[:200]})"
    if gm.code != train_gm.code:
        return "its traced forward differs between training and eval mode"
    if discovery is None:
        hidden = hidden_activation_modules(gm)
        if hidden:
            return f"tracing does not reach the activations inside the leaf modules {hidden}"
        return gm, sites
    if discovery.training_only:
        return "some activations run only in training mode"
    traced = [(s.name, s.activation) for s in sites]
    ran = [(r.name, r.activation) for r in discovery.inference]
    if traced != ran:
        return (f"the traced graph has {len(traced)} activation calls where {len(ran)} run "
                "(some are inside modules fx does not trace into)")
    return gm, sites


def _add_gates_fx(model, gm, sites, granularity, variant, exclude) -> _GatingState:
    # In-place sites are rewired in the graph, so every site's module works out of place.
    container, gated = _site_container([(s.name, s.activation, False) for s in sites],
                                       granularity, variant, exclude)
    gm.add_module(GATE_CONTAINER, container)
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for site in sites:
        _gate_site(gm, site, order)
    _move_constants(model, gm, container)
    gm.graph.lint()
    gm.recompile()
    state = _GatingState("fx", gated, [site.name for site in sites],
                         saved_forward=model.__dict__.get("forward"))
    model.add_module(GATE_CONTAINER, container)
    # The generated code only reads attributes by their qualified names, which resolve on
    # the model itself, so it runs bound to the model.
    model.forward = types.MethodType(type(gm).forward, model)
    return state


def _add_gates_runtime(model, discovery: Discovery, granularity, variant, exclude,
                       reason: str) -> _GatingState:
    inference = discovery.inference
    container, gated = _site_container([(r.name, r.activation, r.inplace) for r in inference],
                                       granularity, variant, exclude)
    keys = {r.key: r.name for r in inference + discovery.training_only}
    state = _GatingState("runtime", gated, [r.name for r in inference],
                         saved_forward=model.__dict__.get("forward"), reason=reason, keys=keys,
                         training_only=list(discovery.training_only))
    model.add_module(GATE_CONTAINER, container)
    model.forward = types.MethodType(_runtime_forward, model)
    return state


class _Interceptor(TorchFunctionMode):
    """Sends each ReLU-family call of a gated model's forward to the module of its site."""

    def __init__(self, model: nn.Module, state: _GatingState) -> None:
        super().__init__()
        self.model, self.state = model, state
        index = state.module_index
        if index is None or index[0] != id(model):
            # A deep copy carries the original's index: rebuild it for this model.
            index = state.module_index = (id(model), CallSites.index(model))
        self.sites = CallSites(model, _STOP, index[1])
        self.training_only = {r.name for r in state.training_only}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # pragma: no mutate block
        # Not mutation-tested: CallSites.key finds the call site two frames up, and the
        # wrapper frame a mutation tool puts around this method would change every site key.
        kwargs = kwargs or {}
        call = parse_call(func, args, kwargs)
        if call is None:
            return func(*args, **kwargs)
        key, _, _, caller = self.sites.key(call)
        name = self.state.keys.get(key)
        if name is None:
            raise GatingError(f"the {call.short} call at {describe_frame(caller)} was not seen when "
                              "the model was gated (control flow that depends on the data?); it "
                              "can be neither gated nor counted")
        if name in self.training_only:
            return func(*args, **kwargs)
        module = self.model.get_submodule(f"{GATE_CONTAINER}.{name}")
        if isinstance(module, ReLUGate):
            if module.activation == call.activation:
                return module(call.input, inplace=call.inplace)
        elif module_activation(module) == call.activation and module.inplace == call.inplace:
            return module(call.input)  # an excluded site: the plain activation module
        raise GatingError(f"site {name!r} ({describe_frame(caller)}) was gated for another call: "
                          f"now {call.activation}{' in place' if call.inplace else ''}")


def _sequential_forward(model: nn.Sequential, x: Any) -> Any:
    """``nn.Sequential.forward`` without the gate container (a child it would otherwise call)."""
    for name, module in model._modules.items():
        if name != GATE_CONTAINER:
            x = module(x)
    return x


def _own_forward(model: nn.Module) -> Any:
    """What runs the model's own forward once gated (None: calling the model itself)."""
    if type(model).forward is nn.Sequential.forward and "forward" not in model.__dict__:
        return types.MethodType(_sequential_forward, model)
    return None


def _runtime_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:  # pragma: no mutate block
    """The instance forward of a model gated at run time: its own forward, intercepted."""
    # Not mutation-tested: its code object is where CallSites stops walking up the stack
    # (_STOP); a mutation tool that wraps it would leave the wrapped body's frame in every key.
    state = self.__dict__[_STATE_ATTR]
    with _Interceptor(self, state):
        if state.saved_forward is not None:
            return state.saved_forward(*args, **kwargs)
        if type(self).forward is nn.Sequential.forward:
            return _sequential_forward(self, *args, **kwargs)
        return type(self).forward(self, *args, **kwargs)


_STOP = frozenset({_runtime_forward.__code__})


def _nothing_to_gate(model: nn.Module, discovery: Discovery | None, unsupported: Counter) -> NothingToGate:
    extra = []
    if unsupported:
        extra.append("it calls " + ", ".join(f"{k} x{v}" for k, v in sorted(unsupported.items()))
                     + ", which SNL gates cannot linearize")
    if discovery is not None and discovery.training_only:
        extra.append(f"{len(discovery.training_only)} activation site(s) run only in training mode")
    detail = f" ({'; '.join(extra)})" if extra else ""
    return NothingToGate(f"{type(model).__name__} has no ReLU, ReLU6, Hardtanh or LeakyReLU "
                         f"that runs at inference, so SNL has nothing to linearize{detail}")


def _warn_unsupported(model: nn.Module, unsupported: Counter) -> None:
    if unsupported:
        listed = ", ".join(f"{k} x{v}" for k, v in sorted(unsupported.items()))
        warnings.warn(f"add_gates: {type(model).__name__} also calls {listed}: activations SNL "
                      "gates cannot linearize; they are neither gated nor counted in the ReLU budget",
                      stacklevel=3)


def add_gates(model: nn.Module, granularity: str = "pixel", variant: str = "linearize",
              exclude: Iterable[str] = (), example_input: Any = None) -> nn.Module:
    """Put a learnable :class:`ReLUGate` at every ReLU-family call site of ``model`` (in place).

    With ``example_input`` the model is run (eval mode, then training mode; its buffers and
    the RNG states are restored) to find what actually runs, and traced gating is used only
    if it matches; otherwise the calls are gated at run time (see the module docstring).
    Without it, the model must be traceable faithfully by ``torch.fx``.

    Args:
        model: the network; it keeps its class and parameter objects.
        granularity: ``"pixel"`` or ``"channel"`` (see :class:`ReLUGate`).
        variant: ``"linearize"`` (SNL) or ``"zero"`` (Appendix B.2).
        exclude: fnmatch patterns; sites whose name matches one keep their plain activation.
        example_input: a batch (or tuple of forward arguments) used to find the sites and to
            shape the gates at once via :func:`materialize_gates`.

    Returns:
        ``model`` itself, gated. Its new child ``snl_gates`` holds the gates; for a root
        ``nn.Sequential`` that child is also its last item (``model[-1]``).

    Raises:
        ValueError: the model is already gated, has an attribute named ``snl_gates``, or the
            granularity/variant is unknown.
        NothingToGate: no ReLU-family activation runs at inference.
        GatingError: an activation cannot be gated or counted (the message names it), or
            tracing is not faithful and no ``example_input`` was given.

    Warns:
        UserWarning: the model also calls activations SNL cannot linearize (GELU, SiLU, ...).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> net = add_gates(net, example_input=torch.randn(1, 4))
        >>> [(name, tuple(g.c.shape)) for name, g in gate_sites(net)]
        [('1', (8,))]
    """
    ReLUGate(granularity, variant)  # validates the arguments before touching the model
    if is_gated(model):
        raise ValueError("add_gates: the model is already gated; call remove_gates first")
    if hasattr(model, GATE_CONTAINER):
        raise ValueError(f"add_gates: the model already has an attribute {GATE_CONTAINER!r}")
    exclude = tuple(exclude)
    # A Sequential is run as it will run once gated, so its call sites get the same keys.
    discovery = (discover(model, example_input, forward=_own_forward(model))
                 if example_input is not None else None)
    plan = _fx_plan(model, discovery)
    traced = not isinstance(plan, str)
    unsupported = discovery.unsupported if discovery is not None else (
        unsupported_in_graph(plan[0]) if traced else Counter())
    if (discovery is not None and not discovery.inference) or (discovery is None and traced and not plan[1]):
        raise _nothing_to_gate(model, discovery, unsupported)
    if traced:
        state = _add_gates_fx(model, *plan, granularity, variant, exclude)
    elif discovery is None:
        raise GatingError(f"add_gates: {type(model).__name__} cannot be gated by tracing: {plan}; "
                          "pass example_input so its activation calls are found at run time")
    else:
        state = _add_gates_runtime(model, discovery, granularity, variant, exclude, plan)
    state.unsupported = unsupported
    object.__setattr__(model, _STATE_ATTR, state)
    _warn_unsupported(model, unsupported)
    if example_input is not None:
        materialize_gates(model, example_input)
    return model


def is_gated(model: nn.Module) -> bool:
    """Whether :func:`add_gates` has been applied to ``model`` (and not removed)."""
    return isinstance(model.__dict__.get(_STATE_ATTR), _GatingState)


def _state(model: nn.Module) -> _GatingState:
    if not is_gated(model):
        raise ValueError(f"expected a model gated by add_gates, got an ungated {type(model).__name__}")
    return model.__dict__[_STATE_ATTR]


def remove_gates(model: nn.Module) -> nn.Module:
    """Undo :func:`add_gates`: the model computes its original function again.

    Learned gate values are discarded (binarize and keep the gated model to deploy them).

    Args:
        model: a gated model.

    Returns:
        ``model`` itself: same class, same parameter objects, original forward.

    Raises:
        ValueError: the model is not gated.

    Example:
        >>> net = add_gates(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
        >>> is_gated(remove_gates(net))
        False
    """
    state = _state(model)
    del model.__dict__["forward"]
    if state.saved_forward is not None:
        model.forward = state.saved_forward
    delattr(model, GATE_CONTAINER)
    del model.__dict__[_STATE_ATTR]
    return model


def gate_sites(model: nn.Module) -> list[tuple[str, ReLUGate]]:
    """``(site name, gate)`` pairs of a gated model, in forward order.

    Raises:
        ValueError: the model is not gated.
    """
    state = _state(model)
    return [(name, model.get_submodule(f"{GATE_CONTAINER}.{name}")) for name in state.sites]


def site_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every inference site of a gated model in forward order: its :class:`ReLUGate`, or the
    plain activation module that an excluded site calls.

    Raises:
        ValueError: the model is not gated.
    """
    state = _state(model)
    return [(name, model.get_submodule(f"{GATE_CONTAINER}.{name}")) for name in state.all_sites]


def training_only_sites(model: nn.Module) -> list[SiteRecord]:
    """Sites of a gated model reached only in training mode: left plain and never counted.

    Raises:
        ValueError: the model is not gated.
    """
    return list(_state(model).training_only)


def gating_mechanism(model: nn.Module) -> tuple[str, str]:
    """``("fx", "")`` or ``("runtime", why tracing was not used)`` for a gated model.

    Raises:
        ValueError: the model is not gated.
    """
    state = _state(model)
    return state.mode, state.reason


def unsupported_activations(model: nn.Module) -> dict[str, int]:
    """Activations SNL cannot linearize that a gated model calls (name -> calls per forward).

    Raises:
        ValueError: the model is not gated.
    """
    return dict(_state(model).unsupported)


def eval_forward(model: nn.Module, example_input: Any) -> Any:
    """One no-grad forward in eval mode, restoring every module's training flag afterwards.

    Eval mode keeps BatchNorm running statistics untouched. ``example_input`` is a tensor or a
    tuple of forward arguments.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example_input, tuple):
                return model(*example_input)
            return model(example_input)
    finally:
        for module, training in modes:
            module.training = training


def materialize_gates(model: nn.Module, example_input: Any) -> nn.Module:
    """Shape every gate's ``c`` by one forward pass (needed before building an optimizer).

    Args:
        model: a gated model.
        example_input: a batch (any batch size) or a tuple of forward arguments.

    Returns:
        ``model``.

    Raises:
        ValueError: the model is not gated.
        RuntimeError: some gate was not reached by the forward pass.

    Example:
        >>> net = add_gates(nn.Sequential(nn.Linear(3, 5), nn.ReLU()))
        >>> tuple(gate_sites(materialize_gates(net, torch.zeros(2, 3)))[0][1].c.shape)
        (5,)
    """
    sites = gate_sites(model)
    if any(not gate.is_materialized for _, gate in sites):
        eval_forward(model, example_input)
    missing = [name for name, gate in sites if not gate.is_materialized]
    if missing:
        raise RuntimeError(f"materialize_gates: the forward pass never reached gate(s) {missing}")
    return model


def _materialized_gates(model: nn.Module) -> list[tuple[str, ReLUGate]]:
    sites = gate_sites(model)
    missing = [name for name, gate in sites if not gate.is_materialized]
    if missing:
        raise RuntimeError(f"gates {missing[:5]} are not shaped yet; call "
                           "materialize_gates(model, example_input) first")
    return sites


def binarize_gates(model: nn.Module, epsilon: float = 0.01) -> nn.Module:
    """Set every gate slope to ``1(c > epsilon)`` (Algorithm 1, line 11), in place.

    Raises:
        ValueError: the model is not gated. RuntimeError: gates not shaped yet.

    Example:
        >>> net = add_gates(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), example_input=torch.zeros(1, 2))
        >>> _ = gate_sites(net)[0][1].c.data.copy_(torch.tensor([0.5, 0.001, 2.0]))
        >>> gate_sites(binarize_gates(net))[0][1].c.tolist()
        [1.0, 0.0, 1.0]
    """
    with torch.no_grad():
        for _, gate in _materialized_gates(model):
            gate.c.copy_((gate.c > epsilon).to(gate.c.dtype))
    return model


def freeze_gates(model: nn.Module) -> nn.Module:
    """Stop gradients to every gate (``requires_grad=False``); returns ``model``.

    Undo with ``for p in gate_parameters(model): p.requires_grad_(True)``.
    """
    for _, gate in _materialized_gates(model):
        gate.c.requires_grad_(False)
    return model


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The gate slopes ``c`` of a gated model, in forward order (for their own optimizer group).

    Raises:
        ValueError: the model is not gated. RuntimeError: gates not shaped yet.
    """
    return [gate.c for _, gate in _materialized_gates(model)]


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``model`` that is not a gate slope (all of them if ungated)."""
    gates = {id(p) for p in gate_parameters(model)} if is_gated(model) else set()
    return [p for p in model.parameters() if id(p) not in gates]
