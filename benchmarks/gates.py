"""Training-step time and peak memory of ReLU gates versus plain ReLUs (CPU).

Compares, on the paper's CIFAR ResNet-18 (batch 32, 3x32x32, 100 classes) and on an MLP:

* ``plain``    the ungated network (``nn.ReLU``);
* ``gated``    ``snl_train.gates.add_gates`` (``z - c*min(z, 0)``, a custom autograd function
               that saves only ``z`` and ``c``);
* ``frozen``   the same gates binarized (half of the slopes 0) and frozen, as in finetuning
               (backward from the output alone, no slope gradient);
* ``paper``    the paper's public-code formulation ``relu(z)*c + (1-c)*z`` as a module, with the
               same pixel-wise ``c`` at the same sites;
* ``autograd`` ``z - c*z.clamp(max=0)`` left to plain autograd (for reference).

Time: one training step = zero_grad(set_to_none) + forward + cross-entropy + backward + SGD
(momentum) step. Variants are interleaved round by round (so slow drifts of the machine hit all
of them alike), after warm-up rounds. Both the median and the fastest timed step are reported;
the ratios use the fastest step, because other load on the machine only ever adds time.

Peak memory: one extra step per variant runs under ``torch.profiler`` with
``profile_memory=True``. The profiler logs every CPU allocation and free (the ``[memory]``
events, whose ``Bytes`` field is positive for an allocation and negative for a free). The
running sum of those events is the memory allocated since the step began and still alive, and
its maximum is the step's peak *extra* memory: activations saved for backward, temporaries,
gradients and new optimizer state. Memory alive before the step (weights, momentum buffers,
gate slopes) is reported separately as ``resident``. Process RSS is not used: it mixes in the
interpreter, allocator caching and whatever earlier runs left behind. tracemalloc does not see
torch's allocations.

The model-zoo table (``--table zoo``) times plain against gated training steps on models
written the way model zoos write them: torchvision's and timm's when they are importable,
otherwise the in-repo replicas of their patterns (``snl_train.replicas``: norm-act layers
with ``self.training`` branches, drop-path, an auxiliary head, MobileNetV2's ReLU6, an
untraceable model). It names the gating mechanism each model gets (``fx`` or ``runtime``)
and reports step time and peak step memory of the gated model as ratios to the plain one,
interleaved and fastest of N as above; the target is 1.10x step time for every model. Its
``fused`` column counts the gates that ran the fused kernels of ``snl_train.fused`` in one
step (the header line says whether they are in use; ``SNL_FUSED_GATES=0`` runs the eager
gates instead).

Usage::

    python benchmarks/gates.py                # both tables, full sizes (minutes on 2 cores)
    python benchmarks/gates.py --quick        # small sizes, seconds
    python benchmarks/gates.py --table zoo    # the model-zoo table only
    python benchmarks/gates.py --table zoo --threads 1 --cpu-time   # CPU time, for a loaded machine
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from snl_train.gates import GATE_CONTAINER, add_gates, freeze_gates, gate_sites  # noqa: E402
from snl_train.models import MLP, resnet18  # noqa: E402


class PaperGate(nn.Module):
    """The paper's public-code formulation: ``relu(z) * c + (1 - c) * z``."""

    def __init__(self, c: nn.Parameter) -> None:
        super().__init__()
        self.c = c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(z) * self.c + (1 - self.c) * z


