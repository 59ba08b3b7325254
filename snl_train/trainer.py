"""Algorithm 1 (Selective Network Linearization) with its pretraining and finetuning stages.

The trainer knows nothing about the model beyond ``model(x) -> logits``: it takes a
factory that builds a fresh ``nn.Module`` and a :class:`~snl_train.data.DataBundle`, and
runs three stages, each one epoch loop (:meth:`Trainer._stage_epoch`):

1. ``pretrain`` -- SGD (lr 0.1, momentum 0.9, wd 5e-4, step decay) on cross-entropy.
2. ``search``   -- gates c = 1 at every ReLU; Adam on weights and gates with
   CE + KD(teacher = frozen pretrained copy) + lambda * sum |c|. After each epoch the
   count ||1(c > epsilon)||_0 is measured; lambda *= kappa when it did not decrease
   (Algorithm 1, lines 6-8); the stage ends when count <= budget or after
   ``max_epochs`` (with a message).
3. ``finetune`` -- c := 1(c > epsilon) within the budget, frozen; SGD on the weights with
   KD (T = 4, equal weights on CE and KL, KL scaled by T^2).

``config.recipe`` picks the rules: ``"paper"`` is Algorithm 1 as printed (above);
``"official"`` follows the paper's public code (:mod:`snl_train.recipes`: lambda compared
with the lowest count so far, CE + KD at weights 1 and 1, cosine finetuning, the best
finetuning epoch chosen on a validation split held out of the training data).

After every epoch one line goes to ``out_dir/metrics.jsonl`` and a checkpoint is written
atomically to ``out_dir/checkpoint.pt``; ``run(resume=True)`` continues from it to the same
result a run without interruption gives (same seed, ``num_workers=0``).

Under ``torchrun`` the CLI passes a :class:`~snl_train.distributed.DistContext` (``dist=``):
every stage then trains a DistributedDataParallel copy on this rank's share of each batch,
ReLU counts, metrics and accuracies are reduced across ranks, and only rank 0 logs and
writes files. Without it (a single process) none of that code runs.

Example::

    >>> cfg = digits_defaults(RunConfig(model="mlp", widths=(32, 16), budget=12))
    >>> data = load_dataset("digits")
    >>> factory = lambda: build_model("mlp", data.num_classes, data.in_shape, (32, 16))
    >>> result = Trainer(cfg, factory, data, out_dir="run").run()
    >>> result["relu_count"] <= 12
    True
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .accounting import comparison_costs, online_latency, relu_counts, training_only_counts
from .checkpoint import FORMAT, CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import RunConfig
from .data import DeviceData, on_device
from .gates import (add_gates, freeze_gates, gate_parameters, gate_sites, gating_mechanism, is_gated,
                    remove_gates, unsupported_activations, weight_parameters)
from .recipes import (RECIPES, better, cosine_lr, official_kd_loss, official_next_lambda,
                      split_dataset, validation_indices)
from .speed import (CompiledForBatch, Precision, check_options, place_input, place_model,
                    precision_warning)

STAGES = ("pretrain", "search", "finetune", "done")


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the last checkpoint on disk is kept."""


class BudgetError(ValueError):
    """A ReLU budget that is negative or larger than the model's ReLU count."""


class AllocationError(BudgetError):
    """An ``--allocation`` that cannot be applied to this model and budget."""


# ----------------------------------------------------------------------------- pieces

def kd_loss(logits, teacher_logits, target, temperature: float = 4.0, kd_weight: float = 0.5):
    """Hinton distillation: (1 - w) * CE(logits, target) + w * T^2 * KL(teacher_T || student_T)."""
    ce = F.cross_entropy(logits, target)
    if kd_weight == 0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return (1 - kd_weight) * ce + kd_weight * t * t * kl


def next_lambda(lam: float, count: int, previous: int, kappa: float) -> float:
    """Algorithm 1, lines 7-8: multiply lambda by kappa when the count did not decrease."""
    return lam * kappa if count >= previous else lam


def resolve_budget(total: int, budget: int | None = None, fraction: float | None = None) -> int:
    """Absolute budget from ``budget`` or ``floor(fraction * total)``; checks 0 <= B <= total."""
    if (budget is None) == (fraction is None):
        raise BudgetError("give exactly one of a ReLU budget or a budget fraction")
    if fraction is not None:
        if not 0 <= fraction <= 1:
            raise BudgetError(f"budget fraction must be in [0, 1], got {fraction}")
        budget = math.floor(fraction * total)
    if budget < 0:
        raise BudgetError(f"ReLU budget must be >= 0, got {budget}")
    if budget > total:
        raise BudgetError(f"ReLU budget {budget} exceeds the model's {total} ReLUs")
    return int(budget)


def lr_at(base: float, milestones, gamma: float, epoch: int) -> float:
    """Step schedule: base * gamma ** (number of milestones <= epoch), epoch counted from 0."""
    return base * gamma ** sum(epoch >= m for m in milestones)


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``; ValueError when CUDA is asked for but not available."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use cpu or cuda")
    return device


def _gate_tensor(gate: nn.Module) -> torch.Tensor:
    params = list(gate.parameters())
    if len(params) != 1:
        raise TypeError(f"expected one gate parameter, found {len(params)} in {type(gate).__name__}")
    return params[0]


