"""ReLU counting and the DELPHI online-latency estimate (Section 4 of the paper).

Counts are per input sample. A gated model counts, per site, the ReLUs whose gate slope is
above ``epsilon`` (a channel-wise slope covers all ``H*W`` ReLUs of its channel); an ungated
model counts every ReLU call site found the same way :func:`snl_train.gates.add_gates` finds
them (fx tracing; ``nn.ReLU`` forward hooks if the model cannot be traced).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from snl_train.gates import (ReLUGate, eval_forward, is_gated, materialize_gates, site_modules,
                             trace_relu_sites)

__all__ = ["SiteCount", "relu_counts", "count_relus", "total_kept", "online_latency",
           "SECONDS_PER_1000_RELUS"]

SECONDS_PER_1000_RELUS = 0.021  # DELPHI, measured by the paper (Section 4)


@dataclass(frozen=True)
class SiteCount:
    """ReLUs at one call site, per input sample: ``total`` evaluated, ``kept`` non-linear."""

    name: str
    total: int
    kept: int


def _first_sample(example_input: Any) -> Any:
    if isinstance(example_input, tuple):
        return tuple(_first_sample(x) for x in example_input)
    return example_input[:1] if isinstance(example_input, torch.Tensor) else example_input


class _ShapeRecorder(fx.Interpreter):
    """Runs a traced graph and records the output shape of chosen nodes."""

    def __init__(self, gm: fx.GraphModule, nodes: dict[fx.Node, str]) -> None:
        super().__init__(gm)
        self.nodes = nodes
        self.shapes: dict[str, tuple[int, ...]] = {}

    def run_node(self, node: fx.Node) -> Any:
        result = super().run_node(node)
        if node in self.nodes:
            self.shapes[self.nodes[node]] = tuple(result.shape)
        return result


def _ungated_counts_fx(model: nn.Module, gm: fx.GraphModule, sites, example_input) -> list[SiteCount]:
    recorder = _ShapeRecorder(gm, {site.node: site.name for site in sites})
    runner = _RunAsForward(model, recorder)
    eval_forward(runner, _first_sample(example_input))
    return [SiteCount(site.name, math.prod(recorder.shapes[site.name][1:]),
                      math.prod(recorder.shapes[site.name][1:])) for site in sites
            if site.name in recorder.shapes]


class _RunAsForward(nn.Module):
    """Lets :func:`eval_forward` drive an fx Interpreter over ``model``'s modules."""

    def __init__(self, model: nn.Module, recorder: _ShapeRecorder) -> None:
        super().__init__()
        self.model = model
        self.recorder = recorder

    def forward(self, *args: Any) -> Any:
        return self.recorder.run(*args)


def _ungated_counts_hooks(model: nn.Module, example_input: Any) -> list[SiteCount]:
    counts: list[SiteCount] = []
    calls: dict[str, int] = {}

    def hook(name):
        def record(module, inputs, output):
            k = calls.get(name, 0)
            calls[name] = k + 1
            per_sample = math.prod(output.shape[1:])
            counts.append(SiteCount(name if k == 0 else f"{name}_{k}", per_sample, per_sample))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
               if type(m) is nn.ReLU]
    try:
        eval_forward(model, _first_sample(example_input))
    finally:
        for handle in handles:
            handle.remove()
    return counts


def _ungated_counts(model: nn.Module, example_input: Any) -> list[SiteCount]:
    try:
        gm, sites = trace_relu_sites(model)
    except Exception as error:  # fx raises many kinds of errors for untraceable code
        warnings.warn(f"relu_counts: torch.fx could not trace {type(model).__name__} "
                      f"({type(error).__name__}: {error}); counting nn.ReLU module calls only, "
                      "functional ReLUs are not counted", stacklevel=3)
        return _ungated_counts_hooks(model, example_input)
    return _ungated_counts_fx(model, gm, sites, example_input)


def _gated_counts(model: nn.Module, example_input: Any, epsilon: float) -> list[SiteCount]:
    materialize_gates(model, example_input)
    sites = site_modules(model)
    shapes: dict[int, tuple[int, ...]] = {}
    handles = [module.register_forward_hook(
        lambda module, inputs, output: shapes.__setitem__(id(module), tuple(inputs[0].shape[1:])))
        for _, module in sites]
    try:
        eval_forward(model, _first_sample(example_input))
    finally:
        for handle in handles:
            handle.remove()
    counts = []
    for name, gate in sites:
        if not isinstance(gate, ReLUGate):  # an excluded site: a plain ReLU, all kept
            total = math.prod(shapes[id(gate)])
            counts.append(SiteCount(name, total, total))
            continue
        c = gate.c.detach()
        per_slope = math.prod(shapes[id(gate)]) // c.numel()  # H*W for channel-wise, else 1
        counts.append(SiteCount(name, c.numel() * per_slope, int((c > epsilon).sum()) * per_slope))
    return counts