class AutogradGate(PaperGate):
    """``z - c * min(z, 0)`` with plain autograd (saves the clamp output as well)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z - self.c * z.clamp(max=0)


def swap_gates(model: nn.Module, gate_class: type) -> nn.Module:
    """Replace every ReLUGate of a gated model by ``gate_class(c)`` sharing the same slope."""
    for name, gate in gate_sites(model):
        parent, _, leaf = f"{GATE_CONTAINER}.{name}".rpartition(".")
        model.get_submodule(parent).add_module(leaf, gate_class(gate.c))
    return model


def make_variants(base: nn.Module, x: torch.Tensor) -> dict[str, nn.Module]:
    variants = {"plain": copy.deepcopy(base)}
    variants["gated"] = add_gates(copy.deepcopy(base), example_input=x)
    frozen = add_gates(copy.deepcopy(base), example_input=x)
    for _, gate in gate_sites(frozen):
        gate.c.data.copy_((torch.rand_like(gate.c) > 0.5).float())
    variants["frozen"] = freeze_gates(frozen)
    variants["paper"] = swap_gates(add_gates(copy.deepcopy(base), example_input=x), PaperGate)
    variants["autograd"] = swap_gates(add_gates(copy.deepcopy(base), example_input=x), AutogradGate)
    return variants


def train_step(model, optimizer, x, y) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def step_peak_bytes(model, optimizer, x, y) -> int:
    """Peak bytes allocated during one training step and alive at once (see module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train_step(model, optimizer, x, y)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as handle:
            events = json.load(handle)["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"
                     and e["args"].get("Device Type", 0) == 0), key=lambda e: e["ts"])
    # Count a free only if its block was allocated inside this step: the profiler also reports
    # frees of blocks it saw allocated in an earlier profiling session.
    live = peak = 0
    allocated: dict[int, int] = {}
    for event in memory:
        size, address = event["args"]["Bytes"], event["args"]["Addr"]
        if size > 0:
            allocated[address] = size
            live += size
        elif address in allocated:
            live -= allocated.pop(address)
        peak = max(peak, live)
    return peak


def resident_bytes(model, optimizer) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def bench(label: str, base: nn.Module, x: torch.Tensor, classes: int, warmup: int, rounds: int) -> list[dict]:
    torch.manual_seed(0)
    y = torch.randint(0, classes, (x.shape[0],))
    variants = make_variants(base, x)
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in variants.items()}
    times = {k: [] for k in variants}
    for round_index in range(warmup + rounds):
        for key, model in variants.items():
            start = time.perf_counter()
            train_step(model, optimizers[key], x, y)
            if round_index >= warmup:
                times[key].append(time.perf_counter() - start)
    rows = []
    for key, model in variants.items():
        rows.append({"model": label, "variant": key, "step_ms": 1000 * statistics.median(times[key]),
                     "best_ms": 1000 * min(times[key]),
                     "peak_mb": step_peak_bytes(model, optimizers[key], x, y) / 2**20,
                     "resident_mb": resident_bytes(model, optimizers[key]) / 2**20})
    plain = rows[0]
    for row in rows:
        row["time_ratio"] = row["best_ms"] / plain["best_ms"]
        row["peak_ratio"] = row["peak_mb"] / plain["peak_mb"]
        row["total_ratio"] = (row["peak_mb"] + row["resident_mb"]) / (plain["peak_mb"] + plain["resident_mb"])
    return rows


def zoo_cases(quick: bool) -> list[tuple[str, callable, torch.Tensor, int]]:
    """``(label, factory, batch, classes)`` for the model-zoo table: torchvision / timm models
    when importable, else the in-repo replicas (batch 32 at 32x32, or 8 at 16x16 with quick)."""
    batch, size = (8, 16) if quick else (32, 32)
    x = torch.randn(batch, 3, size, size)
    try:  # optional: model definitions only, no weights are downloaded
        import torchvision.models as tv
    except Exception:  # not installed, or its C extension does not load with this torch
        tv = None
    if tv is not None:
        names = ["resnet18", "mobilenet_v2", "densenet121", "regnet_y_400mf", "shufflenet_v2_x1_0"]
        return [(f"torchvision {n}", lambda n=n: getattr(tv, n)(num_classes=10), x, 10) for n in names]
    from snl_train.replicas import REPLICAS

    width = 8 if quick else 32
    return [(f"replica {name} w{width}", lambda f=factory: f(10, (3, size, size), width), x, 10)
            for name, factory in REPLICAS.items()]


