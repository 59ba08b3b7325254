"""Data-parallel SNL training with PyTorch's own engine: torch.distributed + DistributedDataParallel.

Started by ``torchrun`` (``python -m torch.distributed.run``), every process finds its place
in the environment torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). :func:`setup` joins the process group -- ``nccl`` when the run is on CUDA
(one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on the CPU -- and returns a
:class:`DistContext`; with no torchrun environment, or a world of one process, it returns
``None`` and the trainer runs exactly as a single process (no wrapping, no collectives).

What the context does for the trainer:

* ``wrap``: DistributedDataParallel around the model (gradients of weights *and* gate slopes
  averaged across processes; rank 0's parameters and buffers broadcast at every wrap);
* ``batches``: each process takes its share of the epoch's shuffle (``DistributedSampler``,
  the same permutation on every rank); the configured batch size is the *global* batch, so
  each process takes ``ceil(batch / world_size)`` samples per step and a step averages the
  same number of samples as a single process does;
* ``agreed_int``: the ReLU count that drives lambda and stopping, reduced across ranks (a
  disagreement raises :class:`ReplicaMismatch` instead of letting ranks diverge);
* ``evaluate`` / ``all_sum``: metrics summed over ranks (correct / count over the whole set);
* ``load_checkpoint``: rank 0 reads the file and broadcasts its bytes; every rank parses them
  with ``weights_only=True`` (so multi-node runs need no shared file system to resume);
* ``gather_rng`` and ``state_digest``: per-rank RNG states for the checkpoint, and a hash of
  each rank's final model state to show the replicas ended identical.

Only rank 0 writes files, logs and draws a progress bar (the trainer and CLI see to that).

Example (two CPU processes on one machine)::

    torchrun --nproc_per_node=2 -m snl_train --dataset digits --budget 60 --out runs/ddp
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from .checkpoint import CheckpointError, parse_checkpoint


class ReplicaMismatch(RuntimeError):
    """Processes of one run disagree on a value that must be identical on every rank."""


def env_ranks(environ=None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's environment; None for one process.

    Raises:
        ValueError: the variables are present but not integers, or inconsistent.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ValueError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
                         f"LOCAL_RANK={local}")
    return None if world == 1 else (rank, world, local)


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Per-process share of a global batch: ``ceil(batch_size / world_size)``."""
    return max(1, math.ceil(batch_size / world_size))


def setup(device_name: str = "cpu", environ=None) -> "DistContext | None":
    """Join the process group torchrun describes; None when this is a single-process run.

    Args:
        device_name: the run's device (``cpu`` or ``cuda``); CUDA ranks use ``cuda:LOCAL_RANK``.
    Raises:
        ValueError: a malformed environment, or fewer GPUs on this node than LOCAL_RANK needs.
    """
    ranks = env_ranks(environ)
    if ranks is None:
        return None
    rank, world, local = ranks
    device = torch.device(device_name)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} needs a GPU, but this node has "
                             f"{torch.cuda.device_count()}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = backend_for(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, backend, device)


def teardown(ctx: "DistContext | None") -> None:
    """Leave the process group :func:`setup` joined (no-op for a single process)."""
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()