@torch.no_grad()
def binarize_within_budget(model: nn.Module, budget: int, epsilon: float, example_input):
    """Set every gate to 1(c > epsilon) keeping at most ``budget`` ReLUs; return the counts.

    The budget is guaranteed: if the gates above epsilon cover more than ``budget`` ReLUs
    (the search stopped at its epoch limit), only the largest c's are kept. Candidates are
    visited in order of decreasing c, ties broken by site order and then flat index, and a
    gate is kept when its ReLUs (1 per pixel gate, H*W per channel gate) still fit.
    """
    sites = gate_sites(model)
    totals = {s.name: s.total for s in relu_counts(model, example_input, epsilon)}
    values, sizes, order = [], [], []
    for k, (name, gate) in enumerate(sites):
        c = _gate_tensor(gate).detach().flatten().cpu()
        values.append(c)
        sizes.append(totals[name] // c.numel())
        order.append(torch.full_like(c, k, dtype=torch.long))
    c_all, site_all = torch.cat(values), torch.cat(order)
    flat_all = torch.cat([torch.arange(v.numel()) for v in values])
    # lexsort: by -c, then site index, then flat index (stable sorts from the last key)
    idx = torch.argsort(flat_all, stable=True)
    idx = idx[torch.argsort(site_all[idx], stable=True)]
    idx = idx[torch.argsort(-c_all[idx], stable=True)]
    keep, used = torch.zeros_like(c_all, dtype=torch.bool), 0
    for i in idx.tolist():
        if c_all[i] <= epsilon:
            break
        size = sizes[site_all[i]]
        if used + size <= budget:
            keep[i], used = True, used + size
    start = 0
    for (_, gate), c in zip(sites, values):
        param = _gate_tensor(gate)
        param.copy_(keep[start:start + c.numel()].view_as(param).to(param.dtype))
        start += c.numel()
    return relu_counts(model, example_input, epsilon)


@torch.no_grad()
def binarize_to_quotas(model: nn.Module, quotas: dict, epsilon: float, example_input):
    """Set every gate to 0/1 so that site ``name`` keeps exactly ``quotas[name]`` ReLUs; return the counts.

    Inside a site the units the search ranks highest are kept: largest c first, ties to the
    lower flat index (a unit is one ReLU for a pixel gate, H*W ReLUs for a channel gate).
    A site missing from ``quotas`` keeps none. Raises ValueError for a quota that is not a
    multiple of the site's unit or exceeds its ReLUs.

    Example::

        >>> binarize_to_quotas(net, {"features.2": 3, "features.4": 1}, 0.01, x)  # doctest: +SKIP
    """
    totals = {s.name: s.total for s in relu_counts(model, example_input, epsilon)}
    for name, gate in gate_sites(model):
        param = _gate_tensor(gate)
        c = param.detach().flatten().cpu()
        unit, quota = totals[name] // c.numel(), quotas.get(name, 0)
        if quota % unit or not 0 <= quota <= totals[name]:
            raise ValueError(f"site {name}: quota {quota} is not a multiple of {unit} in 0..{totals[name]}")
        keep = torch.zeros(c.numel(), dtype=torch.bool)
        keep[torch.argsort(-c, stable=True)[:quota // unit]] = True
        param.copy_(keep.view_as(param).to(param.dtype))
    return relu_counts(model, example_input, epsilon)


def allocation_sites(model: nn.Module, example_input, epsilon: float = 0.01) -> list:
    """The gated sites of ``model`` as :class:`capacity.allocation.Site` (name, ReLUs, unit, p).

    The unit is ReLUs per gate entry (1 pixel-wise, H*W channel-wise); p is the number of
    linear pieces of the gated activation (2 for ReLU and LeakyReLU, 3 for ReLU6 and Hardtanh).
    """
    from capacity.allocation import Site

    totals = {s.name: s.total for s in relu_counts(model, example_input, epsilon)}
    return [Site(name, totals[name], totals[name] // _gate_tensor(gate).numel(),
                 gate.activation.pieces) for name, gate in gate_sites(model)]


def plan_allocation(allocation: str, sites: list, budget: int, latency=None):
    """The :class:`capacity.allocation.Allocation` named by ``allocation`` for ``sites``.

    Args:
        allocation: "paper", "sharp", "uniform" or the path of a JSON file of kept counts.
        sites: from :func:`allocation_sites`.
        budget: ReLUs the gated sites may keep.
        latency: a :class:`snl_train.latency.LatencyPlan` to allocate under a latency budget
            instead (:func:`snl_train.latency.latency_allocation`); ``budget`` is then unused.

    Raises:
        AllocationError: an unreadable or malformed file, or counts that do not fit.
    """
    from capacity import allocation as alloc

    try:
        counts = None
        if allocation not in alloc.KINDS:
            try:
                text = Path(allocation).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not a text file"
                raise AllocationError(f"--allocation {allocation} is neither learned, paper, sharp, "
                                      f"uniform nor a readable JSON file ({reason})") from None
            counts = alloc.read_counts(text, allocation)
        if latency is not None:
            from .latency import latency_allocation
            return latency_allocation(allocation, sites, latency, counts)
        if counts is None:
            return alloc.allocate(allocation, sites, budget)
        return alloc.file_allocation(sites, budget, counts)
    except alloc.AllocationError as exc:
        raise AllocationError(str(exc)) from None


def batches(dataset, batch_size: int, shuffle: bool, generator=None, num_workers: int = 0):
    """Mini-batches; in-memory TensorDatasets are sliced directly (no per-item collation)."""
    if isinstance(dataset, DeviceData):
        return dataset.batches(batch_size, shuffle, generator)
    if isinstance(dataset, TensorDataset) and num_workers == 0:
        n = len(dataset)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        return [tuple(t[order[i:i + batch_size]] for t in dataset.tensors)
                for i in range(0, n, batch_size)]
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, device, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``."""
    model.eval()
    correct = total = 0
    for x, y in batches(dataset, batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1)


# ----------------------------------------------------------------------------- trainer

class Trainer:
    """Pretrain -> SNL search -> binarize -> finetune, with per-epoch metrics and checkpoints.

    Args:
        config: the run's :class:`RunConfig` (budget or budget_fraction must be set).
        model_factory: ``() -> nn.Module``, a fresh (ungated) model on the CPU.
        data: a :class:`DataBundle`.
        out_dir: where metrics.jsonl, checkpoint.pt and result.json go (None: nowhere).
        progress: show a tqdm bar per epoch on stderr.
        log: called with one human-readable line per stage event.
        dist: a :class:`~snl_train.distributed.DistContext` for a torchrun run (None: one process).
    Callbacks (``add_callback(event, fn)``, ``fn(trainer)``): "on_batch_end",
    "on_epoch_end" (after the checkpoint is written), "on_stage_end".
    Raises (from run): BudgetError, CheckpointError, NonFiniteLoss.
    """

    def __init__(self, config: RunConfig, model_factory: Callable[[], nn.Module], data,
                 out_dir=None, progress: bool = False, log: Callable[[str], None] = lambda s: None,
                 dist=None):
        self.config, self.model_factory, self.data = config, model_factory, data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = resolve_device(config.device)
        self.dist = dist  # a DistContext under torchrun (same out_dir on every rank), else None
        self.writes = dist is None or dist.is_main  # only rank 0 logs and writes files
        self.progress, self.log = progress and self.writes, log if self.writes else (lambda s: None)
        if dist is not None:
            self.device = dist.device
        self.train_module = None  # self.model, or its DistributedDataParallel wrapper
        self.callbacks = defaultdict(list)
        self.example_input = data.train[0][0].unsqueeze(0).to(self.device)
        self.stage, self.epoch, self.lam = "pretrain", 0, config.search.lam
        self.model = self.teacher = self.optimizer = None
        self.prev_count = self.relu_count_before = None
        self.metrics_lines, self.last_record, self.budget_reached = 0, {}, None
        # recipe state (snl_train.recipes): the lowest count so far, the best finetuning epochs
        self.lowest_count, self.best = None, {}
        self.validation, self.validation_indices = self._hold_out()
        self._setup_speed(model_factory)  # after the hold-out: on-device data is its training part
        self.allocation = None  # the --allocation report, quotas included (see _plan_allocation)
        self.latency = None  # --latency-budget: its snl_train.latency.LatencyPlan (see _setup_latency)

    def add_callback(self, event: str, fn: Callable[["Trainer"], None]) -> None:
        self.callbacks[event].append(fn)

    def _trigger(self, event: str) -> None:
        for fn in self.callbacks[event]:
            fn(self)

    # -- the main loop -------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        """Run (or with ``resume`` continue) all stages; write and return result.json's dict."""
        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
        if resume:
            path = self._path("checkpoint.pt")
            self._restore(load_checkpoint(path) if self.dist is None else self.dist.load_checkpoint(path))
        else:
            self._start()
        epochs = {"pretrain": self.config.pretrain.epochs, "search": self.config.search.max_epochs,
                  "finetune": self.config.finetune.epochs}
        while self.stage != "done":
            while self.epoch < epochs[self.stage] and not self._search_done():
                record = self._stage_epoch()
                self.epoch += 1
                self._end_epoch(record)
            self._trigger("on_stage_end")
            self._advance()
        return self._result()

    def _stage_epoch(self) -> dict:
        """One epoch of the current stage: set lr, train, then count ReLUs / update lambda."""
        cfg, stage = self.config, self.stage
        if stage == "pretrain":
            p = cfg.pretrain
            for g in self.optimizer.param_groups:
                g["lr"] = lr_at(p.lr, p.milestones, p.gamma, self.epoch)
        elif stage == "finetune" and cfg.recipe == "official":
            for g in self.optimizer.param_groups:
                g["lr"] = cosine_lr(cfg.finetune.lr, self.epoch, cfg.finetune.epochs)
        loss, acc = self._train_epoch(getattr(cfg, stage).batch_size)
        record = {"stage": stage, "epoch": self.epoch + 1, "loss": loss, "train_accuracy": acc,
                  "test_accuracy": self._evaluate(self.model),
                  "relu_count": self._relu_count(), "lambda": None}
        if stage == "search":
            record["lambda"] = self.lam  # the lambda this epoch trained with
            self.lam = self._next_lambda(record["relu_count"])
            self.prev_count = record["relu_count"]
        if stage == "finetune" and cfg.recipe == "official":
            self._track_best(record)
        return record

    def _train_epoch(self, batch_size: int):
        model, device, opt = self.train_module, self.device, self.optimizer
        model.train()
        seed = self.config.seed * 1_000_003 + STAGES.index(self.stage) * 100_003 + self.epoch
        if self.dist is None:
            loader = batches(self.train_data, batch_size, True, torch.Generator().manual_seed(seed),
                             self.config.num_workers)
        else:  # this rank's share of the same shuffle; batch_size stays the global batch
            loader = self.dist.batches(self.data.train, batch_size, seed, self.config.num_workers)
        if self.progress:
            from tqdm import tqdm
            loader = tqdm(loader, desc=f"{self.stage} {self.epoch + 1}", leave=False, unit="batch")
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits, loss = self._forward_loss(model, x, y)
            if self.dist is None:
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"loss is {loss.item()} in {self.stage} epoch {self.epoch + 1}")
                opt.zero_grad(set_to_none=True)
                self.precision.backward(loss)
            else:
                self._synced_backward(loss)
            self.precision.step(opt)
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            self._trigger("on_batch_end")
        if self.dist is not None:
            total_loss, correct, seen = self.dist.all_sum([total_loss, correct, seen])
            self.dist.broadcast_buffers(self.model)  # e.g. BatchNorm statistics, as rank 0 has them
        return total_loss / seen, correct / seen

    def _synced_backward(self, loss) -> None:
        """DDP backward; the loss summed over ranks decides a NaN stop, so all ranks stop together."""
        total, work = self.dist.all_sum_async(loss)  # overlaps with the gradient all-reduce
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        work.wait()
        mean = total.item() / self.dist.world_size
        if not math.isfinite(mean):
            raise NonFiniteLoss(f"loss is {mean} in {self.stage} epoch {self.epoch + 1}")

    # -- speed: precision, layout, compilation, on-device data ----------------------------
    def _setup_speed(self, model_factory) -> None:
        """Check the speed options, then set up precision, model layout and the data source."""
        cfg = self.config
        check_options(cfg.amp, cfg.compile, self.device)
        self.precision = Precision(cfg.amp, self.device)
        warning = precision_warning(cfg.amp, self.device)
        if warning:
            self.log(warning)
        self.model_factory = lambda: place_model(model_factory(), cfg.channels_last)
        self.train_data, self.test_data = self.data.train, self.data.test
        if cfg.device_data and self.dist is None:  # torchrun ranks keep their samplers
            self.train_data = on_device(self.data.train, self.device)
            self.test_data = on_device(self.data.test, self.device)

    def _forward_loss(self, model: nn.Module, x, y):
        """fp32 logits and the loss of one batch, computed under the run's autocast."""
        x = place_input(x, self.config.channels_last)
        with self.precision.autocast():
            logits = model(x).float()
            return logits, self._loss(logits, x, y)

    def _evaluate(self, model: nn.Module) -> float:
        """Test accuracy; under torchrun every rank scores its shard and the counts are summed."""
        with self.precision.autocast():
            if self.dist is None:
                return evaluate(model, self.test_data, self.device)
            return self.dist.evaluate(model, self.data.test, self.device)

    def _loss(self, logits, x, y):
        if self.stage == "pretrain":
            return F.cross_entropy(logits, y)
        s = self.config.search if self.stage == "search" else self.config.finetune
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        if self.config.recipe == "official":
            loss = official_kd_loss(logits, teacher_logits, y, s.temperature)
        else:
            loss = kd_loss(logits, teacher_logits, y, s.temperature, s.kd_weight)
        if self.stage == "search":
            loss = loss + self.lam * self._gate_penalty()
        return loss

    def _search_done(self) -> bool:
        if self.latency is not None:
            return self.stage == "search" and self.prev_count is not None and self._within_latency()
        return self.stage == "search" and self.prev_count is not None and self.prev_count <= self.budget

    # -- stage transitions -----------------------------------------------------------
    def _start(self) -> None:
        torch.manual_seed(self.config.seed)
        self.model = self.model_factory().to(self.device)
        if self.dist is not None:  # data augmentation draws differently on each rank
            torch.manual_seed(self.config.seed + 1_000_003 * (self.dist.rank + 1))
        self.site_totals = relu_counts(self.model, self.example_input)
        self.total = relu_total = sum(s.total for s in self.site_totals)
        self._probe_gates()  # a model that cannot be gated is refused now, not after pretraining
        if self.config.compile and self.mechanism[0] == "runtime":
            self.log("warning: --compile: this model is gated at run time (torch.fx cannot trace "
                     "it faithfully), which torch.compile cannot run; pretraining is compiled, "
                     "the search and finetuning run eagerly")
        if self.config.latency_budget is None:
            self.budget = resolve_budget(relu_total, self.config.budget, self.config.budget_fraction)
        else:
            self.budget = self._setup_latency()
        if self.config.search.exclude:
            self._add_gates(self.model)
            try:
                self._check_excluded(self.model)
            finally:
                remove_gates(self.model)
        self.allocation = self._plan_allocation()  # a bad allocation fails before any training
        if self.out_dir is not None and self.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._path("metrics.jsonl").write_text("")
        self._make_optimizer()
        training_only = sum(s.total for s in self.training_only)
        self.log(f"{self.data.name}: {len(self.data.train)} train / {len(self.data.test)} test; "
                 f"{self.config.model} with {relu_total} ReLUs, budget {self.budget}"
                 + (f" (the most a network within the latency budget of "
                    f"{self.config.latency_budget:g} s keeps)" if self.latency is not None else "")
                 + (f" ({training_only} more run only in training, not counted)" if training_only else ""))
        self._checkpoint()

    def _advance(self) -> None:
        """Leave the current stage: log it, set up the next one, checkpoint."""
        acc = self.last_record.get("test_accuracy")
        if self.stage == "pretrain":
            self.log(f"pretrain: {self.epoch} epochs, test accuracy {acc:.4f}" if acc is not None
                     else "pretrain: 0 epochs")
            self.teacher = self._frozen(self.model)
            if self.config.search.from_scratch:
                self.model = self.model_factory().to(self.device)
            self._add_gates(self.model)
            self._check_excluded(self.model)
            self.lam, self.prev_count = self.config.search.lam, self._relu_count()
            self.stage = "search"
        elif self.stage == "search":
            self.relu_count_before = self.prev_count
            self.budget_reached = self._search_done()
            if self.latency is not None:
                self.log(self._latency_line("search: " + ("budget reached" if self.budget_reached else
                                                          "budget NOT reached") + f" after {self.epoch} epochs"))
            elif self.budget_reached:
                self.log(f"search: budget reached after {self.epoch} epochs: {self.prev_count} "
                         f"ReLUs <= {self.budget}, lambda {self.lam:.3g}, test accuracy "
                         + ("n/a" if acc is None else f"{acc:.4f}"))
            else:
                self.log(f"search: budget NOT reached after the maximum of {self.epoch} epochs "
                         f"({self.prev_count} ReLUs > {self.budget}); binarization keeps only "
                         f"the {self.budget} largest gates")
            self._binarize()
            freeze_gates(self.model)
            counts = self._site_counts()
            if self.latency is None:
                self.log(f"binarized: {sum(s.kept for s in counts)} of "
                         f"{sum(s.total for s in counts)} ReLUs kept")
            else:
                self.log(self._latency_line("binarized"))
            self.stage = "finetune"
        else:
            self._keep_best()
            self.log(f"finetune: {self.epoch} epochs, test accuracy {self._evaluate(self.model):.4f}")
            self.stage = "done"
        self.epoch = 0
        self._make_optimizer()
        self._checkpoint()

    def _frozen(self, model: nn.Module) -> nn.Module:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def _add_gates(self, model: nn.Module) -> None:
        s = self.config.search
        add_gates(model, granularity=s.granularity, variant=s.variant, exclude=tuple(s.exclude),
                  example_input=self.example_input)

    def _make_optimizer(self) -> None:
        cfg = self.config
        if self.stage == "pretrain":
            p = cfg.pretrain
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=p.lr, momentum=p.momentum,
                                             weight_decay=p.weight_decay, foreach=True)
        elif self.stage == "search":
            s = cfg.search
            self.optimizer = torch.optim.Adam(
                [{"params": weight_parameters(self.model), "weight_decay": s.weight_decay},
                 {"params": gate_parameters(self.model), "weight_decay": 0.0}], lr=s.lr, foreach=True)
        elif self.stage == "finetune":
            f = cfg.finetune
            self.optimizer = torch.optim.SGD(weight_parameters(self.model), lr=f.lr,
                                             momentum=f.momentum, weight_decay=f.weight_decay,
                                             foreach=True)
        else:
            self.optimizer = None
        self.train_module = self.model
        if self.dist is not None and self.optimizer is not None:
            self.train_module = self.dist.wrap(self.model, self.example_input)
        if self.config.compile and self.optimizer is not None and not self._runtime_gated():
            self.train_module = CompiledForBatch(self.train_module)

    def _runtime_gated(self) -> bool:
        """The model is gated at run time (not traceable by torch.fx): torch.compile cannot
        run its call-site interceptor, so --compile leaves its gated stages eager."""
        return is_gated(self.model) and gating_mechanism(self.model)[0] == "runtime"

    def _probe_gates(self) -> None:
        """Gate the model once and remove the gates again: refuses a model with nothing to gate
        or an activation that cannot be covered (GatingError) before any training, and notes
        the sites that run only in training, unsupported activations and the mechanism."""
        self._add_gates(self.model)
        try:
            self.training_only = training_only_counts(self.model)
            self.unsupported = unsupported_activations(self.model)
            self.mechanism = gating_mechanism(self.model)
        finally:
            remove_gates(self.model)

    def _site_counts(self) -> list:
        """Per-site counts of what runs at inference; excluded sites count all theirs as kept."""
        if not is_gated(self.model):
            return list(self.site_totals)  # an ungated model keeps every ReLU
        return relu_counts(self.model, self.example_input, self.config.search.epsilon)

    def _excluded_relus(self, model=None) -> int:
        """ReLUs at the sites of a gated model that are left plain (``exclude``)."""
        model = model if model is not None else self.model
        gated = {name for name, _ in gate_sites(model)}
        return sum(s.total for s in relu_counts(model, self.example_input) if s.name not in gated)

    def _check_excluded(self, model) -> None:
        excluded = self._excluded_relus(model)
        if excluded > self.budget:
            raise BudgetError(f"the excluded sites alone keep {excluded} ReLUs, "
                              f"more than the budget {self.budget}")

    def _relu_count(self) -> int:
        count = sum(s.kept for s in self._site_counts())
        return count if self.dist is None else self.dist.agreed_int(count, "the ReLU count")

    # -- recipes (snl_train.recipes) -----------------------------------------------------
    def _hold_out(self):
        """Official recipe: take the validation split out of ``self.data.train``.

        Returns ``(validation dataset, its indices in the original training set)``, both
        None for the paper recipe or a validation fraction of 0.
        """
        cfg = self.config
        if cfg.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {cfg.recipe!r}; expected one of {', '.join(RECIPES)}")
        if cfg.recipe != "official" or cfg.validation_fraction == 0:
            return None, None
        n = len(self.data.train)
        held_out = validation_indices(n, cfg.validation_fraction, cfg.seed)
        train, validation = split_dataset(self.data.train, held_out)
        self.data = dataclasses.replace(self.data, train=train)
        self.log(f"official recipe: {len(held_out)} of {n} training samples held out to choose "
                 f"the best finetuning epoch")
        return validation, held_out

    def _next_lambda(self, count: int) -> float:
        """lambda for the next search epoch, by the recipe's rule (self.epoch: this epoch, 0-based)."""
        s = self.config.search
        if self.config.recipe != "official":
            return next_lambda(self.lam, count, self.prev_count, s.kappa)
        lowest = self.total if self.lowest_count is None else self.lowest_count
        lam, self.lowest_count = official_next_lambda(self.lam, count, lowest, self.epoch, s.kappa)
        return lam

    def _track_best(self, record: dict) -> None:
        """Official recipe: remember the best finetuning epoch by validation and by test accuracy."""
        epoch = self.epoch + 1
        if self.validation is not None:
            if self.dist is None:
                acc = evaluate(self.model, self.validation, self.device)
            else:
                acc = self.dist.evaluate(self.model, self.validation, self.device)
            record["validation_accuracy"] = acc
            if better(acc, self.best.get("validation")):
                state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.best["validation"] = {"epoch": epoch, "accuracy": acc,
                                           "test_accuracy": record["test_accuracy"], "state": state}
        if better(record["test_accuracy"], self.best.get("test")):
            self.best["test"] = {"epoch": epoch, "accuracy": record["test_accuracy"]}

    def _keep_best(self) -> None:
        """Official recipe: end finetuning with the weights of the best validation epoch."""
        best = self.best.get("validation")
        if self.config.recipe == "official" and best is not None:
            self.model.load_state_dict(best["state"])
            self.log(f"finetune: keeping epoch {best['epoch']}, the best validation accuracy "
                     f"({best['accuracy']:.4f} on {len(self.validation)} held-out samples)")

    def _recipe_state(self) -> dict:
        return {"lowest_count": self.lowest_count, "validation_indices": self.validation_indices,
                "best": self.best}

    def _restore_recipe(self, state: dict) -> None:
        saved = state["config"].get("recipe", "paper")
        if saved != self.config.recipe:
            raise CheckpointError(f"checkpoint is for --recipe {saved}, this run has "
                                  f"--recipe {self.config.recipe}")
        extra = state.get("recipe") or {}
        held_out = extra.get("validation_indices")
        mine = self.validation_indices
        if (held_out is None) != (mine is None) or (mine is not None and not torch.equal(held_out, mine)):
            raise CheckpointError("checkpoint was made with another validation split (another "
                                  "validation fraction or training set)")
        self.lowest_count, self.best = extra.get("lowest_count"), extra.get("best") or {}

    def _recipe_report(self) -> dict:
        """result.json's recipe fields; for official, how the finetuning epoch was chosen."""
        cfg = self.config
        if cfg.recipe != "official":
            return {"recipe": cfg.recipe}
        chosen, by_test = self.best.get("validation"), self.best.get("test")
        selection = {"selected_on": "validation split" if chosen else "last epoch",
                     "validation_fraction": cfg.validation_fraction,
                     "validation_size": 0 if self.validation is None else len(self.validation),
                     "train_size": len(self.data.train),
                     "epoch": chosen["epoch"] if chosen else cfg.finetune.epochs,
                     "validation_accuracy": chosen["accuracy"] if chosen else None}
        test_selected = None if by_test is None else {
            "epoch": by_test["epoch"], "test_accuracy": by_test["accuracy"],
            "note": "best finetuning epoch chosen ON THE TEST SET, as the public code reports "
                    "it; optimistic, for comparison with published numbers only"}
        return {"recipe": "official", "finetune_selection": selection,
                "test_selected": test_selected}
    # -- fixed allocations (--allocation) ------------------------------------------------
    def _plan_allocation(self) -> dict:
        """The allocation report: for a fixed allocation its per-site quotas, worked out on a
        gated copy of the model; for ``learned`` (SNL's own choice) no quotas."""
        cfg = self.config
        if cfg.allocation == "learned":
            return {"allocation": "learned", "kind": "learned", "quotas": None}
        if cfg.allocation == "paper" and (cfg.model != "mlp" or len(cfg.widths) != 2):
            raise AllocationError(f"--allocation paper needs a two-hidden-layer MLP (--model mlp "
                                  f"--widths D1,D2); this run has --model {cfg.model} with "
                                  f"widths {','.join(map(str, cfg.widths))}")
        probe = copy.deepcopy(self.model)  # a copy, not a new model: the seeded RNG stays as it is
        if not is_gated(probe):
            self._add_gates(probe)
        sites = allocation_sites(probe, self.example_input, cfg.search.epsilon)
        plan = plan_allocation(cfg.allocation, sites, self.budget - self._excluded_relus(probe),
                               self.latency)
        report = {"allocation": cfg.allocation, "kind": plan.kind, "quotas": plan.quotas(sites),
                  "total": plan.total, "budget": plan.budget, "ties": plan.ties, "rule": plan.rule}
        self.log(f"allocation {cfg.allocation}: keeps {plan.total} ReLUs as "
                 + ", ".join(f"{name} {k}" for name, k in report["quotas"].items()))
        return report

    def _binarize(self) -> None:
        """c := 1(c > epsilon) within the budget (learned), or exactly the allocation's quotas."""
        learned = self.allocation is None or self.allocation["quotas"] is None
        if learned and self.latency is not None:
            from .latency import binarize_within_latency
            binarize_within_latency(self.model, self.latency, self.config.search.epsilon,
                                    self.example_input)
        elif learned:
            binarize_within_budget(self.model, self.budget - self._excluded_relus(),
                                   self.config.search.epsilon, self.example_input)
        else:
            binarize_to_quotas(self.model, self.allocation["quotas"], self.config.search.epsilon,
                               self.example_input)

    def _restore_allocation(self, state: dict) -> None:
        """A resumed run keeps its allocation: same --allocation, the quotas it planned."""
        saved = state["config"].get("allocation", "learned")
        if saved != self.config.allocation:
            raise CheckpointError(f"checkpoint is for --allocation {saved}, this run has "
                                  f"--allocation {self.config.allocation}")
        self.allocation = state.get("allocation") or self._plan_allocation()

    # -- latency budgets (--latency-budget; snl_train.latency) ------------------------------
    def _setup_latency(self) -> int:
        """Price the network's layers for the latency budget; return the ReLU budget it implies
        (the most ReLUs a binarization within it can keep). BudgetError, before any training,
        for a budget below the linear layers' cost or a network the cost model cannot price."""
        from .latency import latency_plan

        cfg, probe = self.config, copy.deepcopy(self.model)
        if not is_gated(probe):
            self._add_gates(probe)
        try:
            self.latency = latency_plan(probe, self.example_input, cfg.latency_budget, cfg.network,
                                        cfg.cost_profile, cfg.search.epsilon)
        except ValueError as exc:
            raise BudgetError(str(exc)) from None
        return self.latency.relu_budget()

    def _gate_penalty(self):
        """The search's penalty before lambda: sum |c|, plus the per-site group term under a
        latency budget (snl_train.latency.gate_penalty)."""
        if self.latency is None:
            return sum(p.abs().sum() for p in gate_parameters(self.model))
        from .latency import gate_penalty, group_weight

        return gate_penalty(self.model, group_weight(self.latency, self.config.group_penalty))

    def _within_latency(self) -> bool:
        """The network binarized as it stands (c > epsilon kept) is estimated within the budget."""
        return self.latency.estimate(self._site_counts()) <= self.latency.budget

    def _latency_line(self, what: str) -> str:
        counts = self._site_counts()
        lat = self.latency
        return (f"{what}: estimated {float(lat.estimate(counts)):.4f} s on {lat.network} (budget "
                f"{float(lat.budget):.4f} s), {sum(s.kept for s in counts)} ReLUs in "
                f"{sum(1 for s in counts if s.kept)} of {len(counts)} sites")

    def _latency_report(self, counts) -> dict:
        """result.json's ``latency_budget``: the estimate and, for comparison, capacity's
        latency optimum for the gated sites' widths (sharp bound, claim c20)."""
        from capacity.latency import latency_sharp_optimum

        report = self.latency.report(counts)
        report.update(group_penalty=self.config.group_penalty, reached_by_search=self.budget_reached)
        gated = [s for s, (_, _, g) in zip(counts, self.latency.sites) if g]
        try:
            opt = latency_sharp_optimum([s.total for s in gated], self.latency.budget,
                                        self.latency.gated_cost)
            report["predicted_sharp"] = {"integer_retained": list(max(opt.integer_retained)),
                                         "integer_ties": opt.integer_ties,
                                         "active_sites": [gated[i].name for i in opt.always_active]}
        except (ValueError, ArithmeticError) as exc:
            report["predicted_sharp"] = {"error": str(exc)}
        return report

    # -- persistence --------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.out_dir / name

    def _end_epoch(self, record: dict) -> None:
        self.last_record = record
        if self.out_dir is not None:
            if self.writes:
                with open(self._path("metrics.jsonl"), "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.metrics_lines += 1
        self._checkpoint()
        self._trigger("on_epoch_end")

    def _checkpoint(self) -> None:
        if self.out_dir is None:
            return
        rng_ranks = self.dist.gather_rng() if self.dist is not None else None  # every rank joins
        if not self.writes:
            return
        extra = {} if rng_ranks is None else {"rng_ranks": rng_ranks, "world_size": self.dist.world_size}
        save_checkpoint({
            "format": FORMAT, "stage": self.stage, "epoch": self.epoch,
            "config": self.config.to_dict(), "model": self.model.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "lam": self.lam, "prev_count": self.prev_count, "total": self.total,
            "budget": self.budget, "relu_count_before": self.relu_count_before,
            "budget_reached": self.budget_reached, "last_record": self.last_record,
            "metrics_lines": self.metrics_lines, "rng": rng_state(self.device),
            "recipe": self._recipe_state(), "allocation": self.allocation,
            "scaler": self.precision.state_dict(), **extra,
        }, self._path("checkpoint.pt"))

    def _restore(self, state: dict) -> None:
        """Continue from a checkpoint of the same run; CheckpointError (one line) when it was
        written with options that change the result, or is corrupt in a way loading shows."""
        path = self._path("checkpoint.pt") if self.out_dir is not None else "checkpoint"
        self._check_same_run(state.get("config"), path)
        try:
            self._restore_state(state)
        except CheckpointError as exc:
            raise CheckpointError(f"corrupt or incompatible checkpoint {path}: {exc}") from None
        except (ArithmeticError, AttributeError, IndexError, KeyError, RuntimeError, TypeError,
                ValueError) as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            raise CheckpointError(f"corrupt or incompatible checkpoint {path}: "
                                  f"{type(exc).__name__}: {first.strip()}") from None

    def _check_same_run(self, config, path) -> None:
        """Refuse to resume with an option that changes the result, naming the option."""
        try:
            saved = RunConfig.from_dict(config).to_dict()
        except (AttributeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"corrupt or incompatible checkpoint {path}: its config: "
                                  f"{exc}") from None
        for key, old, new in _config_differences(saved, self.config.to_dict()):
            raise CheckpointError(
                f"{path} was written with {_option_name(key)} {_shown(old)}, this run has "
                f"{_shown(new)}: resume with the same value, or start over with --overwrite")

    def _restore_state(self, state: dict) -> None:
        """Models, optimizer, counters and RNG from ``state``; metrics.jsonl cut to match."""
        if state["stage"] not in STAGES:
            raise CheckpointError(f"unknown stage {state['stage']!r}")
        self.stage, self.epoch = state["stage"], int(state["epoch"])
        self.model = self.model_factory().to(self.device)
        self.site_totals = relu_counts(self.model, self.example_input)
        self._probe_gates()
        if state.get("teacher") is not None:
            self.teacher = self.model_factory().to(self.device)
            self._load(self.teacher, state["teacher"], "teacher")
            self.teacher = self._frozen(self.teacher)
        if self.stage != "pretrain":
            self._add_gates(self.model)
        self._load(self.model, state["model"], "model")
        if self.stage in ("finetune", "done"):
            freeze_gates(self.model)
        for key in ("lam", "prev_count", "total", "budget", "relu_count_before",
                    "budget_reached", "last_record", "metrics_lines"):
            setattr(self, key, state[key])
        if self.config.latency_budget is not None:
            self.budget = self._setup_latency()
        self._restore_recipe(state)
        self._restore_allocation(state)
        self._make_optimizer()
        self.precision.load_state_dict(state.get("scaler"))
        if self.optimizer is not None and state["optimizer"] is not None:
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"its optimizer state does not fit this run: {exc}") from None
        ranks = state.get("rng_ranks")
        if self.dist is not None and ranks is not None and len(ranks) == self.dist.world_size:
            self.dist.set_rng(ranks[self.dist.rank])
        else:
            set_rng_state(state["rng"], self.device)
        if self.writes:  # last: a checkpoint that fails to load leaves the metrics as they were
            self._truncate_metrics()
        self.log(f"resumed from {self._path('checkpoint.pt')}: {self.stage} after epoch {self.epoch}")

    def _load(self, model: nn.Module, state_dict: dict, what: str) -> None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"its {what} does not fit this model: {first}") from None

    def _truncate_metrics(self) -> None:
        path = self._path("metrics.jsonl")  # bytes: a line is a line, whatever its encoding
        lines = path.read_bytes().splitlines(keepends=True) if path.exists() else []
        path.write_bytes(b"".join(lines[:self.metrics_lines]))

    # -- the result ----------------------------------------------------------------------
    def _result(self) -> dict:
        cfg = self.config
        counts = self._site_counts()
        kept = sum(s.kept for s in counts)
        latency = online_latency(self.model, self.example_input, kept, cfg.latency_per_1000)
        result = {
            "relu_budget": self.budget, "relu_count": kept,
            "relu_count_before": self.relu_count_before, "relu_total": self.total,
            "budget_reached_by_search": self.budget_reached,
            "per_layer": [{"name": s.name, "family": s.family, "total": s.total, "kept": s.kept}
                          for s in counts],
            # Secure comparisons under MPC: 1 per ReLU / LeakyReLU, 2 per ReLU6 / Hardtanh.
            "activation_families": comparison_costs(counts),
            "training_only_sites": [{"name": s.name, "family": s.family, "total": s.total}
                                    for s in self.training_only],
            "unsupported_activations": self.unsupported,
            "gating": {"mechanism": self.mechanism[0], "reason": self.mechanism[1]},
            "test_accuracy": self._evaluate(self.model),
            "teacher_test_accuracy": self._evaluate(self.teacher),
            "online_latency_s": latency["total_seconds"],
            "latency": latency, "final_lambda": self.lam, "config": cfg.to_dict(),
        }
        result.update(self._recipe_report())
        result["allocation"] = self.allocation
        if self.latency is not None:
            result["latency_budget"] = self._latency_report(counts)
        elif cfg.model == "mlp" and len(counts) == 2:
            result.update(retention_report(counts, self.budget))
        if self.dist is not None:
            result["distributed"] = self._replica_report(kept)
        if self.out_dir is not None and self.writes:
            self._path("result.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

    def _replica_report(self, kept: int) -> dict:
        """World size, backend and each rank's final model digest (equal digests: equal replicas)."""
        self.dist.agreed_int(kept, "the final ReLU count")
        digests = self.dist.gather_digests(self.model.state_dict())
        if len(set(digests)) != 1:
            self.log(f"warning: the {len(digests)} ranks ended with different models")
        return {"world_size": self.dist.world_size, "backend": self.dist.backend,
                "replicas_identical": len(set(digests)) == 1, "state_digests": digests}


#: Config entries that do not change a run's result: a resumed run may set them differently.
RESUME_FREE = ("device", "threads", "num_workers", "data_dir", "compile", "channels_last")
#: The command-line option behind a config entry, where it is not ``--`` + the entry's name
#: with dashes (``allocation`` -> ``--allocation``); nested entries without one are named as
#: config entries (``search.momentum``).
OPTION_NAMES = {
    "latency_per_1000": "config entry latency_per_1000",
    "device_data": "on-device data (off with --host-data)",
    "search.lam": "--lambda", "search.kappa": "--kappa", "search.epsilon": "--epsilon",
    "search.lr": "--lr", "search.max_epochs": "--search-epochs",
    "search.granularity": "--granularity", "search.variant": "--variant",
    "search.from_scratch": "--from-scratch", "search.exclude": "--exclude",
    "pretrain.epochs": "--pretrain-epochs", "pretrain.lr": "--pretrain-lr",
    "pretrain.milestones": "--milestones", "finetune.epochs": "--finetune-epochs",
    "finetune.lr": "--finetune-lr", "pretrain.batch_size": "--batch-size",
    "search.batch_size": "--batch-size", "finetune.batch_size": "--batch-size",
}


def _flat_defaults(doc: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(_flat_defaults(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


_DEFAULTS = _flat_defaults(RunConfig().to_dict())


def _config_differences(saved: dict, mine: dict, prefix: str = ""):
    """(key, saved value, this run's value) for every result-changing entry that differs."""
    for key in [*mine, *(k for k in saved if k not in mine)]:
        name = prefix + key
        if name in RESUME_FREE:
            continue
        old, new = saved.get(key), mine.get(key)
        if key not in saved and new == _DEFAULTS.get(name):
            continue  # an option newer than the checkpoint, left at its default
        if isinstance(old, dict) and isinstance(new, dict):
            yield from _config_differences(old, new, name + ".")
        elif old != new:
            yield name, old, new


def _option_name(key: str) -> str:
    if key in OPTION_NAMES:
        return OPTION_NAMES[key]
    return f"config entry {key}" if "." in key else "--" + key.replace("_", "-")


def _shown(value) -> str:
    if value is None:
        return "(not given)"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or '""'
    return str(value)


def retention_report(counts, budget: int) -> dict:
    """Learned retention a_l = kept/total of a two-hidden-layer MLP next to capacity's optima."""
    from capacity.exact import exact_str
    from capacity.optimum import paper_optimum, sharp_optimum

    d1, d2 = counts[0].total, counts[1].total
    report = {"learned_alpha": [counts[0].kept / d1, counts[1].kept / d2],
              "learned_retained": [counts[0].kept, counts[1].kept], "predicted": {}}
    for name, fn in (("paper", lambda: paper_optimum(d1, d2, budget)),
                     ("sharp", lambda: sharp_optimum((d1, d2), budget))):
        try:
            opt = fn()
        except (ValueError, ArithmeticError) as exc:
            report["predicted"][name] = {"error": str(exc)}
            continue
        report["predicted"][name] = {
            "alpha": [exact_str(a) for a in opt.alpha],
            "alpha_float": [float(a) for a in opt.alpha],
            "retained": [exact_str(r) for r in opt.retained],
            "retained_float": [float(r) for r in opt.retained],
            "integer_retained": [list(map(int, t)) for t in opt.integer_retained],
            "integer_value": int(opt.integer_value),
            "value": exact_str(opt.value),  # the capacity bound at the continuous optimum
        }
        if name == "paper":
            report["predicted"][name].update(interior=bool(opt.interior), active=str(opt.active))
    return report
