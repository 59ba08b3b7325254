"""Learnable ReLU gates attached to any ``nn.Module`` (SNL, Section 3 of the paper).

A gate replaces one ReLU *call site* ``relu(z)`` by

* ``variant="linearize"`` (SNL, Eq. 2 / Eq. 6):  ``c * relu(z) + (1 - c) * z = z - c * min(z, 0)``
* ``variant="zero"`` (Appendix B.2, Eq. 7):        ``c * relu(z)``

with a learnable slope ``c`` that starts at 1, so a freshly gated model computes exactly what
the original computed, forward and backward. ``c`` has one entry per neuron
(``granularity="pixel"``: the shape of ``z`` without its batch dimension) or one per channel
(``granularity="channel"``: shape ``(C, 1, ..., 1)``, broadcast over the spatial dimensions).
Its shape comes from the first forward pass; :func:`materialize_gates` runs that pass.

The functions come in pairs, like ``torch.nn.utils.prune``: :func:`add_gates` /
:func:`remove_gates` / :func:`is_gated`. They change the model in place and return it.

How gating works. The model is traced with ``torch.fx``; every ReLU call site (``nn.ReLU``
modules, also one instance called at several sites, ``F.relu``, ``torch.relu``, ``torch.relu_``,
``F.relu(inplace=True)``, ``Tensor.relu()``, ``Tensor.relu_()``) becomes a call to its own
:class:`ReLUGate`. The gates live in a container submodule ``model.snl_gates`` (a site named
``"layer1.0.relu"`` is ``model.snl_gates.layer1.0.relu``), and the traced forward is bound to the
model as an instance attribute. The model keeps its class, its submodules and its parameter
objects; :func:`remove_gates` deletes the container and the instance forward. Gated models
deep-copy fine; save them with ``state_dict()`` (the generated forward cannot be pickled).

Limitations of tracing (from ``torch.fx``): Python control flow is fixed at trace time (e.g. a
``if self.training`` branch takes the value it had in :func:`add_gates`), and a ReLU inside a
``torch.nn`` leaf module that fx does not trace into is not gated (a warning names it). An
in-place ReLU's effect is carried to later uses of its input, but not through views of it
(``x[:, :3].relu_()``). A model fx cannot trace at all falls back to replacing its ``nn.ReLU``
modules, with a warning.
"""

from __future__ import annotations

import fnmatch
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parameter import UninitializedParameter

__all__ = [
    "GATE_CONTAINER",
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
    "eval_forward",
]

GATE_CONTAINER = "snl_gates"
_STATE_ATTR = "_snl_gating"
VARIANTS = ("linearize", "zero")
GRANULARITIES = ("pixel", "channel")

_RELU_FUNCTIONS = {F.relu: False, torch.relu: False, torch.relu_: True, F.relu_: True}
_RELU_METHODS = {"relu": False, "relu_": True}


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


class ReLUGate(nn.Module):
    """A ReLU with a learnable slope ``c`` per neuron or per channel (initialised to 1).

    Args:
        granularity: ``"pixel"`` (one ``c`` per entry of ``z`` without the batch dimension) or
            ``"channel"`` (one ``c`` per channel, dimension 1 of ``z``).
        variant: ``"linearize"`` computes ``z - c * min(z, 0)``; ``"zero"`` computes
            ``c * relu(z)`` (Appendix B.2, Eq. 7).

    Raises:
        ValueError: unknown granularity or variant; on forward, an input without a batch
            dimension or whose shape differs from the one ``c`` was shaped for.

    Example:
        >>> gate = ReLUGate("channel")
        >>> y = gate(torch.randn(2, 3, 4, 4))
        >>> tuple(gate.c.shape)
        (3, 1, 1)
    """

    def __init__(self, granularity: str = "pixel", variant: str = "linearize") -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.granularity = granularity
        self.variant = variant
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

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if isinstance(self.c, UninitializedParameter):
            self._materialize(z)
        else:
            self._check_shape(z)
        c = self.c
        if self.variant == "zero":
            return torch.relu(z) * c
        # The c <= 1 test reads tensor data, which would split a torch.compile graph at every
        # gate; compiled, the general function is used (the compiler chooses what to save).
        if not c.requires_grad and not torch.compiler.is_compiling() and bool((c <= 1).all()):
            return _FrozenLinearizeFunction.apply(z, c)
        return _LinearizeFunction.apply(z, c)

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
        return f"granularity={self.granularity!r}, variant={self.variant!r}, c={shape}"


@dataclass
class ReLUSite:
    """One ReLU call site found in a traced model.

    ``name`` is readable and unique: a module's qualified name (``"layer1.0.relu"``, then
    ``"layer1.0.relu_1"`` for its second call), or the enclosing module's name plus the fx
    node name for functional and method calls (``"relu_2"``, ``"block.relu"``).
    ``kind`` is ``"module"``, ``"function"`` or ``"method"``.
    """

    name: str
    kind: str
    inplace: bool
    node: fx.Node


