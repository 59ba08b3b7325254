"""ReLU counting and the DELPHI online-latency estimate (Section 4 of the paper).

Counts are per input sample and cover the whole ReLU family (ReLU, LeakyReLU, ReLU6,
Hardtanh; :class:`snl_train.sites.Activation`). A gated model counts, per site, the
activations whose gate slope is above ``epsilon`` (a channel-wise slope covers all ``H*W``
activations of its channel); an ungated model counts every call that runs in eval mode, found
by running it (:func:`snl_train.sites.discover`), under the names
:func:`snl_train.gates.add_gates` gives the sites. Sites reached only in training mode never
run at inference: they are not counted, and :func:`training_only_counts` lists them.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from snl_train.gates import (ReLUGate, eval_forward, is_gated, materialize_gates, site_modules,
                             training_only_sites)
from snl_train.sites import Activation, discover, first_sample, module_activation

__all__ = ["SiteCount", "relu_counts", "count_relus", "total_kept", "training_only_counts",
           "comparison_costs", "online_latency", "SECONDS_PER_1000_RELUS"]

SECONDS_PER_1000_RELUS = 0.021  # DELPHI, measured by the paper (Section 4)


@dataclass(frozen=True)
class SiteCount:
    """Activations at one call site, per input sample: ``total`` evaluated, ``kept`` non-linear.

    ``family`` is the activation (``"relu"``, ``"leaky_relu"``, ``"relu6"``, ``"hardtanh"``).
    """

    name: str
    total: int
    kept: int
    family: str = "relu"


def _ungated_counts(model: nn.Module, example_input: Any) -> list[SiteCount]:
    found = discover(model, example_input, training=False)
    return [SiteCount(r.name, r.total, r.total, r.activation.family) for r in found.inference]


def _gated_counts(model: nn.Module, example_input: Any, epsilon: float) -> list[SiteCount]:
    materialize_gates(model, example_input)
    sites = site_modules(model)
    shapes: dict[int, tuple[int, ...]] = {}
    handles = [module.register_forward_hook(
        lambda module, inputs, output: shapes.__setitem__(id(module), tuple(inputs[0].shape[1:])))
        for _, module in sites]
    try:
        eval_forward(model, first_sample(example_input))
    finally:
        for handle in handles:
            handle.remove()
    counts = []
    for name, gate in sites:
        total = math.prod(shapes[id(gate)])
        family = (gate.activation if isinstance(gate, ReLUGate) else module_activation(gate)).family
        if not isinstance(gate, ReLUGate):  # an excluded site: a plain activation, all kept
            counts.append(SiteCount(name, total, total, family))
            continue
        c = gate.c.detach()
        per_slope = total // c.numel()  # H*W for channel-wise, else 1
        counts.append(SiteCount(name, total, int((c > epsilon).sum()) * per_slope, family))
    return counts


def relu_counts(model: nn.Module, example_input: Any, epsilon: float = 0.01) -> list[SiteCount]:
    """Per-site activation counts for one input sample, in forward order (inference sites only).

    Args:
        model: a gated model (``kept`` = activations whose slope ``c > epsilon``; unshaped gates
            are shaped first; sites excluded from gating keep all theirs) or an ungated one
            (``kept == total``).
        example_input: a batch (only its first sample is run) or a tuple of forward arguments.
        epsilon: threshold on the gate slopes (the paper uses 0.01).

    Returns:
        A list of :class:`SiteCount`.

    Raises:
        RuntimeError: a gate is never reached by the forward pass.
        GatingError: an activation runs where it cannot be counted (an ungated model whose
            activation kernels run outside any Python-level call).

    Example:
        >>> from snl_train.models import MLP
        >>> relu_counts(MLP(4, [8, 3], 2), torch.zeros(1, 4))
        [SiteCount(name='features.2', total=8, kept=8, family='relu'), SiteCount(name='features.4', total=3, kept=3, family='relu')]
    """
    if is_gated(model):
        return _gated_counts(model, example_input, epsilon)
    return _ungated_counts(model, example_input)


def count_relus(model: nn.Module, example_input: Any) -> int:
    """Total ReLU-family activations evaluated per input sample at inference (gates ignored).

    Example:
        >>> from snl_train.models import MLP
        >>> count_relus(MLP(4, [8, 3], 2), torch.zeros(1, 4))
        11
    """
    return sum(site.total for site in relu_counts(model, example_input))


def total_kept(model: nn.Module, example_input: Any, epsilon: float = 0.01) -> int:
    """Activations kept per input sample: gate slopes above ``epsilon`` (all if ungated)."""
    return sum(site.kept for site in relu_counts(model, example_input, epsilon))


def training_only_counts(model: nn.Module, example_input: Any = None) -> list[SiteCount]:
    """Sites reached only in training mode (auxiliary heads ...), with ``kept = 0``.

    They never run at inference, so no budget counts them. A gated model knows them from
    :func:`snl_train.gates.add_gates`; an ungated one is run in both modes on
    ``example_input`` (its buffers and RNG states are restored).

    Raises:
        ValueError: an ungated model and no ``example_input``.
    """
    if is_gated(model):
        records = training_only_sites(model)
    elif example_input is None:
        raise ValueError("training_only_counts: an ungated model needs an example_input")
    else:
        records = discover(model, example_input).training_only
    return [SiteCount(r.name, r.total, 0, r.activation.family) for r in records]


def comparison_costs(counts: list[SiteCount]) -> dict[str, dict[str, int]]:
    """Per activation family: sites, activations (total, kept) and the secure comparisons the
    kept ones cost under MPC (ReLU, LeakyReLU: 1 each; ReLU6, Hardtanh: 2 each).

    Example:
        >>> comparison_costs([SiteCount("a", 10, 4), SiteCount("b", 6, 3, "relu6")])["relu6"]
        {'sites': 1, 'total': 6, 'kept': 3, 'comparisons_per_element': 2, 'kept_comparisons': 6}
    """
    report: dict[str, dict[str, int]] = {}
    for site in counts:
        per = Activation(site.family).comparisons  # one per breakpoint
        entry = report.setdefault(site.family, {"sites": 0, "total": 0, "kept": 0,
                                                "comparisons_per_element": per,
                                                "kept_comparisons": 0})
        entry["sites"] += 1
        entry["total"] += site.total
        entry["kept"] += site.kept
        entry["kept_comparisons"] += site.kept * per
    return report


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
