"""Fused CPU kernels for the learnable gates of :mod:`snl_train.gates` (one pass each way).

On the small, memory-bound networks of model zoos every element-wise pass over an
activation costs about as much as the activation's convolution share; the eager gate makes
two passes forward and four to five backward where an in-place ReLU makes one each way. The
kernels of ``fused_kernels.cpp`` compute the same formulas in one pass each way:

* ReLU: ``z - c * min(z, 0)``; backward ``grad + c * r`` and the slope gradient
  ``sum r * z`` with ``r = threshold_backward(grad, z, 0) - grad``;
* ReLU6 / Hardtanh / LeakyReLU: ``lerp(z, act(z), c)``; backward ``lerp(grad, act'(grad, z), c)``
  and ``sum (act(z) - z) * grad``;
* at an in-place call site, the input is copied aside for the backward pass in the same pass
  that overwrites it.

Element by element they use the eager formulas' operations in the same order (with the
fused multiply-adds torch's own AVX2 kernels use), so outputs and input gradients equal the
eager path's, and at ``c = 1`` torch's activations, bit for bit. The slope gradient is
summed in double in a fixed order that does not depend on the thread count.

The C++ source is compiled on first use with ``torch.utils.cpp_extension.load_inline`` (a
C++ compiler and ninja are needed; the build is cached in torch's extensions directory,
``TORCH_EXTENSIONS_DIR`` if set). If it cannot be built or loaded, the gates run the eager
functions, with one warning: results are the same, only slower. ``SNL_FUSED_GATES=0`` in the
environment turns the fused path off.

Example:
    >>> from snl_train.fused import fused_enabled
    >>> isinstance(fused_enabled(), bool)
    True
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from importlib import resources
from typing import Any

import torch

__all__ = ["ENV_VAR", "fused_available", "fused_enabled", "fused_applies", "load_error", "linearize", "frozen_linearize",
           "lerp_gate"]

ENV_VAR = "SNL_FUSED_GATES"
SOURCE = "fused_kernels.cpp"
_KINDS = {"relu": 0, "relu6": 1, "hardtanh": 1, "leaky_relu": 2}
_DTYPES = (torch.float32, torch.float64)
_LOCK = threading.Lock()
_LOADED: dict[str, Any] = {}  # "ops": the torch.ops namespace, or "error": why it failed


def fused_enabled() -> bool:
    """Whether the environment allows the fused path (``SNL_FUSED_GATES`` is not ``0``)."""
    return os.environ.get(ENV_VAR, "1").strip() != "0"


def _build_flags() -> list[str]:
    # -fno-math-errno and -fno-trapping-math as torch's own build: without them the compiler
    # may not evaluate both sides of a select, and the lerp loops stay scalar
    flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
    # torch's AVX2 / AVX512 element-wise kernels compute a * b + c with one fused multiply-add;
    # computing it the same way keeps the fused gates bit-identical to the eager ones.
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma", "-DUSE_FMA"]
    return flags


def extension_name() -> str:
    """The build's name: one per CPU capability, since the flags depend on it."""
    capability = torch.backends.cpu.get_cpu_capability().lower().replace(" ", "_")
    return f"snl_fused_gates_{capability}"


def _is_built(name: str) -> bool:
    """Whether torch's extensions directory already holds a build of ``name``."""
    try:
        from torch.utils.cpp_extension import _get_build_directory
        return os.path.exists(os.path.join(_get_build_directory(name, verbose=False), f"{name}.so"))
    except Exception:  # a private helper of torch: if it moves, only the notice is lost
        return True


def _load_ops() -> Any:
    """Compile (or reuse the cached build of) the kernels and return their op namespace."""
    from torch.utils.cpp_extension import load_inline

    source = resources.files(__package__).joinpath(SOURCE).read_text()
    name = extension_name()
    if not _is_built(name):  # a first build takes about 30 s: say why the run pauses
        print("snl_train: compiling the fused gate kernels (once per machine, about 30 s)",
              file=sys.stderr, flush=True)
    load_inline(name, [source], extra_cflags=_build_flags(),
                extra_ldflags=["-fopenmp"], is_python_module=False, no_implicit_headers=True)
    return torch.ops.snl_fused


def _ops() -> Any:
    """The loaded ops, or None (after one warning) if they cannot be built on this machine."""
    if "ops" in _LOADED:
        return _LOADED["ops"]
    with _LOCK:
        if "ops" not in _LOADED:
            try:
                _LOADED["ops"] = _load_ops()
            except Exception as exc:  # no compiler, no ninja, a failed build or load: run eagerly
                _LOADED["ops"] = None
                lines = str(exc).strip().splitlines()
                _LOADED["error"] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
                warnings.warn(f"snl_train: the fused gate kernels could not be built or loaded "
                              f"({_LOADED['error']}); the gates use the eager functions instead: "
                              f"results are the same, only slower. Set {ENV_VAR}=0 to skip the "
                              "build.", RuntimeWarning, stacklevel=4)
    return _LOADED["ops"]


def load_error() -> str:
    """Why the fused kernels could not be built or loaded ("" if they were, or were not tried)."""
    return _LOADED.get("error", "")


def fused_available() -> bool:
    """Whether the fused kernels are enabled and built (builds them on first call)."""
    return fused_enabled() and _ops() is not None


def _c_fits(z: torch.Tensor, c: torch.Tensor) -> bool:
    if c.shape == z.shape[1:]:
        return True
    return c.dim() == z.dim() - 1 and c.shape[0] == z.shape[1] and all(s == 1 for s in c.shape[1:])


