"""Training throughput of the SNL search stage: one process against N data-parallel processes.

Each configuration runs in fresh spawned processes (gloo on the CPU, one torch thread per
process, as torchrun sets ``OMP_NUM_THREADS=1``). Every process builds the same
:class:`snl_train.trainer.Trainer` the command line builds, leaves pretraining with zero
epochs, enters the search stage (gates at every ReLU, KD from the frozen teacher, Adam on
weights and gates, DistributedDataParallel across the processes) and times whole training
epochs with ``Trainer._train_epoch``: all ranks' samples per second of wall time, after one
warm-up epoch, best of the timed epochs (other load on the machine only ever adds time).
The single-process rows take the trainer's ordinary path (no process group, no DDP).

Workloads:

* ``mlp``    the CLI default: MLP 64-256-64-10 on the 1,437 training digits, batch 64;
* ``convnet`` ``SmallConvNet`` (width 32) on 2,048 synthetic CIFAR-shaped images, batch 128.

Usage::

    python benchmarks/distributed.py            # both workloads, 1 and 2 processes
    python benchmarks/distributed.py --quick    # fewer epochs and images
    python benchmarks/distributed.py --procs 4  # compare 1 against 4 processes
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bundle(workload: str, quick: bool):
    import torch
    from torch.utils.data import TensorDataset

    from snl_train.data import DataBundle, load_dataset

    if workload == "mlp":
        return load_dataset("digits", seed=0)
    g = torch.Generator().manual_seed(0)
    n = 512 if quick else 2048
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    small = TensorDataset(x[:64], y[:64])
    return DataBundle(TensorDataset(x, y), small, 10, (3, 32, 32), "synthetic")


def _worker(rank: int, world: int, port: int, threads: int, workload: str, quick: bool,
            epochs: int, queue) -> None:
    import torch
    import torch.distributed as dist

    from snl_train.config import RunConfig
    from snl_train.distributed import DistContext
    from snl_train.models import build_model
    from snl_train.trainer import Trainer

    torch.set_num_threads(threads)
    ctx = None
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
        ctx = DistContext(rank, world, rank, "gloo", torch.device("cpu"))
    data = _bundle(workload, quick)
    widths = (256, 64) if workload == "mlp" else (32,)
    model = "mlp" if workload == "mlp" else "convnet"
    cfg = RunConfig(model=model, widths=widths, dataset=data.name, budget=1, threads=threads)
    cfg.pretrain.epochs = 0
    cfg.search.batch_size = 64 if workload == "mlp" else 128
    trainer = Trainer(cfg, lambda: build_model(model, data.num_classes, data.in_shape, widths),
                      data, dist=ctx)
    trainer._start()
    trainer._advance()  # pretraining (zero epochs) -> search: gates, teacher, Adam, DDP
    times = []
    for epoch in range(epochs + 1):  # the first epoch warms up
        if ctx is not None:
            dist.barrier()
        start = time.perf_counter()
        trainer._train_epoch(cfg.search.batch_size)
        if ctx is not None:
            dist.barrier()
        times.append(time.perf_counter() - start)
        trainer.epoch += 1
    if rank == 0:
        queue.put({"samples": len(data.train), "epoch_seconds": times[1:]})
    if ctx is not None:
        dist.destroy_process_group()


def measure(world: int, threads: int, workload: str, quick: bool, epochs: int) -> dict:
    """Samples per second of ``world`` spawned processes with ``threads`` torch threads each."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, threads, workload, quick, epochs, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    out = queue.get(timeout=1800)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a benchmark process exited with code {p.exitcode}")
    best = min(out["epoch_seconds"])
    return {"processes": world, "threads_per_process": threads, "workload": workload,
            "samples_per_epoch": out["samples"], "best_epoch_seconds": round(best, 4),
            "samples_per_second": round(out["samples"] / best, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and images")
    parser.add_argument("--procs", type=int, default=2, help="processes to compare with one (2)")
    parser.add_argument("--workloads", default="mlp,convnet", help="mlp,convnet (default both)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    epochs = 2 if args.quick else 4
    rows = []
    for workload in args.workloads.split(","):
        # 1 process x 1 thread, N processes x 1 thread, and 1 process using all N threads
        for world, threads in ((1, 1), (args.procs, 1), (1, args.procs)):
            rows.append(measure(world, threads, workload, args.quick, epochs))
    machine = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
               "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}
    ratios = {}
    for workload in args.workloads.split(","):
        base, multi, threaded = (r for r in rows if r["workload"] == workload)
        ratios[workload] = {
            f"{args.procs}_procs_over_1_proc": round(multi["samples_per_second"] / base["samples_per_second"], 2),
            f"1_proc_{args.procs}_threads_over_1_proc": round(
                threaded["samples_per_second"] / base["samples_per_second"], 2)}
    if args.json:
        print(json.dumps({"rows": rows, "ratios": ratios, "machine": machine}, indent=2))
        return
    print(f"machine: {machine}")
    print(f"{'workload':9} {'procs':>5} {'threads':>7} {'samples/s':>10} {'epoch s':>8}")
    for r in rows:
        print(f"{r['workload']:9} {r['processes']:5d} {r['threads_per_process']:7d} "
              f"{r['samples_per_second']:10.1f} {r['best_epoch_seconds']:8.3f}")
    for workload, ratio in ratios.items():
        print(f"{workload}: {args.procs} processes / 1 process = "
              f"{ratio[f'{args.procs}_procs_over_1_proc']:.2f}x samples per second "
              f"(1 process with {args.procs} threads: {ratio[f'1_proc_{args.procs}_threads_over_1_proc']:.2f}x)")


if __name__ == "__main__":
    main()