def state_digest(state_dict: dict) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and values (equal states, equal digests)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run, and the collectives the trainer needs."""

    rank: int
    world_size: int
    local_rank: int
    backend: str  # "gloo" or "nccl"
    device: torch.device  # the device this rank trains on

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def _comm(self) -> torch.device:  # nccl only moves CUDA tensors
        return self.device if self.backend == "nccl" else torch.device("cpu")

    # -- the model ----------------------------------------------------------------
    def wrap(self, model: nn.Module, example_input) -> nn.Module:
        """DistributedDataParallel around ``model`` (which must be on ``self.device``).

        Parameters without gradient (frozen gates) are left out by DDP itself. A probe
        forward/backward on ``example_input`` (eval mode, gradients cleared afterwards) shapes
        lazy parameters and finds trainable parameters the forward never reaches; only then is
        ``find_unused_parameters`` switched on, since it costs a graph walk per step.
        """
        from torch.nn.parallel import DistributedDataParallel

        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            return model
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            outputs = [o.float().sum() for o in _tensors(model(example_input)) if o.requires_grad]
            if outputs:
                torch.stack(outputs).sum().backward()
        finally:
            for m, training in modes:
                m.training = training
        unused = any(p.grad is None for p in trainable)  # all of them when nothing came back
        for p in trainable:
            p.grad = None
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank."""
        for b in model.buffers():
            t = b.detach().to(self._comm)
            dist.broadcast(t, 0)
            if t is not b:
                b.data.copy_(t)

    # -- data ---------------------------------------------------------------------
    def batches(self, dataset, batch_size: int, seed: int, num_workers: int = 0):
        """This rank's mini-batches of a shuffled epoch; ``batch_size`` is the global batch.

        Every rank draws the same permutation (``seed``) and ``DistributedSampler`` deals it
        out, padding with repeats so each rank gets the same number of samples and steps.
        """
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                     shuffle=True, seed=seed, drop_last=False)
        local = local_batch_size(batch_size, self.world_size)
        if isinstance(dataset, TensorDataset) and num_workers == 0:
            idx = torch.tensor(list(sampler), dtype=torch.long)
            return [tuple(t[idx[i:i + local]] for t in dataset.tensors)
                    for i in range(0, len(idx), local)]
        return DataLoader(dataset, batch_size=local, sampler=sampler, num_workers=num_workers)

    def shard(self, dataset):
        """Samples rank, rank + world, ... of ``dataset`` (no padding: for evaluation)."""
        if isinstance(dataset, TensorDataset):
            return TensorDataset(*(t[self.rank::self.world_size] for t in dataset.tensors))
        return Subset(dataset, range(self.rank, len(dataset), self.world_size))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset, device, batch_size: int = 512) -> float:
        """Top-1 accuracy over the whole ``dataset``: each rank scores its shard, sums reduced."""
        from .trainer import batches

        model.eval()
        correct = total = 0
        for x, y in batches(self.shard(dataset), batch_size, shuffle=False):
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
        correct, total = self.all_sum([correct, total])
        return correct / max(total, 1)

    # -- values -------------------------------------------------------------------
    def all_sum(self, values) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64)."""
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_sum_async(self, value: torch.Tensor):
        """Start summing a scalar tensor over ranks; returns ``(tensor, work)``; ``work.wait()``."""
        t = value.detach().to(self._comm, torch.float64).reshape(1).clone()
        return t, dist.all_reduce(t, op=dist.ReduceOp.SUM, async_op=True)

    def agreed_int(self, value: int, what: str) -> int:
        """``value`` after checking every rank holds the same one (min == max across ranks).

        Raises:
            ReplicaMismatch: the ranks disagree (their models have diverged).
        """
        t = torch.tensor([value, -value], dtype=torch.int64, device=self._comm)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        high, low = int(t[0]), -int(t[1])
        if high != low:
            raise ReplicaMismatch(f"ranks disagree on {what}: from {low} to {high}")
        return high

    def gather_digests(self, state_dict: dict) -> list[str]:
        """Every rank's :func:`state_digest` of ``state_dict``, in rank order."""
        mine = torch.tensor(list(bytes.fromhex(state_digest(state_dict))), dtype=torch.uint8,
                            device=self._comm)
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine)
        return [bytes(p.cpu().tolist()).hex() for p in parts]

    # -- checkpoints --------------------------------------------------------------
    def gather_rng(self) -> list[dict]:
        """Every rank's RNG states (CPU, and this rank's GPU when on CUDA), in rank order."""
        states = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        gathered = [{} for _ in range(self.world_size)]
        for key, mine in states.items():
            parts = [torch.empty_like(mine, device=self._comm) for _ in range(self.world_size)]
            dist.all_gather(parts, mine.to(self._comm))
            for r, part in enumerate(parts):
                gathered[r][key] = part.cpu()
        return gathered

    def set_rng(self, states: dict) -> None:
        """Restore this rank's entry of :meth:`gather_rng`."""
        torch.set_rng_state(states["torch"])
        if self.device.type == "cuda" and "cuda" in states:
            torch.cuda.set_rng_state(states["cuda"], self.device)

    def load_checkpoint(self, path) -> dict:
        """Rank 0 reads ``path`` and broadcasts its bytes; each rank parses them (weights only).

        Raises (on every rank alike):
            CheckpointError: missing on rank 0, corrupt, or not an snl_train checkpoint.
        """
        data = None
        if self.is_main and os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
        data = self._broadcast_bytes(data)
        if data is None:
            raise CheckpointError(f"no checkpoint at {path}")
        return parse_checkpoint(io.BytesIO(data), path)

    def _broadcast_bytes(self, data: bytes | None) -> bytes | None:
        n = torch.tensor([-1 if data is None else len(data)], dtype=torch.int64, device=self._comm)
        dist.broadcast(n, 0)
        size = int(n)
        if size <= 0:
            return None if size < 0 else b""
        if self.is_main:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self._comm)
        else:
            buf = torch.empty(size, dtype=torch.uint8, device=self._comm)
        dist.broadcast(buf, 0)
        return buf.cpu().numpy().tobytes()


def _tensors(out):
    """The floating-point tensors in a model output (a tensor, or nested tuples/lists/dicts)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []
