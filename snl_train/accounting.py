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

import torch  # noqa: F401  (the doctests use it)
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


# ----------------------------------------------------------------------------- measured MPC cost
# The cost model of measured private inference (snl_train.private): latency = local compute
# + rounds x RTT + bytes / bandwidth, with rounds and bytes from a measured profile. All figures
# are per party and per batch, and are the online phase only (CrypTen's default provider is a
# trusted dealer, so correlated randomness costs no communication).

import json  # noqa: E402
from dataclasses import field  # noqa: E402
from pathlib import Path  # noqa: E402

__all__ += ["PrivateLayer", "NetworkPreset", "NETWORK_PRESETS", "ModeCosts", "CostProfile",
            "load_cost_profile", "network_preset", "relu_layer_cost", "private_cost",
            "DEFAULT_PROFILE", "PROFILE_DIR", "relu_prices", "latency_cost_model"]

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
DEFAULT_PROFILE = "crypten-2pc"


@dataclass(frozen=True)
class PrivateLayer:
    """One costly layer of a network as the MPC cost model sees it (counts per input sample).

    ``kind`` is ``"relu"`` (a gate or ReLU site: ``total`` ReLUs, ``kept`` of them non-linear),
    ``"linear"`` (Linear, Conv2d or an unfolded BatchNorm: ``inputs`` input elements,
    ``weights`` weight elements, ``macs`` multiply-accumulates) or ``"maxpool"`` (not modelled).
    """

    name: str
    kind: str
    total: int = 0
    kept: int = 0
    inputs: int = 0
    weights: int = 0
    macs: int = 0


@dataclass(frozen=True)
class NetworkPreset:
    """A network between the two parties: one round costs ``rtt`` seconds, one byte
    ``1 / bandwidth`` seconds (bandwidth in bytes per second, CrypTen's per-party byte count)."""

    name: str
    rtt: float
    bandwidth: float
    description: str


# Stated assumptions, not measurements (the localhost preset comes from the profile).
NETWORK_PRESETS = {
    "lan": NetworkPreset("lan", 0.3e-3, 1e9 / 8, "LAN: 0.3 ms round trip, 1 Gbit/s"),
    "wan": NetworkPreset("wan", 80e-3, 100e6 / 8, "WAN: 80 ms round trip, 100 Mbit/s"),
}


@dataclass(frozen=True)
class ModeCosts:
    """Costs of one weights mode (``secret``: shared by the server; ``public``: known to both).

    Bytes and rounds are exact engine constants; seconds are local compute fitted on localhost
    (``benchmarks/private.py``) after subtracting the loopback's rounds x RTT + bytes / bandwidth.
    """

    linear_bytes_per_input: int  # per input element of a linear layer, per sample
    linear_bytes_per_weight: int  # per weight element of a linear layer, per batch
    linear_rounds: int  # per linear layer
    seconds_per_inference: float
    seconds_per_relu_layer: float  # a ReLU layer keeping >= 1 ReLU
    seconds_per_relu: float  # per kept ReLU per sample
    seconds_per_linear_layer: float
    seconds_per_mac: float  # per multiply-accumulate per sample


@dataclass(frozen=True)
class CostProfile:
    """A measured cost profile of an MPC engine (see :func:`load_cost_profile`)."""

    name: str
    engine: str
    bytes_per_relu: int  # per kept ReLU per sample
    rounds_per_relu_layer: int  # a layer keeping >= 1 ReLU; 0 kept costs no round
    output_bytes_per_element: int  # revealing the logits to the client
    output_rounds: int
    loopback: NetworkPreset  # the network the seconds were measured on
    modes: dict = field(default_factory=dict)  # "secret" / "public" -> ModeCosts
    info: dict = field(default_factory=dict)  # how and where it was measured


def load_cost_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> CostProfile:
    """Load a cost profile: a name in ``snl_train/profiles/`` or the path of a JSON file.

    Raises:
        ValueError: unknown name, unreadable file, or a document that is not a cost profile.

    Example:
        >>> load_cost_profile().bytes_per_relu
        464
    """
    path = Path(name_or_path)
    if not path.suffix == ".json" and not path.is_file():
        path = PROFILE_DIR / f"{name_or_path}.json"
    try:
        doc = json.loads(path.read_text())
        loop = doc["loopback"]
        modes = {mode: ModeCosts(**costs) for mode, costs in doc["modes"].items()}
        return CostProfile(doc["name"], doc["engine"], int(doc["bytes_per_relu"]),
                           int(doc["rounds_per_relu_layer"]), int(doc["output_bytes_per_element"]),
                           int(doc["output_rounds"]),
                           NetworkPreset("localhost", float(loop["rtt"]), float(loop["bandwidth"]),
                                         loop.get("description", "this machine's loopback")),
                           modes, doc.get("info", {}))
    except OSError as error:
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
        raise ValueError(f"no cost profile {str(name_or_path)!r} ({error.strerror}); "
                         f"known names: {', '.join(known)}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a cost profile ({type(error).__name__}: {error})") from None


def network_preset(network: str | NetworkPreset, profile: CostProfile) -> NetworkPreset:
    """``"localhost"`` (the profile's measured loopback), ``"lan"``, ``"wan"`` or a preset itself."""
    if isinstance(network, NetworkPreset):
        return network
    if network == "localhost":
        return profile.loopback
    if network not in NETWORK_PRESETS:
        raise ValueError(f"unknown network {network!r}; expected localhost, "
                         f"{', '.join(NETWORK_PRESETS)} or a NetworkPreset")
    return NETWORK_PRESETS[network]


def _mode_costs(profile: CostProfile, weights: str) -> ModeCosts:
    if weights not in profile.modes:
        raise ValueError(f"weights must be one of {sorted(profile.modes)}, got {weights!r}")
    return profile.modes[weights]


def relu_layer_cost(kept: int, profile: CostProfile, network: str | NetworkPreset = "localhost",
                    batch_size: int = 1, weights: str = "secret") -> dict[str, float]:
    """Bytes, rounds and seconds of one ReLU layer keeping ``kept`` ReLUs per sample.

    A layer with nothing kept costs nothing; one kept ReLU already costs the layer's rounds,
    which is where the ReLU count is a poor proxy for latency at small batches.

    Example:
        >>> cost = relu_layer_cost(20, load_cost_profile(), "wan")
        >>> cost["bytes"], cost["rounds"]
        (9280, 9)
    """
    if kept < 0 or batch_size < 1:
        raise ValueError(f"need kept >= 0 and batch_size >= 1, got {kept} and {batch_size}")
    if kept == 0:
        return {"bytes": 0, "rounds": 0, "compute_seconds": 0.0, "seconds": 0.0}
    mode = _mode_costs(profile, weights)
    per_relu, per_layer = relu_prices(profile, network, batch_size, weights)
    return {"bytes": profile.bytes_per_relu * kept * batch_size,
            "rounds": profile.rounds_per_relu_layer,
            "compute_seconds": mode.seconds_per_relu_layer + mode.seconds_per_relu * kept * batch_size,
            "seconds": per_layer + per_relu * kept}