@dataclass
class _GatingState:
    """What :func:`add_gates` changed, so :func:`remove_gates` can undo it exactly."""

    mode: str  # "fx": traced forward + gate container; "module": nn.ReLU modules replaced
    sites: list[str] = field(default_factory=list)  # gated site names, forward order
    all_sites: list[str] = field(default_factory=list)  # gated and excluded, forward order
    replaced: list[tuple[str, nn.Module]] = field(default_factory=list)  # "module" mode
    saved_forward: Any = None  # an instance-level forward that existed before gating


def _relu_kind(node: fx.Node, root: nn.Module) -> tuple[str, bool] | None:
    """``(kind, inplace)`` if ``node`` is a ReLU call, else None."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        if type(module) is nn.ReLU:
            return "module", bool(module.inplace)
    elif node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        inplace = _RELU_FUNCTIONS[node.target]
        if node.target is F.relu:
            inplace = bool(node.kwargs.get("inplace", node.args[1] if len(node.args) > 1 else False))
        return "function", inplace
    elif node.op == "call_method" and node.target in _RELU_METHODS:
        return "method", _RELU_METHODS[node.target]
    return None


def _unique_name(name: str, taken: set[str]) -> str:
    """``name`` or ``name_k``: unique, and neither a dotted prefix of a taken name nor vice versa."""

    def clashes(candidate: str) -> bool:
        return any(candidate == t or t.startswith(candidate + ".") or candidate.startswith(t + ".")
                   for t in taken)

    candidate, k = name, 1
    while clashes(candidate):
        candidate, k = f"{name}_{k}", k + 1
    return candidate


def _site_base_name(node: fx.Node, kind: str, module_calls: dict[str, int]) -> str:
    if kind == "module":
        count = module_calls.get(node.target, 0)
        module_calls[node.target] = count + 1
        return node.target if count == 0 else f"{node.target}_{count}"
    stack = node.meta.get("nn_module_stack") or {}
    scope = next(reversed(stack)) if stack else ""
    return f"{scope}.{node.name}" if scope else node.name


def trace_relu_sites(model: nn.Module) -> tuple[fx.GraphModule, list[ReLUSite]]:
    """Trace ``model`` with ``torch.fx`` and list its ReLU call sites in forward order.

    Args:
        model: any module fx can trace.

    Returns:
        The traced ``GraphModule`` (sharing the model's leaf modules) and the sites.

    Raises:
        Exception: whatever ``torch.fx.symbolic_trace`` raises for an untraceable model.

    Example:
        >>> _, sites = trace_relu_sites(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
        >>> [s.name for s in sites]
        ['1']
    """
    gm = fx.symbolic_trace(model)
    sites, taken, module_calls = [], set(), {}
    for node in gm.graph.nodes:
        found = _relu_kind(node, gm)
        if found is None:
            continue
        kind, inplace = found
        name = _unique_name(_site_base_name(node, kind, module_calls), taken)
        taken.add(name)
        sites.append(ReLUSite(name, kind, inplace, node))
    return gm, sites


def _relu_input(node: fx.Node) -> Any:
    return node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("self"))


def _set_nested(container: nn.Module, dotted: str, module: nn.Module) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if part not in container._modules:
            container.add_module(part, nn.Module())
        container = container._modules[part]
    container.add_module(leaf, module)


def _is_excluded(name: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def _gate_site(gm: fx.GraphModule, site: ReLUSite, order: dict[fx.Node, int]) -> None:
    """Replace one ReLU node by a call to its gate (already in the container)."""
    graph, node = gm.graph, site.node
    source = _relu_input(node)
    with graph.inserting_after(node):
        gate_node = graph.call_module(f"{GATE_CONTAINER}.{site.name}", (source,))
    node.replace_all_uses_with(gate_node)
    if site.inplace and isinstance(source, fx.Node):
        # An in-place ReLU also changed its input: later readers of the input must see the
        # gate's output instead.
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


def _warn_hidden_relus(model: nn.Module, gm: fx.GraphModule) -> None:
    hidden = sorted({node.target for node in gm.graph.nodes if node.op == "call_module"
                     and not isinstance(gm.get_submodule(node.target), nn.ReLU)
                     and any(isinstance(m, nn.ReLU) for m in gm.get_submodule(node.target).modules())})
    if hidden:
        warnings.warn(f"add_gates: ReLUs inside the leaf module(s) {hidden} are not traced into "
                      "and stay ungated", stacklevel=3)


def _add_gates_fx(model, gm, sites, granularity, variant, exclude) -> _GatingState:
    container = nn.Module()
    gated = [site for site in sites if not _is_excluded(site.name, exclude)]
    for site in sites:
        # An excluded site calls a plain nn.ReLU in the container, so it can still be counted.
        excluded = _is_excluded(site.name, exclude)
        _set_nested(container, site.name, nn.ReLU() if excluded else ReLUGate(granularity, variant))
    gm.add_module(GATE_CONTAINER, container)
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for site in sites:
        _gate_site(gm, site, order)
    _move_constants(model, gm, container)
    gm.graph.lint()
    gm.recompile()
    _warn_hidden_relus(model, gm)
    state = _GatingState("fx", [site.name for site in gated], [site.name for site in sites],
                         saved_forward=model.__dict__.get("forward"))
    model.add_module(GATE_CONTAINER, container)
    # The generated code only reads attributes by their qualified names, which resolve on
    # the model itself, so it runs bound to the model.
    model.forward = types.MethodType(type(gm).forward, model)
    return state


def _add_gates_modules(model, granularity, variant, exclude, reason) -> _GatingState:
    state = _GatingState("module")
    for path, module in list(model.named_modules(remove_duplicate=False)):
        if type(module) is not nn.ReLU or not path:
            continue
        state.all_sites.append(path)
        if _is_excluded(path, exclude):
            continue
        parent_path, _, attr = path.rpartition(".")
        model.get_submodule(parent_path).add_module(attr, ReLUGate(granularity, variant))
        state.replaced.append((path, module))
        state.sites.append(path)
    warnings.warn(
        f"add_gates: torch.fx could not trace {type(model).__name__} ({reason}); only its "
        f"{len(state.sites)} nn.ReLU module(s) were gated. Functional ReLUs (F.relu, torch.relu, "
        "Tensor.relu) in its forward are NOT gated, and an nn.ReLU called at several sites "
        "shares one gate.", stacklevel=3)
    return state


def add_gates(model: nn.Module, granularity: str = "pixel", variant: str = "linearize",
              exclude: Iterable[str] = (), example_input: Any = None) -> nn.Module:
    """Put a learnable :class:`ReLUGate` at every ReLU call site of ``model`` (in place).

    Args:
        model: the network; it keeps its class and parameter objects.
        granularity: ``"pixel"`` or ``"channel"`` (see :class:`ReLUGate`).
        variant: ``"linearize"`` (SNL) or ``"zero"`` (Appendix B.2).
        exclude: fnmatch patterns; sites whose name matches one keep their plain ReLU.
        example_input: if given, a batch (or tuple of forward arguments) used to shape the
            gates at once via :func:`materialize_gates`.

    Returns:
        ``model`` itself, gated. Its new child ``snl_gates`` holds the gates; for a root
        ``nn.Sequential`` that child is also its last item (``model[-1]``).

    Raises:
        ValueError: the model is already gated, has an attribute named ``snl_gates``, or the
            granularity/variant is unknown.

    Warns:
        UserWarning: if fx cannot trace the model (then only ``nn.ReLU`` modules are gated), or
            if ReLU modules hide inside untraced leaf modules.

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
    try:
        gm, sites = trace_relu_sites(model)
    except Exception as error:  # fx raises many kinds of errors for untraceable code
        state = _add_gates_modules(model, granularity, variant, exclude, f"{type(error).__name__}: {error}")
    else:
        state = _add_gates_fx(model, gm, sites, granularity, variant, exclude)
    object.__setattr__(model, _STATE_ATTR, state)
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
    if state.mode == "fx":
        del model.__dict__["forward"]
        if state.saved_forward is not None:
            model.forward = state.saved_forward
        delattr(model, GATE_CONTAINER)
    else:
        for path, original in state.replaced:
            parent_path, _, attr = path.rpartition(".")
            model.get_submodule(parent_path).add_module(attr, original)
    del model.__dict__[_STATE_ATTR]
    return model


def gate_sites(model: nn.Module) -> list[tuple[str, ReLUGate]]:
    """``(site name, gate)`` pairs of a gated model, in forward order.

    (For a model fx could not trace, the order is module-registration order.)

    Raises:
        ValueError: the model is not gated.
    """
    state = _state(model)
    prefix = f"{GATE_CONTAINER}." if state.mode == "fx" else ""
    return [(name, model.get_submodule(prefix + name)) for name in state.sites]


def site_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ReLU site of a gated model in forward order: its :class:`ReLUGate`, or the plain
    ``nn.ReLU`` that an excluded site calls.

    Raises:
        ValueError: the model is not gated.
    """
    state = _state(model)
    prefix = f"{GATE_CONTAINER}." if state.mode == "fx" else ""
    return [(name, model.get_submodule(prefix + name)) for name in state.all_sites]


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