def fused_gate_calls(model, x, y) -> int:
    """How many gates of one training step ran the fused kernels (``snl_fused`` forward ops)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "snl_fused" and "forward" in func.__name__:
                Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return Count.calls


def fused_status() -> str:
    """One line: whether the gates run the fused kernels in this process, and if not why."""
    from snl_train import fused

    if not fused.fused_enabled():
        return f"gate kernels: eager ({fused.ENV_VAR}=0)"
    if not fused.fused_available():
        return f"gate kernels: eager (fused kernels unavailable: {fused.load_error()})"
    return "gate kernels: fused (snl_train.fused) where they apply"


def zoo_rows(cases, warmup: int, rounds: int, clock=time.perf_counter) -> list[dict]:
    """Plain against gated training steps per model (interleaved, fastest of ``rounds``).

    ``clock`` is wall time by default; ``time.process_time`` (``--cpu-time``) counts only the
    CPU time of this process, which other jobs on the machine do not add to (with one thread).
    """
    from snl_train.accounting import count_relus
    from snl_train.gates import gating_mechanism

    rows = []
    for label, factory, x, classes in cases:
        torch.manual_seed(0)
        plain = factory()
        gated = add_gates(copy.deepcopy(plain), example_input=x[:1])
        y = torch.randint(0, classes, (x.shape[0],))
        models = {"plain": plain.train(), "gated": gated.train()}
        optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
        times = {k: [] for k in models}
        for round_index in range(warmup + rounds):
            for key, model in models.items():
                start = clock()
                train_step(model, optimizers[key], x, y)
                if round_index >= warmup:
                    times[key].append(clock() - start)
        fused_calls = fused_gate_calls(gated, x, y)
        peaks = {k: step_peak_bytes(m, optimizers[k], x, y) / 2**20 for k, m in models.items()}
        best = {k: 1000 * min(v) for k, v in times.items()}
        rows.append({"model": label, "mechanism": gating_mechanism(gated)[0],
                     "sites": len(gate_sites(gated)), "fused": fused_calls, "relus": count_relus(plain, x[:1]),
                     "plain_ms": best["plain"], "gated_ms": best["gated"],
                     "time_ratio": best["gated"] / best["plain"], "plain_peak_mb": peaks["plain"],
                     "gated_peak_mb": peaks["gated"], "peak_ratio": peaks["gated"] / peaks["plain"]})
    return rows


def print_zoo_table(rows: list[dict]) -> None:
    header = (f"{'model':<32} {'gating':<8} {'sites':>5} {'fused':>5} {'ReLUs':>8} {'plain ms':>9} {'gated ms':>9} "
              f"{'x plain':>8} {'peak MB':>8} {'gated MB':>9} {'x plain':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<32} {r['mechanism']:<8} {r['sites']:>5} {r['fused']:>5} {r['relus']:>8} {r['plain_ms']:>9.1f} "
              f"{r['gated_ms']:>9.1f} {r['time_ratio']:>8.3f} {r['plain_peak_mb']:>8.1f} "
              f"{r['gated_peak_mb']:>9.1f} {r['peak_ratio']:>8.3f}")


def print_table(rows: list[dict]) -> None:
    header = (f"{'model':<22} {'variant':<9} {'median ms':>10} {'best ms':>9} {'x plain':>8} {'peak MB':>9} "
              f"{'x plain':>8} {'resident MB':>12} {'(peak+res) x':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<22} {r['variant']:<9} {r['step_ms']:>10.1f} {r['best_ms']:>9.1f} "
              f"{r['time_ratio']:>8.3f} {r['peak_mb']:>9.1f} {r['peak_ratio']:>8.3f} {r['resident_mb']:>12.1f} {r['total_ratio']:>13.3f}")


# ----------------------------------------------------------------------------- compiled and bf16

SPEED_MODES = tuple((mode, precision) for mode in ("eager", "compiled") for precision in ("fp32", "bf16"))


def autocast_step(model, optimizer, x, y, precision: str) -> None:
    """One training step with the forward pass and the loss under bf16 autocast (or fp32)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    optimizer.step()


