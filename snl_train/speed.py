"""Fast training options for the SNL trainer: mixed precision, ``torch.compile`` and the
channels-last memory layout, with the checks that refuse what a device cannot do.

* :class:`Precision` -- ``autocast`` for the forward pass and the loss, and for fp16 a
  ``GradScaler`` (its state goes into the checkpoint, so a resumed run scales as the
  uninterrupted one). Parameters stay fp32, gate slopes ``c`` included: autocast only
  lowers the precision of matmuls/convolutions and of the activations they produce, the
  optimizer updates fp32 weights, and the L1 term ``lambda * sum |c|`` is summed over the
  fp32 slopes.
* :class:`CompiledForBatch` -- ``torch.compile`` of the training module for the batch size of
  its first call; the epoch's last, smaller batch runs eagerly (the same parameters), so a
  stage compiles one graph instead of a second static one or a dynamic-shape one.
* :func:`place_model` / :func:`place_input` -- channels-last weights and inputs (NHWC) for
  convolutional models; tensors that are not 4-D are left alone.
* :func:`check_options` -- ``ValueError`` (one line) for fp16 on a CPU, bf16 on a GPU without
  it, or ``--compile`` without the compiler its backend needs.

Example::

    >>> precision = Precision("bf16", torch.device("cpu"))
    >>> with precision.autocast():
    ...     y = torch.nn.Linear(4, 2)(torch.randn(3, 4))
    >>> y.dtype
    torch.bfloat16
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil

import torch
from torch import nn

AMP_MODES = ("off", "bf16", "fp16")
_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast and (for fp16) loss scaling for one training run.

    Args:
        mode: ``"off"`` (fp32), ``"bf16"`` or ``"fp16"``.
        device: the training device (autocast and the scaler are per device type).

    Raises:
        ValueError: unknown mode.

    Example:
        >>> Precision("off", torch.device("cpu")).state_dict() is None
        True
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
        self.mode, self.device_type, self.dtype = mode, device.type, _DTYPES[mode]
        # fp16's narrow exponent range underflows small gradients; bf16 has fp32's range.
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None

    def autocast(self):
        """Context manager: autocast to the run's dtype (a no-op for ``"off"``)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, of the scaled loss under fp16."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; under fp16 unscale first, skip a step with inf/NaN gradients."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict | None:
        """The scaler's state (plain floats and ints, weights-only loadable), or None."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict`; ignored without a scaler or without a saved state."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class CompiledForBatch(nn.Module):
    """``module`` compiled for the batch size of its first call; other sizes run eagerly.

    The compiled and the eager path share the module's parameters and buffers.

    Args:
        module: the (gated, possibly DDP-wrapped) training module.
        backend: ``torch.compile`` backend (``"inductor"``; ``"eager"`` traces only).

    Example:
        >>> net = CompiledForBatch(nn.Linear(3, 2), backend="eager")
        >>> net(torch.zeros(4, 3)).shape, net.batch_size
        (torch.Size([4, 2]), 4)
    """

    def __init__(self, module: nn.Module, backend: str = "inductor") -> None:
        super().__init__()
        self.module = module
        # Kept out of the submodules: the compiled wrapper would list every parameter twice.
        object.__setattr__(self, "compiled", torch.compile(module, backend=backend, dynamic=False))
        self.batch_size = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_size is None:
            self.batch_size = x.shape[0]
        return (self.compiled if x.shape[0] == self.batch_size else self.module)(x)


def place_model(model: nn.Module, channels_last: bool) -> nn.Module:
    """``model`` with 4-D weights in channels-last layout (when asked); returns ``model``."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


def place_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D batch in channels-last layout (when asked); anything else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def check_options(amp: str, compile: bool, device: torch.device) -> None:
    """Refuse a precision or compilation the device cannot do.

    Raises:
        ValueError: one line saying what is missing and what to use instead.

    Example:
        >>> check_options("fp16", False, torch.device("cpu"))
        Traceback (most recent call last):
        ...
        ValueError: --amp fp16 needs a CUDA device (its gradient scaler and fp16 kernels are for GPUs); on the CPU use --amp bf16
    """
    if amp not in AMP_MODES:
        raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device (its gradient scaler and fp16 kernels "
                         "are for GPUs); on the CPU use --amp bf16")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("--amp bf16: this GPU has no bf16 support; use --amp fp16")
    if compile:
        problem = compile_problem(device)
        if problem:
            raise ValueError(f"--compile: {problem}")


#: CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic; without them bf16 is emulated.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); None where it cannot be
    told (no ``/proc/cpuinfo``: not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = {word for line in f if line.startswith("flags") for word in line.split()}
    except OSError:
        return None
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def precision_warning(amp: str, device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """A warning for a precision that runs but is slow on ``device``, or None.

    Example:
        >>> precision_warning("off", torch.device("cpu")) is None
        True
    """
    if amp == "bf16" and device.type == "cpu" and cpu_has_native_bf16(cpuinfo) is False:
        return ("warning: --amp bf16: this CPU has no native bf16 (no avx512_bf16 or amx_bf16 "
                "flag), so bf16 is emulated and many times slower than fp32 (12-57x measured "
                "on an AVX2 CPU); drop --amp here")
    return None


def compile_problem(device: torch.device) -> str | None:
    """Why ``torch.compile``'s inductor backend cannot run on ``device`` here, or None."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version or platform; drop --compile"
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "inductor needs Triton on CUDA (pip install triton); drop --compile"
        candidates = [os.environ.get("CC"), "cc", "gcc", "clang"]
        what = "a C compiler (for Triton's launcher)"
    else:
        import torch._inductor.config as inductor_config

        cxx = inductor_config.cpp.cxx
        candidates = list(cxx) if isinstance(cxx, (list, tuple)) else [cxx]
        what = "a C++ compiler (inductor's CPU kernels)"
    names = [c for c in candidates if c]
    if not any(shutil.which(name) for name in names):
        return (f"needs {what}; none of {', '.join(names)} was found (install one or set "
                f"{'CC' if device.type == 'cuda' else 'CXX'}), or drop --compile")
    return None