def relu_counts(model: nn.Module, example_input: Any, epsilon: float = 0.01) -> list[SiteCount]:
    """Per-site ReLU counts for one input sample, in forward order.

    Args:
        model: a gated model (``kept`` = ReLUs whose slope ``c > epsilon``; unshaped gates are
            shaped first; sites excluded from gating keep all their ReLUs) or an ungated one
            (``kept == total``).
        example_input: a batch (only its first sample is run) or a tuple of forward arguments.
        epsilon: threshold on the gate slopes (the paper uses 0.01).

    Returns:
        A list of :class:`SiteCount`.

    Raises:
        RuntimeError: a gate is never reached by the forward pass.

    Example:
        >>> from snl_train.models import MLP
        >>> relu_counts(MLP(4, [8, 3], 2), torch.zeros(1, 4))
        [SiteCount(name='features.2', total=8, kept=8), SiteCount(name='features.4', total=3, kept=3)]
    """
    if is_gated(model):
        return _gated_counts(model, example_input, epsilon)
    return _ungated_counts(model, example_input)


def count_relus(model: nn.Module, example_input: Any) -> int:
    """Total ReLUs evaluated per input sample (every site, every gate ignored).

    Example:
        >>> from snl_train.models import MLP
        >>> count_relus(MLP(4, [8, 3], 2), torch.zeros(1, 4))
        11
    """
    return sum(site.total for site in relu_counts(model, example_input))


def total_kept(model: nn.Module, example_input: Any, epsilon: float = 0.01) -> int:
    """ReLUs kept per input sample: gate slopes above ``epsilon`` (all ReLUs if ungated)."""
    return sum(site.kept for site in relu_counts(model, example_input, epsilon))


def _time_forward(model: nn.Module, example_input: Any, repeats: int, warmup: int) -> float:
    """Median seconds of one eval-mode, no-grad forward on ``example_input``."""
    for _ in range(warmup):
        eval_forward(model, example_input)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        eval_forward(model, example_input)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def online_latency(model: nn.Module, example_input: Any, relu_count: int | None = None,
                   seconds_per_1000_relus: float = SECONDS_PER_1000_RELUS, repeats: int = 5,
                   warmup: int = 1, epsilon: float = 0.01) -> dict[str, float]:
    """DELPHI online private-inference latency estimate per input sample (Section 4).

    Ciphertext linear layers cost about one plaintext forward; each ReLU costs
    ``seconds_per_1000_relus / 1000`` in garbled circuits.

    Args:
        model: the network (gated or not).
        example_input: a batch of shape (N, ...); plaintext time is divided by N.
        relu_count: ReLUs per sample; default :func:`total_kept` (gated) / all ReLUs (ungated).
        seconds_per_1000_relus: the GC cost constant (the paper measured 0.021 s).
        repeats: timed forwards (median taken). warmup: untimed forwards first.
        epsilon: gate threshold used when ``relu_count`` is None.

    Returns:
        ``{"plaintext_seconds", "relu_count", "relu_seconds", "total_seconds",
        "seconds_per_1000_relus", "batch_size"}`` (times per sample).

    Raises:
        ValueError: ``repeats < 1`` or a negative ReLU count / constant.

    Example:
        >>> from snl_train.models import MLP
        >>> est = online_latency(MLP(4, [8], 2), torch.zeros(2, 4), relu_count=1000, repeats=1)
        >>> round(est["relu_seconds"], 3)
        0.021
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if seconds_per_1000_relus < 0:
        raise ValueError(f"seconds_per_1000_relus must be >= 0, got {seconds_per_1000_relus}")
    if relu_count is None:
        relu_count = total_kept(model, example_input, epsilon)
    if relu_count < 0:
        raise ValueError(f"relu_count must be >= 0, got {relu_count}")
    first = example_input[0] if isinstance(example_input, tuple) else example_input
    batch = int(first.shape[0])
    plaintext = _time_forward(model, example_input, repeats, warmup) / batch
    relu_seconds = relu_count * seconds_per_1000_relus / 1000
    return {"plaintext_seconds": plaintext, "relu_count": int(relu_count),
            "relu_seconds": relu_seconds, "total_seconds": plaintext + relu_seconds,
            "seconds_per_1000_relus": seconds_per_1000_relus, "batch_size": batch}