def bench_speed(label: str, base: nn.Module, x: torch.Tensor, classes: int, warmup: int, rounds: int,
                variants=("plain", "gated")) -> list[dict]:
    """Step time of each variant eager and torch.compile'd (inductor), in fp32 and bf16.

    Every (variant, mode) has its own copy of the model and optimizer; the first step of each
    (variant, mode, precision) compiles and is timed separately (``first_s``). Then all of them
    are interleaved round by round and the fastest step counts.
    """
    torch.manual_seed(0)
    y = torch.randint(0, classes, (x.shape[0],))
    built = make_variants(base, x)
    runs = {}
    for variant in variants:
        for mode in ("eager", "compiled"):
            model = copy.deepcopy(built[variant])
            step_model = torch.compile(model, dynamic=False) if mode == "compiled" else model
            runs[variant, mode] = (step_model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    first, times = {}, {(v, m, p): [] for v in variants for m, p in SPEED_MODES}
    for key in times:
        model, optimizer = runs[key[:2]]
        start = time.perf_counter()
        autocast_step(model, optimizer, x, y, key[2])
        first[key] = time.perf_counter() - start
    for round_index in range(warmup + rounds):
        for key in times:
            model, optimizer = runs[key[:2]]
            start = time.perf_counter()
            autocast_step(model, optimizer, x, y, key[2])
            if round_index >= warmup:
                times[key].append(time.perf_counter() - start)
    best = {key: 1000 * min(t) for key, t in times.items()}
    return [{"model": label, "variant": v, "mode": m, "precision": p, "best_ms": best[v, m, p],
             "median_ms": 1000 * statistics.median(times[v, m, p]), "first_s": first[v, m, p],
             "x_plain": best[v, m, p] / best["plain", m, p], "x_eager": best[v, m, p] / best[v, "eager", p],
             "x_fp32": best[v, m, p] / best[v, m, "fp32"]} for v, m, p in times]


def print_speed_table(rows: list[dict]) -> None:
    header = (f"{'model':<22} {'variant':<8} {'mode':<9} {'prec':<5} {'median ms':>10} {'best ms':>9} "
              f"{'x plain':>8} {'x eager':>8} {'x fp32':>7} {'first s':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<22} {r['variant']:<8} {r['mode']:<9} {r['precision']:<5} {r['median_ms']:>10.1f} "
              f"{r['best_ms']:>9.1f} {r['x_plain']:>8.3f} {r['x_eager']:>8.3f} {r['x_fp32']:>7.3f} {r['first_s']:>8.1f}")


def speed_cases(quick: bool) -> list[tuple]:
    """The compiled / bf16 section's cases: smaller than the memory table's (compiling is slow)."""
    if quick:
        return [("mlp 256x2 b64", MLP(192, (256, 256), 10), torch.randn(64, 192), 10)]
    return [("resnet18 b32 32x32", resnet18(100), torch.randn(32, 3, 32, 32), 100),
            ("mlp 2048x3 b256", MLP(3072, (2048, 2048, 2048), 100), torch.randn(256, 3072), 100)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (seconds)")
    parser.add_argument("--rounds", type=int, default=None, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="model-zoo table: time steps by this process's CPU time, not wall time "
                             "(steadier on a loaded machine; use with --threads 1)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--table", choices=("gates", "zoo", "all"), default="all",
                        help="the gate-variants table, the model-zoo table, or both (default)")
    parser.add_argument("--compiled", action="store_true",
                        help="also time eager vs torch.compile and fp32 vs bf16 (compiles each variant)")
    parser.add_argument("--compiled-only", action="store_true",
                        help="only the eager vs compiled, fp32 vs bf16 section")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quick:
        cases = [("resnet18 b8 16x16", resnet18(100), torch.randn(8, 3, 16, 16), 100),
                 ("mlp 256x2 b64", MLP(192, (256, 256), 10), torch.randn(64, 192), 10)]
        warmup, rounds = 1, args.rounds or 3
    else:
        cases = [("resnet18 b32 32x32", resnet18(100), torch.randn(32, 3, 32, 32), 100),
                 ("mlp 2048x3 b256", MLP(3072, (2048, 2048, 2048), 100), torch.randn(256, 3072), 100)]
        warmup, rounds = 2, args.rounds or 9
    rows, zoo, speed_rows = [], [], []
    if args.table in ("gates", "all") and not args.compiled_only:
        for label, model, x, classes in cases:
            rows += bench(label, model, x, classes, warmup, rounds)
    if args.table in ("zoo", "all") and not args.compiled_only:
        zoo = zoo_rows(zoo_cases(args.quick), warmup, rounds,
                       clock=time.process_time if args.cpu_time else time.perf_counter)
    if args.compiled or args.compiled_only:
        for label, model, x, classes in speed_cases(args.quick):
            speed_rows += bench_speed(label, model, x, classes, warmup, rounds)
    if args.json:
        print(json.dumps({"gate_kernels": fused_status(), "variants": rows, "zoo": zoo,
                          "speed": speed_rows}, indent=2))
        return 0
    clock = "process CPU time" if args.cpu_time else "wall time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{rounds} timed steps per variant ({clock}); {fused_status()}")
    if rows:
        print_table(rows)
    if zoo:
        print_zoo_table(zoo)
    if speed_rows:
        print_speed_table(speed_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
