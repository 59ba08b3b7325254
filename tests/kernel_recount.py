"""An independent recount of the ReLU-family activations a model keeps, from executed kernels.

It shares no code with ``snl_train.sites`` or ``snl_train.accounting``: it runs one eval-mode
forward on one sample under a ``TorchDispatchMode`` and counts the output elements of every
ReLU-family aten kernel (relu, hardtanh, leaky_relu, in place or not). While a gate module
runs (a module under ``snl_gates`` with a slope ``c``), its own kernels are ignored and the
gate counts instead the elements of its input whose broadcast slope is above ``epsilon``.
So an activation that escaped gating, a gate shared by two call sites (counted at each call)
or an excluded site all show up in the recount, whatever the package believes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

FAMILY_KERNELS = {"relu", "relu_", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_",
                  "relu6", "relu6_"}


class _Kernels(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.in_gate = 0
        self.kept = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # no torch.compile here; avoids importing torch._dynamo

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.in_gate and func.overloadpacket.__name__ in FAMILY_KERNELS:
            self.kept += out.numel() // out.shape[0]
        return out


def _gates(model: nn.Module) -> list[nn.Module]:
    return [m for name, m in model.named_modules()
            if name.startswith("snl_gates.") and isinstance(getattr(m, "c", None), nn.Parameter)]


def recount_kept(model: nn.Module, x: torch.Tensor, epsilon: float = 0.01) -> int:
    """Activations kept per sample by ``model`` (gated or not) on ``x[:1]``, from kernels."""
    counter = _Kernels()

    def enter(gate, inputs):
        z = inputs[0][0]  # first sample
        counter.kept += int((gate.c.detach() > epsilon).expand_as(z).sum())
        counter.in_gate += 1

    def leave(gate, inputs, output):
        counter.in_gate -= 1

    handles = []
    for gate in _gates(model):
        handles += [gate.register_forward_pre_hook(enter), gate.register_forward_hook(leave)]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    return counter.kept