def relu_prices(profile: CostProfile, network: str | NetworkPreset = "localhost",
                batch_size: int = 1, weights: str = "secret") -> tuple[float, float]:
    """(beta, rho): seconds per kept ReLU (per sample, for the whole batch) and per ReLU layer
    that keeps any, each = local compute + rounds x RTT + bytes / bandwidth.

    The one place where the profile's ReLU constants become prices: :func:`relu_layer_cost`
    (so :func:`private_cost`) and :func:`latency_cost_model` both use it.

    Example:
        >>> beta, rho = relu_prices(load_cost_profile(), "wan")
        >>> round(rho, 3), round(rho / beta)
        (0.763, 17069)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net, mode = network_preset(network, profile), _mode_costs(profile, weights)
    beta = (mode.seconds_per_relu + profile.bytes_per_relu / net.bandwidth) * batch_size
    rho = mode.seconds_per_relu_layer + profile.rounds_per_relu_layer * net.rtt
    return beta, rho


def _linear_layer_cost(layer: PrivateLayer, mode: ModeCosts, net: NetworkPreset, batch: int) -> dict:
    nbytes = mode.linear_bytes_per_input * layer.inputs * batch + mode.linear_bytes_per_weight * layer.weights
    compute = mode.seconds_per_linear_layer + mode.seconds_per_mac * layer.macs * batch
    return {"bytes": nbytes, "rounds": mode.linear_rounds, "compute_seconds": compute,
            "seconds": compute + mode.linear_rounds * net.rtt + nbytes / net.bandwidth}


def private_cost(layers, outputs: int, profile: CostProfile | None = None,
                 network: str | NetworkPreset = "localhost", batch_size: int = 1,
                 weights: str = "secret") -> dict:
    """Predicted online cost of one private inference of a batch (per party).

    ``latency = local compute + rounds x RTT + bytes / bandwidth``.

    Args:
        layers: :class:`PrivateLayer` s (e.g. ``snl_train.private.convert(model, x).layers``).
        outputs: output elements per sample (the logits revealed to the client).
        profile: a :class:`CostProfile` (default: :func:`load_cost_profile`).
        network: ``"localhost"``, ``"lan"``, ``"wan"`` or a :class:`NetworkPreset`.
        batch_size: samples per inference. weights: ``"secret"`` or ``"public"``.

    Returns:
        ``{"bytes", "rounds", "relu_bytes", "linear_bytes", "output_bytes", "compute_seconds",
        "seconds", "network", "weights", "batch_size"}``.

    Raises:
        ValueError: a layer kind the profile does not model (e.g. ``"maxpool"``), an unknown
            network or weights mode, or ``batch_size < 1``.

    Example:
        >>> layers = [PrivateLayer("fc1", "linear", inputs=64, weights=64 * 256, macs=64 * 256),
        ...           PrivateLayer("relu1", "relu", total=256, kept=10)]
        >>> private_cost(layers, 10, weights="public")["bytes"]
        4720
    """
    profile = profile or load_cost_profile()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net, mode = network_preset(network, profile), _mode_costs(profile, weights)
    parts = {"relu": [], "linear": []}
    for layer in layers:
        if layer.kind == "relu":
            parts["relu"].append(relu_layer_cost(layer.kept, profile, net, batch_size, weights))
        elif layer.kind == "linear":
            parts["linear"].append(_linear_layer_cost(layer, mode, net, batch_size))
        else:
            raise ValueError(f"the cost profile does not model {layer.kind!r} layers ({layer.name})")
    out_bytes = profile.output_bytes_per_element * outputs * batch_size
    out_seconds = profile.output_rounds * net.rtt + out_bytes / net.bandwidth
    every = parts["relu"] + parts["linear"]
    compute = mode.seconds_per_inference + sum(p["compute_seconds"] for p in every)
    return {"bytes": sum(p["bytes"] for p in every) + out_bytes,
            "rounds": sum(p["rounds"] for p in every) + profile.output_rounds,
            "relu_bytes": sum(p["bytes"] for p in parts["relu"]),
            "linear_bytes": sum(p["bytes"] for p in parts["linear"]), "output_bytes": out_bytes,
            "compute_seconds": compute,
            "seconds": mode.seconds_per_inference + sum(p["seconds"] for p in every) + out_seconds,
            "network": net.name, "weights": weights, "batch_size": batch_size}


def latency_cost_model(layers, outputs: int, profile: CostProfile | None = None,
                       network: str | NetworkPreset = "localhost", batch_size: int = 1,
                       weights: str = "secret"):
    """The profile priced for one network as :mod:`capacity.latency`'s ``CostModel``.

    per_relu and per_layer are :func:`relu_prices`; linear is what :func:`private_cost` charges
    for everything but the ReLU layers (linear layers, output, per inference). Each number is
    the decimal its float prints as, read exactly, so ``capacity.latency.latency(kept, cost)``
    equals ``private_cost(layers keeping kept)["seconds"]`` up to float rounding, and
    ``python -m capacity.optimize --cost`` reads the same numbers.

    Args:
        layers, outputs: as :func:`private_cost` (which ReLUs the layers keep does not matter).
        profile, network, batch_size, weights: as :func:`private_cost`.

    Example:
        >>> layers = [PrivateLayer("fc1", "linear", inputs=64, weights=64 * 256, macs=64 * 256),
        ...           PrivateLayer("relu1", "relu", total=256, kept=10)]
        >>> cost = latency_cost_model(layers, 10, network="wan")
        >>> round(float(cost.per_layer), 4), round(float(cost.linear), 4)
        (0.763, 0.195)
    """
    from dataclasses import replace

    from capacity.latency import cost_model

    profile = profile or load_cost_profile()
    per_relu, per_layer = relu_prices(profile, network, batch_size, weights)
    empty = [replace(layer, kept=0) if layer.kind == "relu" else layer for layer in layers]
    linear = private_cost(empty, outputs, profile, network, batch_size, weights)["seconds"]
    return cost_model(repr(per_relu), repr(per_layer), repr(linear))
