"""One-command GPU benchmark of SNL training: ResNet-18 training steps and a short SNL search.

On a CUDA machine, in one run (about 5-8 minutes on one GPU, compilation included):

1. **Steps.** The paper's CIFAR ResNet-18 (batch 256, 3x32x32, 100 classes, SGD with
   momentum) for plain ReLU, this package's gates and the paper's formulation
   ``relu(z)*c + (1-c)*z``, each eager and ``torch.compile``'d (inductor), in fp32 and under
   bf16 autocast: the fastest and the median of interleaved CUDA-synchronised steps, images/s,
   peak memory of a step (``torch.cuda.max_memory_allocated``, weights included), and the
   first step (compilation) apart.
2. **Search.** A short SNL search (the trainer of ``python -m snl_train``: gates, KD teacher,
   lambda schedule, a test pass and a ReLU count per epoch) on CIFAR-shaped synthetic data,
   three ways: today's defaults without on-device data (eager fp32, per-image host loader),
   eager fp32 with on-device data, and the fast settings (``--compile --amp bf16
   --channels-last``, on-device data). Epochs/s after the first epoch, the first epoch apart.

It writes one JSON file (``--out``) and prints a table. Compiled configurations are skipped
(and listed as skipped) once ``--minutes`` would be exceeded. Without CUDA it says so in one
line and exits 2; ``--cpu-check`` runs the same code on the CPU at toy sizes with a tracing-only
compiler backend and no compiled search, to check the script itself (its numbers mean nothing).

Usage::

    python benchmarks/gpu.py --out gpu_benchmark.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from gates import PaperGate, autocast_step, swap_gates  # noqa: E402
from snl_train.gates import add_gates  # noqa: E402

VARIANTS = ("plain", "gated", "paper")
MODES = ("eager", "compiled")
PRECISIONS = ("fp32", "bf16")


@dataclass
class Settings:
    """Sizes of one benchmark run (the defaults are the GPU run's)."""

    device: str = "cuda"
    blocks: tuple = (2, 2, 2, 2)  # ResNet-18
    batch: int = 256
    image: int = 32
    classes: int = 100
    warmup: int = 3  # untimed steps per configuration after its first (compiling) step
    steps: int = 15  # timed steps per configuration, interleaved
    backend: str = "inductor"  # torch.compile backend of the step table
    channels_last: bool = True  # NHWC for every step configuration
    search_images: int = 10_000  # synthetic CIFAR-shaped training images
    search_test: int = 2_000
    search_epochs: int = 4
    search_compile: bool = True  # the fast search compiles (off in --cpu-check)
    minutes: float = 8.0  # skip compiled configurations that would start after 85% of this


def cpu_check_settings() -> Settings:
    """Toy sizes for checking the script on a CPU in seconds."""
    return Settings(device="cpu", blocks=(1, 1, 1, 1), batch=4, image=8, classes=10, warmup=1,
                    steps=2, backend="eager", channels_last=True, search_images=32, search_test=16,
                    search_epochs=2, search_compile=False, minutes=5.0)


def build_resnet(settings: Settings) -> torch.nn.Module:
    from snl_train.models import ResNet

    return ResNet(settings.blocks, settings.classes)


def step_variants(settings: Settings, x: torch.Tensor) -> dict:
    """plain / gated / paper copies of one initialised ResNet on the device."""
    torch.manual_seed(0)
    base = build_resnet(settings).to(settings.device)
    if settings.channels_last:
        base = base.to(memory_format=torch.channels_last)
    gated = add_gates(copy.deepcopy(base), example_input=x[:2])
    paper = swap_gates(add_gates(copy.deepcopy(base), example_input=x[:2]), PaperGate)
    return {"plain": base, "gated": gated, "paper": paper}


class Clock:
    """Wall time since the start, and whether a new compiled configuration still fits."""

    def __init__(self, minutes: float) -> None:
        self.start, self.limit = time.perf_counter(), 60 * minutes

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows_compiling(self) -> bool:
        return self.elapsed() < 0.85 * self.limit


def timed_step(run, x, y, precision: str, device: str) -> float:
    """Seconds of one synchronised training step."""
    model, optimizer = run
    synchronize(device)
    start = time.perf_counter()
    autocast_step(model, optimizer, x, y, precision)
    synchronize(device)
    return time.perf_counter() - start


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_peak_mb(run, x, y, precision: str, device: str) -> float | None:
    """Peak memory allocated during one step (weights and optimizer state included), MB."""
    if not device.startswith("cuda"):
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats()
    timed_step(run, x, y, precision, device)
    return torch.cuda.max_memory_allocated() / 2**20


def measure_steps(settings: Settings, clock: Clock, skipped: list) -> list[dict]:
    """The step table: every (variant, mode, precision), first step apart, then interleaved."""
    device = settings.device
    torch.manual_seed(0)
    x = torch.randn(settings.batch, 3, settings.image, settings.image, device=device)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, settings.classes, (settings.batch,), device=device)
    runs, first = {}, {}
    for variant, model in step_variants(settings, x).items():
        for mode in MODES:
            copy_ = copy.deepcopy(model)
            step_model = torch.compile(copy_, backend=settings.backend, dynamic=False) if mode == "compiled" else copy_
            optimizer = torch.optim.SGD(copy_.parameters(), lr=1e-3, momentum=0.9)
            for precision in PRECISIONS:
                key = (variant, mode, precision)
                if mode == "compiled" and not clock.allows_compiling():
                    skipped.append("/".join(key))
                    continue
                runs[key] = (step_model, optimizer)
                first[key] = timed_step(runs[key], x, y, precision, device)
    times = {key: [] for key in runs}
    for round_index in range(settings.warmup + settings.steps):
        for key, run in runs.items():
            seconds = timed_step(run, x, y, key[2], device)
            if round_index >= settings.warmup:
                times[key].append(seconds)
    return [step_row(key, times, first, runs, x, y, settings) for key in runs]


def step_row(key, times, first, runs, x, y, settings: Settings) -> dict:
    variant, mode, precision = key
    best = min(times[key])
    plain = ("plain", mode, precision)
    eager = (variant, "eager", precision)
    return {"variant": variant, "mode": mode, "precision": precision,
            "best_ms": 1000 * best, "median_ms": 1000 * statistics.median(times[key]),
            "images_per_s": settings.batch / best, "first_step_s": first[key],
            "peak_mb": step_peak_mb(runs[key], x, y, precision, settings.device),
            "x_plain": best / min(times[plain]) if plain in times else None,
            "x_eager": best / min(times[eager]) if eager in times else None}


def synthetic_cifar(settings: Settings, seed: int = 0):
    """CIFAR-shaped random uint8 images and labels as the trainer's DataBundle (augmented)."""
    from snl_train.data import CIFAR100_MEAN, CIFAR100_STD, AugmentedImages, DataBundle

    g = torch.Generator().manual_seed(seed)
    n, m, s = settings.search_images, settings.search_test, settings.image
    images = torch.randint(0, 256, (n + m, 3, s, s), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, settings.classes, (n + m,), generator=g)
    return DataBundle(AugmentedImages(images[:n], labels[:n], CIFAR100_MEAN, CIFAR100_STD, True),
                      AugmentedImages(images[n:], labels[n:], CIFAR100_MEAN, CIFAR100_STD, False),
                      settings.classes, (3, s, s), "synthetic-cifar")


SEARCH_SETUPS = {
    "eager fp32, host data": dict(device_data=False),
    "eager fp32, device data": dict(device_data=True),
    "compile bf16 channels-last, device data": dict(device_data=True, compile=True, amp="bf16",
                                                    channels_last=True),
}


def measure_search(settings: Settings, clock: Clock, skipped: list) -> list[dict]:
    """Epoch times of a short SNL search (no pretraining, no finetuning) per setup."""
    from snl_train.config import RunConfig
    from snl_train.trainer import Trainer

    data = synthetic_cifar(settings)
    rows = []
    for name, options in SEARCH_SETUPS.items():
        options = dict(options)
        if options.get("compile") and not (settings.search_compile and clock.allows_compiling()):
            skipped.append(f"search: {name}")
            continue
        cfg = RunConfig(model="resnet18", dataset="cifar100", device=settings.device,
                        budget=1, **options)  # an unreachable budget: every epoch runs
        cfg.pretrain.epochs, cfg.finetune.epochs = 0, 0
        cfg.search.max_epochs = settings.search_epochs
        cfg.search.batch_size = settings.batch
        trainer = Trainer(cfg, lambda: build_resnet(settings), data)
        stamps = [time.perf_counter()]
        trainer.add_callback("on_epoch_end", lambda t: (synchronize(settings.device),
                                                         stamps.append(time.perf_counter())))
        trainer.run()
        epochs = [b - a for a, b in zip(stamps, stamps[1:])]
        rows.append({"setup": name, "first_epoch_s": epochs[0],
                     "epochs_per_s": (len(epochs) - 1) / sum(epochs[1:]) if len(epochs) > 1 else None,
                     "images_per_s": settings.search_images * (len(epochs) - 1) / sum(epochs[1:])
                     if len(epochs) > 1 else None, "epochs": len(epochs)})
    return rows


def environment(settings: Settings) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
           "tf32_cudnn": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark}
    if settings.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    else:
        env["cpu_threads"] = torch.get_num_threads()
    return env


def print_tables(report: dict) -> None:
    print(f"{report['environment'].get('gpu', 'CPU')}, torch {report['environment']['torch']}, "
          f"batch {report['settings']['batch']}, {report['elapsed_s']:.0f} s in all")
    header = (f"{'variant':<7} {'mode':<9} {'prec':<5} {'best ms':>8} {'median ms':>10} {'img/s':>8} "
              f"{'x plain':>8} {'x eager':>8} {'peak MB':>8} {'first s':>8}")
    print(header + "\n" + "-" * len(header))
    for r in report["steps"]:
        print(f"{r['variant']:<7} {r['mode']:<9} {r['precision']:<5} {r['best_ms']:>8.1f} {r['median_ms']:>10.1f} "
              f"{r['images_per_s']:>8.0f} {_num(r['x_plain'], 3)} {_num(r['x_eager'], 3)} "
              f"{_num(r['peak_mb'], 0)} {r['first_step_s']:>8.1f}")
    print(f"\n{'SNL search setup':<42} {'epochs/s':>9} {'img/s':>8} {'first epoch s':>14}")
    for r in report["search"]:
        print(f"{r['setup']:<42} {_num(r['epochs_per_s'], 3, 9)} {_num(r['images_per_s'], 0)} "
              f"{r['first_epoch_s']:>14.1f}")
    if report["skipped"]:
        print(f"skipped (time limit or --cpu-check): {', '.join(report['skipped'])}")


def _num(value, digits: int, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def write_json(report: dict, path: str) -> None:
    """Write atomically: a temporary file in the same directory, then os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gpu_benchmark.", dir=folder)
    with os.fdopen(fd, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_benchmark.json", help="JSON results file")
    parser.add_argument("--minutes", type=float, default=8.0,
                        help="time limit: compiled configurations that would start late are skipped")
    parser.add_argument("--cpu-check", action="store_true",
                        help="check the script on the CPU at toy sizes (numbers meaningless)")
    args = parser.parse_args(argv)
    if not args.cpu_check and not torch.cuda.is_available():
        sys.stderr.write("error: no CUDA device: benchmarks/gpu.py measures GPU training; run it "
                         "on a machine with a GPU (--cpu-check only checks the script)\n")
        return 2
    settings = cpu_check_settings() if args.cpu_check else Settings(minutes=args.minutes)
    if args.cpu_check:
        torch.set_num_threads(1)  # toy sizes: threads only wait for each other on a shared CPU
    clock, skipped = Clock(settings.minutes), []
    report = {"environment": environment(settings), "settings": asdict(settings),
              "steps": measure_steps(settings, clock, skipped)}
    report["search"] = measure_search(settings, clock, skipped)
    report["skipped"], report["elapsed_s"] = skipped, clock.elapsed()
    write_json(report, args.out)
    print_tables(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