def fused_applies(z: Any, c: Any) -> bool:
    """Whether a gate on ``z`` with slope ``c`` can take the fused path (else: the eager one).

    It needs plain contiguous CPU tensors of one dtype, float32 or float64 (so not the bf16 /
    fp16 of autocast), a pixel- or channel-shaped ``c``, and eager execution (not compiling,
    tracing or exporting); and the kernels must be enabled and built.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if type(z) is not torch.Tensor or not isinstance(c, torch.Tensor) or not fused_enabled():
        return False
    if z.device.type != "cpu" or z.dtype not in _DTYPES or c.dtype != z.dtype or c.device.type != "cpu":
        return False
    if z.dim() < 2 or z.numel() == 0 or not z.is_contiguous() or not c.is_contiguous() or not _c_fits(z, c):
        return False
    return _ops() is not None


def _kind(activation: Any) -> tuple[int, float, float, float]:
    return _KINDS[activation.family], float(activation.low), float(activation.high), float(activation.slope)


_RELU = (0, 0.0, 0.0, 0.0)


def _mode(z: torch.Tensor, c: torch.Tensor, inplace: bool) -> str:
    """``"out"``, ``"inplace"`` or ``"overwrite"`` (in place with no backward pass to save for).

    Decided before ``Function.apply``: inside ``forward`` grad mode is always off.
    """
    if not inplace:
        return "out"
    return "inplace" if torch.is_grad_enabled() and (z.requires_grad or c.requires_grad) else "overwrite"


def _forward(ctx, z: torch.Tensor, c: torch.Tensor, kind: tuple, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the forward kernel; returns (output, input as the backward pass needs it)."""
    if mode == "out":
        out = torch.empty_like(z)
        _ops().gate_forward(z, c, out, None, *kind)
        return out, z
    ctx.mark_dirty(z)
    if mode == "overwrite":
        _ops().gate_forward(z, c, z, None, *kind)
        return z, z
    saved = torch.empty_like(z)
    _ops().gate_forward(z, c, z, saved, *kind)  # one pass: copy z aside, overwrite it
    return z, saved


def _backward(ctx, grad: torch.Tensor, z: torch.Tensor, c: torch.Tensor, kind: tuple):
    grad = grad.contiguous()
    need_z, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_z = torch.empty_like(z) if need_z else None
    grad_c = torch.empty_like(c) if need_c else None
    if need_z or need_c:
        _ops().gate_backward(grad, z, c, grad_z, grad_c, *kind)
    return grad_z, grad_c


class _FusedLinearize(torch.autograd.Function):
    """``z - c * min(z, 0)`` (the fused form of ``gates._LinearizeFunction``), saving ``z``, ``c``."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, c: torch.Tensor, mode: str) -> torch.Tensor:
        out, saved = _forward(ctx, z, c, _RELU, mode)
        ctx.save_for_backward(saved, c)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, c = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the eager backward, with its behaviour
            from .gates import _LinearizeFunction
            return (*_LinearizeFunction.backward(ctx, grad), None)
        return (*_backward(ctx, grad, z, c, _RELU), None)


class _FusedFrozenLinearize(torch.autograd.Function):
    """The fused ``gates._FrozenLinearizeFunction``: ``c`` needs no gradient and ``c <= 1``, so
    the backward pass reads only the output (``out > 0`` exactly where ``z > 0``)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, c: torch.Tensor, inplace: bool) -> torch.Tensor:
        if inplace:
            _ops().gate_forward(z, c, z, None, *_RELU)
            out = z
            ctx.mark_dirty(z)
        else:
            out = torch.empty_like(z)
            _ops().gate_forward(z, c, out, None, *_RELU)
        ctx.save_for_backward(out, c)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out, c = ctx.saved_tensors
        if torch.is_grad_enabled():
            from .gates import _FrozenLinearizeFunction
            return (*_FrozenLinearizeFunction.backward(ctx, grad), None)
        grad_z = torch.empty_like(out)
        _ops().gate_backward(grad.contiguous(), out, c, grad_z, None, *_RELU)
        return grad_z, None, None


class _FusedLerp(torch.autograd.Function):
    """``lerp(z, act(z), c)`` for ReLU6, Hardtanh and LeakyReLU (the fused ``gates._LerpFunction``)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, c: torch.Tensor, activation: Any, mode: str) -> torch.Tensor:
        ctx.activation = activation
        out, saved = _forward(ctx, z, c, _kind(activation), mode)
        ctx.save_for_backward(saved, c)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, c = ctx.saved_tensors
        if torch.is_grad_enabled():
            from .gates import _LerpFunction
            return (*_LerpFunction.backward(ctx, grad)[:2], None, None)
        return (*_backward(ctx, grad, z, c, _kind(ctx.activation)), None, None)


def linearize(z: torch.Tensor, c: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Fused ``z - c * min(z, 0)``; with ``inplace`` the result is written into ``z``.

    Only for inputs where :func:`fused_applies` holds.
    """
    return _FusedLinearize.apply(z, c, _mode(z, c, inplace))


def frozen_linearize(z: torch.Tensor, c: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Fused ``z - c * min(z, 0)`` for a slope with no gradient and ``c <= 1``."""
    return _FusedFrozenLinearize.apply(z, c, inplace)


def lerp_gate(z: torch.Tensor, c: torch.Tensor, activation: Any, inplace: bool = False) -> torch.Tensor:
    """Fused ``lerp(z, act(z), c)`` for a ReLU6, Hardtanh or LeakyReLU ``activation``."""
    return _FusedLerp.apply(z, c, activation, _mode(z, c, inplace))
