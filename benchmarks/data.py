"""Training-loader throughput: per-image host augmentation against on-device batches.

One epoch of CIFAR-shaped synthetic training data (uint8 3x32x32, batch 256, random crop with
4-pixel zero padding + horizontal flip, normalisation), served two ways:

* ``host``   ``AugmentedImages`` through the trainer's ``batches`` (a ``DataLoader``: one
             ``__getitem__`` per image, crop/flip per image, then collation) -- ``--host-data``;
* ``device`` ``on_device(...)``: the uint8 set as one tensor on the device, crop/flip/normalise
             per batch (the default; here the device is the CPU).

Each round runs one epoch of each (interleaved); the fastest round counts, because other load
on the machine only ever adds time. Nothing is trained: this is the loader alone.

Usage::

    python benchmarks/data.py              # 10,000 images, 5 rounds
    python benchmarks/data.py --quick      # 1,024 images, 2 rounds
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from snl_train.data import CIFAR100_MEAN, CIFAR100_STD, AugmentedImages, on_device  # noqa: E402
from snl_train.trainer import batches  # noqa: E402


def epoch_seconds(dataset, batch_size: int, seed: int) -> float:
    """Wall time of drawing every batch of one shuffled epoch (and touching it)."""
    start = time.perf_counter()
    total = 0.0
    for x, _ in batches(dataset, batch_size, True, torch.Generator().manual_seed(seed)):
        total += float(x[0, 0, 0, 0])  # consume the batch
    return time.perf_counter() - start


def measure(n: int, batch_size: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 100, (n,), generator=g)
    host = AugmentedImages(images, labels, CIFAR100_MEAN, CIFAR100_STD, augment=True)
    sources = {"host": host, "device": on_device(host, "cpu")}
    times = {name: [] for name in sources}
    for round_index in range(rounds):
        for name, source in sources.items():
            times[name].append(epoch_seconds(source, batch_size, round_index))
    best = {name: min(t) for name, t in times.items()}
    return {"images": n, "batch_size": batch_size, "rounds": rounds, "threads": torch.get_num_threads(),
            **{f"{name}_images_per_s": n / best[name] for name in best},
            "speedup": best["host"] / best["device"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,024 images, 2 rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    row = measure(1024, 256, 2) if args.quick else measure(10_000, 256, 5)
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(f"{row['images']} CIFAR-shaped images, batch {row['batch_size']}, {row['threads']} threads, "
              f"fastest of {row['rounds']} epochs: host {row['host_images_per_s']:,.0f} images/s, "
              f"on-device {row['device_images_per_s']:,.0f} images/s ({row['speedup']:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
