"""Experiments that test the capacity theory on trained networks; results for ``figures``.

Four experiments, each a sweep of independent runs executed in parallel worker processes
(one torch thread each) and written to one JSON file (plus a CSV for the retention runs):

- ``retention``: two-hidden-layer contractive MLPs (d1 = ratio * d2) on digits and on a
  random-label memorization set, pretrained, then SNL (Algorithm 1) at budgets on both
  sides of the region where Theorem 2's closed form is feasible. Per run: learned a1, a2,
  accuracy, the paper's optimum and the sharp-bound optimum; then the error of each
  prediction per setting and overall (``figures.stats``).
- ``capacity``: for small widths (d1, d2) and kept counts (x, y), the largest number N of
  collinear alternating-label points that (a) each bound allows, (b) a witness network of
  ``capacity.witnesses`` fits exactly, (c) gradient training fits (several restarts, the
  fit checked on the exact labels), for linearized and for pruned networks.
- ``distribution``: ReLUs per layer before and after SNL at several budgets (the paper's
  Figure 4); a small ConvNet on digits by default, ResNet-18 on CIFAR-100 with
  ``--model resnet18 --dataset cifar100 --data-dir DIR``.
- ``pareto``: accuracy against ReLU count on digits for pixel-wise SNL, channel-wise SNL
  and l1-magnitude structured pruning (whole channels / neurons) at the same budgets.

Command line::

    python -m snl_train.experiments retention [--quick] [--seeds N] [--jobs N] \\
        --out figures/data/retention.json
    python -m snl_train.experiments retention --grid robustness --recipe paper,official \\
        --lambda-scale 0.1,1,10 --out figures/data/retention_recipes.json

The second form repeats part of the retention sweep under both training recipes
(``snl_train.recipes``) and with lambda 10x smaller and larger, and summarises per condition
where the learned allocation lies between the two predicted optima (``figures.stats.position``).

Every run builds its own model, data and trainer from a plain dict ("spec"), so a sweep
is a list of specs mapped over a process pool; results keep the spec's fields.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from capacity.cli import (CommandParser, UsageError, check_input_dir, check_output_file, command,
                          integer, integer_list, shown, write_text_atomic)

EXPERIMENTS = ("retention", "capacity", "distribution", "pareto", "allocation", "latency")


# ----------------------------------------------------------------------------- sweeps

DEFAULT_BUDGETS = (8, 16, 24, 40, 56)
BASE_LAMBDA = 1e-4  # the retention sweep's initial lambda (its networks are small)
#: (widths, budget) of ``--grid robustness``: width ratios 1, 2, 4, 8, each at one budget where
#: the paper's and the sharp optimum differ, below Theorem 2's feasible region (8: the
#: paper's a2 clamps to 0) and inside it (24, 40, 16); the cheaper budget per ratio where
#: the full sweep offers a choice.
ROBUSTNESS_SETTINGS = (((16, 16), 8), ((32, 16), 24), ((64, 16), 40), ((128, 16), 16))


def retention_specs(quick: bool = False, seeds: int | None = None,
                    recipes: Sequence[str] = ("paper",), lambda_scales: Sequence[float] = (1.0,),
                    grid: str = "full") -> list[dict]:
    """The retention sweep: datasets x width ratios x budgets x seeds.

    Default: d2 = 16, d1 in {16, 32, 64, 128} (ratios 1, 2, 4, 8), the budgets of
    ``DEFAULT_BUDGETS`` below d1 + d2, digits and a 256-point random-label set, 3 seeds.
    The paper's closed form is feasible for d2 - 1 <= B <= min(3 d2 - 1, 2 d1 - d2 + 1):
    at B = 16 for every ratio, at 24 and 40 for ratios >= 2; it is infeasible at B = 8
    (a2 clamps to 0), at 24 for ratio 1 and at 56 (a2 clamps to 1). Quick: one tiny
    setting, 2 seeds.

    Every setting runs under each recipe of ``recipes`` ("paper", "official") and each
    initial lambda ``BASE_LAMBDA * scale`` for ``scale`` in ``lambda_scales``; ``grid``
    "robustness" keeps only :data:`ROBUSTNESS_SETTINGS` (on both datasets).
    """
    if grid not in ("full", "robustness"):
        raise ValueError(f"unknown grid {grid!r}; expected full or robustness")
    if quick:
        settings = [("random", (8, 4), 6), ("random", (16, 4), 6)]
        seeds = 2 if seeds is None else seeds
        epochs = {"pretrain": 3, "search": 25, "finetune": 1}
    else:
        settings = [(ds, (r * 16, 16), b) for ds in ("digits", "random") for r in (1, 2, 4, 8)
                    for b in DEFAULT_BUDGETS if b < (r + 1) * 16]
        if grid == "robustness":
            settings = [(ds, w, b) for ds in ("digits", "random") for w, b in ROBUSTNESS_SETTINGS]
        seeds = 3 if seeds is None else seeds
        epochs = {"pretrain": 30, "search": 300, "finetune": 20}
    return [{"experiment": "retention", "model": "mlp", "dataset": ds, "widths": list(w),
             "budget": b, "seed": s, "epochs": epochs, "recipe": recipe,
             "lambda_scale": scale, "lam": float(f"{BASE_LAMBDA * scale:.12g}"),
             "random_n": 64 if quick else 256}
            for recipe in recipes for scale in lambda_scales
            for ds, w, b in settings for s in range(seeds)]


def capacity_specs(quick: bool = False, seeds: int | None = None) -> list[dict]:
    """Capacity sweep: widths (d1, d2), every kept (x, y) with 1 <= x <= d1, 1 <= y <= d2,
    linearized and pruned. ``seeds`` is the number of training restarts per N."""
    d1, d2 = (2, 1) if quick else (4, 3)
    restarts = seeds if seeds is not None else (4 if quick else 16)
    steps = 400 if quick else 3000
    return [{"experiment": "capacity", "widths": [d1, d2], "x": x, "y": y, "kind": kind,
             "restarts": restarts, "steps": steps}
            for x in range(1, d1 + 1) for y in range(1, d2 + 1) for kind in ("linearized", "pruned")]


def distribution_specs(quick: bool = False, seeds: int | None = None, model: str = "convnet",
                       dataset: str = "digits", data_dir: str | None = None,
                       budgets: Sequence[int] | None = None) -> list[dict]:
    """SNL (pixel-wise) at several budgets; per-layer counts before and after.

    Default: a ConvNet (width 8) on digits at budgets 30, 100, 300 with 3 seeds; other
    models get the paper's schedule and one seed unless ``seeds`` says otherwise."""
    if seeds is None:
        seeds = 1 if quick or model != "convnet" else 3
    if budgets is None:
        budgets = {"convnet": (30,) if quick else (30, 100, 300),
                   "resnet18": (20000, 50000, 100000, 200000, 300000)}.get(model, (100,))
    width = [4] if quick else [8]
    epochs = ({"pretrain": 2, "search": 15, "finetune": 1} if quick
              else {"pretrain": 30, "search": 300, "finetune": 20})
    if model != "convnet" or dataset != "digits":
        epochs = None  # the paper's schedule (RunConfig defaults)
    return [{"experiment": "distribution", "model": model, "dataset": dataset,
             "data_dir": data_dir, "widths": width, "budget": b, "seed": s, "epochs": epochs,
             "lam": 1e-4, "method": "pixel"}
            for b in budgets for s in range(seeds)]


def pareto_specs(quick: bool = False, seeds: int | None = None) -> list[dict]:
    """Pixel-wise SNL, channel-wise SNL and l1 structured pruning on a digits ConvNet
    (budgets 96, 192, 384; 3 seeds by default, 1 with ``quick``)."""
    if seeds is None:
        seeds = 1 if quick else 3
    budgets = (60,) if quick else (96, 192, 384)
    width = [4] if quick else [8]
    epochs = ({"pretrain": 2, "search": 15, "finetune": 1} if quick
              else {"pretrain": 30, "search": 300, "finetune": 20})
    return [{"experiment": "pareto", "model": "convnet", "dataset": "digits", "data_dir": None,
             "widths": width, "budget": b, "seed": s, "epochs": epochs, "lam": 1e-4,
             "method": m}
            for m in ("pixel", "channel", "l1-prune") for b in budgets
            for s in range(seeds)]


# ----------------------------------------------------------------------------- allocation

#: Budgets of the allocation sweep per width ratio d1/d2 (d2 = 16): below Theorem 2's feasible
#: region (8 < d2 - 1), inside it (16; 40 for ratios >= 2) and above it (24 at ratio 1, 56).
ALLOCATION_BUDGETS = {1: (8, 16, 24), 2: (8, 16, 40), 4: (8, 16, 40, 56), 8: (8, 16, 40, 56)}
THREE_LAYER_WIDTHS, THREE_LAYER_BUDGETS = (64, 32, 16), (12, 24, 48)


def allocation_specs(quick: bool = False, seeds: int | None = None) -> list[dict]:
    """The allocation sweep: one spec per (dataset, widths, budget, seed), each run under every
    allocation from one shared pretraining and search (:func:`run_allocation`).

    Default: two-hidden-layer MLPs d2 = 16, d1/d2 in {1, 2, 4, 8} at ``ALLOCATION_BUDGETS``
    (learned, paper, sharp, uniform) and a (64, 32, 16) MLP at 12, 24, 48 ReLUs (learned,
    sharp, uniform), on digits and on 256 random-label points, 3 seeds. Quick: two tiny
    random-label settings, 2 seeds, a few epochs.
    """
    every, no_paper = ["learned", "paper", "sharp", "uniform"], ["learned", "sharp", "uniform"]
    if quick:
        grid = [("random", (8, 4), 5, every), ("random", (6, 4, 4), 6, no_paper)]
        seeds = 2 if seeds is None else seeds
        epochs = {"pretrain": 3, "search": 25, "finetune": 1}
    else:
        grid = [(ds, (r * 16, 16), b, every) for ds in ("digits", "random")
                for r, budgets in ALLOCATION_BUDGETS.items() for b in budgets]
        grid += [(ds, THREE_LAYER_WIDTHS, b, no_paper) for ds in ("digits", "random")
                 for b in THREE_LAYER_BUDGETS]
        seeds = 3 if seeds is None else seeds
        epochs = {"pretrain": 30, "search": 300, "finetune": 20}
    return [{"experiment": "allocation", "model": "mlp", "dataset": ds, "widths": list(w),
             "budget": b, "seed": s, "epochs": epochs, "lam": 1e-4, "allocations": allocs,
             "random_n": 64 if quick else 256}
            for ds, w, b, allocs in grid for s in range(seeds)]


def run_allocation(spec: dict) -> dict:
    """Pretrain and search once, then binarize with each allocation and finetune each alike.

    The ``learned`` run goes through uninterrupted; its checkpoint at the end of the search
    is branched: each other allocation resumes a copy of it with ``allocation`` set, so every
    allocation shares the pretrained network, the search's gate ranking, the finetuning
    seed and schedule (what separate runs with ``--allocation`` would do, since a run is
    deterministic). The branches get as budget the count SNL's own binarization kept (the
    search may end below the budget), so every allocation keeps the same number of ReLUs
    and only which ones differs. Scores: test accuracy and, on the training set, the
    fraction of points fit (for random labels: the fraction memorized).
    """
    import tempfile

    from .trainer import evaluate

    if spec["allocations"][0] != "learned":
        raise ValueError(f"the allocation sweep branches from the learned run: list it first, "
                         f"got {spec['allocations']}")
    start = time.perf_counter()
    record = {**_spec_fields(spec), "allocations": {}}
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "searched.pt"
        kept = None  # ReLUs the learned run kept: the budget of every other allocation
        for name in spec["allocations"]:
            trainer, result = _allocation_run(spec, name, Path(tmp) / name, snapshot, kept)
            kept = result["relu_count"] if name == "learned" else kept
            record["allocations"][name] = {
                "kept": [layer["kept"] for layer in result["per_layer"]],
                "relu_count": result["relu_count"], "test_accuracy": result["test_accuracy"],
                "train_accuracy": evaluate(trainer.model, trainer.data.train, trainer.device),
                "ties": result["allocation"].get("ties")}
            if name == "learned":
                record.update(teacher_test_accuracy=result["teacher_test_accuracy"],
                              teacher_train_accuracy=evaluate(trainer.teacher, trainer.data.train,
                                                              trainer.device),
                              relu_count_before=result["relu_count_before"],
                              budget_reached_by_search=result["budget_reached_by_search"])
    record["region"] = allocation_region(spec["widths"], kept)
    record["seconds"] = time.perf_counter() - start
    return record


def _allocation_run(spec: dict, name: str, out: Path, snapshot: Path, budget: int | None):
    """(trainer, result) of allocation ``name``: ``learned`` runs through and leaves its
    end-of-search checkpoint at ``snapshot``; the others resume a copy of that checkpoint
    with ``budget`` as their budget."""
    import shutil

    from .checkpoint import load_checkpoint, save_checkpoint

    cfg = _run_config(spec)
    cfg.allocation = name
    trainer = _trainer(spec, cfg, out_dir=out)
    if name == "learned":
        def keep_searched(t):
            if t.stage == "search":  # on_stage_end fires before binarization
                shutil.copy(out / "checkpoint.pt", snapshot)
        trainer.add_callback("on_stage_end", keep_searched)
        return trainer, trainer.run()
    state = load_checkpoint(snapshot)
    state["config"]["allocation"], state["allocation"] = name, None  # planned afresh on resume
    state["budget"] = budget
    out.mkdir()
    save_checkpoint(state, out / "checkpoint.pt")
    return trainer, trainer.run(resume=True)


def allocation_summary(runs: Sequence[dict]) -> dict:
    """Paired differences of each allocation's score against ``learned`` (same seed), per
    setting and pooled per (dataset, region of Theorem 2), with 95% t-intervals.

    The score is test accuracy on digits and the memorized fraction (training accuracy) on
    random labels; the region (:func:`allocation_region`) is that of the count every
    allocation of the run kept (SNL's own, which may be below the nominal budget).
    """
    from figures.stats import allocation_score, paired_table

    rows = [{**r, "region": allocation_region(r["widths"], r["allocations"]["learned"]["relu_count"]),
             "scores": {a: allocation_score(r, a) for a in r["allocations"]}} for r in runs]
    return {"paired": paired_table(rows, ("dataset", "widths", "budget"), "learned"),
            "paired_by_region": paired_table(rows, ("dataset", "region"), "learned")}


def allocation_region(widths: Sequence[int], budget: int) -> str:
    """Where ``budget`` lies relative to the region in which Theorem 2's closed form is
    feasible: "below" (B < d2 - 1: a2 clamps to 0), "inside" or "above" for two hidden
    layers; "three layers" for three."""
    from capacity.optimum import closed_form_feasible

    if len(widths) != 2:
        return {3: "three layers"}.get(len(widths), f"{len(widths)} layers")
    if closed_form_feasible(widths[0], widths[1], budget):
        return "inside"
    return "below" if budget < widths[1] - 1 else "above"


# ----------------------------------------------------------------------------- one run

def _run_config(spec: dict):
    from .config import RunConfig, digits_defaults, official_defaults

    cfg = RunConfig(model=spec["model"], widths=tuple(spec["widths"]), dataset=spec["dataset"],
                    data_dir=spec.get("data_dir"), budget=spec["budget"], seed=spec["seed"],
                    threads=1)
    epochs = spec.get("epochs")
    if epochs is not None:
        digits_defaults(cfg)
        cfg.pretrain.epochs = epochs["pretrain"]
        cfg.pretrain.milestones = tuple(m for m in (2 * epochs["pretrain"] // 3,
                                                     5 * epochs["pretrain"] // 6) if m > 0)
        cfg.search.max_epochs, cfg.finetune.epochs = epochs["search"], epochs["finetune"]
    cfg.search.lam = spec.get("lam", cfg.search.lam)
    if spec.get("recipe", "paper") == "official":
        official_defaults(cfg)
        if epochs is not None:  # the sweep's epochs, not the public code's 2000 / 100
            cfg.search.max_epochs, cfg.finetune.epochs = epochs["search"], epochs["finetune"]
    cfg.search.granularity = "channel" if spec.get("method") == "channel" else "pixel"
    return cfg


def _data(spec: dict):
    from .data import load_dataset

    if spec["dataset"] == "random":
        return load_dataset("random", seed=spec["seed"], n=spec.get("random_n", 256), dim=16)
    return load_dataset(spec["dataset"], spec.get("data_dir"), seed=spec["seed"])


def _trainer(spec: dict, cfg=None, out_dir=None):
    from .models import build_model
    from .trainer import Trainer

    cfg = cfg or _run_config(spec)
    data = _data(spec)
    factory = lambda: build_model(spec["model"], data.num_classes, data.in_shape,  # noqa: E731
                                  spec["widths"])
    return Trainer(cfg, factory, data, out_dir=out_dir)


def run_retention(spec: dict) -> dict:
    """One SNL run of a two-hidden-layer MLP; learned and predicted retention."""
    from capacity.optimum import closed_form_feasible

    start = time.perf_counter()
    result = _trainer(spec).run()
    d1, d2 = spec["widths"]
    predicted = {name: result["predicted"][name]["alpha_float"] for name in ("paper", "sharp")}
    return {**_spec_fields(spec), "learned_alpha": result["learned_alpha"],
            "learned_retained": result["learned_retained"], "predicted": predicted,
            "predicted_retained": {n: result["predicted"][n]["retained_float"]
                                   for n in ("paper", "sharp")},
            "closed_form_feasible": closed_form_feasible(d1, d2, spec["budget"]),
            "relu_count": result["relu_count"], "test_accuracy": result["test_accuracy"],
            "teacher_test_accuracy": result["teacher_test_accuracy"],
            "budget_reached_by_search": result["budget_reached_by_search"],
            "final_lambda": result["final_lambda"],
            "test_selected_accuracy": (result.get("test_selected") or {}).get("test_accuracy"),
            "seconds": time.perf_counter() - start}


def run_snl(spec: dict) -> dict:
    """One SNL run (pixel- or channel-wise): per-layer counts, accuracy."""
    start = time.perf_counter()
    result = _trainer(spec).run()
    return {**_spec_fields(spec), "per_layer": result["per_layer"],
            "relu_count": result["relu_count"], "relu_total": result["relu_total"],
            "test_accuracy": result["test_accuracy"],
            "teacher_test_accuracy": result["teacher_test_accuracy"],
            "seconds": time.perf_counter() - start}


def run_pareto(spec: dict) -> dict:
    """One point of the Pareto plot: SNL (pixel / channel) or l1 structured pruning."""
    if spec["method"] in ("pixel", "channel"):
        return run_snl(spec)
    return run_l1_prune(spec)


def run_l1_prune(spec: dict) -> dict:
    """Pretrain (as SNL does), remove whole channels / neurons of smallest l1 filter norm
    until the ReLU count fits the budget, then finetune with KD from the pretrained net."""
    import torch

    from .accounting import relu_counts
    from .gates import add_gates, freeze_gates, gate_sites
    from .trainer import evaluate

    start = time.perf_counter()
    cfg = _run_config(spec)
    cfg.search.max_epochs, finetune_epochs, cfg.finetune.epochs = 0, cfg.finetune.epochs, 0
    trainer = _trainer(spec, cfg)
    trainer.config.budget = None
    trainer.config.budget_fraction = 1.0
    trainer.run()
    teacher, example = trainer.teacher, trainer.example_input
    model = trainer.model_factory()
    model.load_state_dict(teacher.state_dict())
    producers = _producing_layers(model, example)
    add_gates(model, granularity="channel", variant="zero", example_input=example)
    totals = {s.name: s.total for s in relu_counts(model, example)}
    scores = []
    for name, gate in gate_sites(model):
        weight = producers[name].weight.detach()
        norms = weight.abs().flatten(1).sum(1)
        norms = norms / norms.mean().clamp_min(1e-12)  # comparable across layers
        per_channel = totals[name] // gate.c.numel()
        scores += [(float(v), name, k, per_channel) for k, v in enumerate(norms)]
    keep = _l1_keep(scores, spec["budget"])
    with torch.no_grad():
        for name, gate in gate_sites(model):
            mask = torch.tensor([keep[(name, k)] for k in range(gate.c.numel())], dtype=gate.c.dtype)
            gate.c.copy_(mask.view_as(gate.c))
    freeze_gates(model)
    _finetune(model, teacher, trainer.data, cfg, finetune_epochs)
    counts = relu_counts(model, example)
    return {**_spec_fields(spec),
            "per_layer": [{"name": s.name, "total": s.total, "kept": s.kept} for s in counts],
            "relu_count": sum(s.kept for s in counts), "relu_total": sum(s.total for s in counts),
            "test_accuracy": evaluate(model, trainer.data.test, trainer.device),
            "teacher_test_accuracy": evaluate(teacher, trainer.data.test, trainer.device),
            "seconds": time.perf_counter() - start}


def _l1_keep(scores: list, budget: int) -> dict:
    """Drop channels from the smallest score up until the kept ReLUs fit ``budget``;
    every layer keeps at least its best channel (else the network's output is constant)."""
    keep = {(name, k): True for _, name, k, _ in scores}
    used = sum(cost for *_, cost in scores)
    left = {}
    for _, name, _, _ in scores:
        left[name] = left.get(name, 0) + 1
    for score, name, k, cost in sorted(scores):
        if used <= budget:
            break
        if left[name] > 1:
            keep[(name, k)], used, left[name] = False, used - cost, left[name] - 1
    return keep


def _producing_layers(model, example_input) -> dict:
    """Gate-site name -> the last Conv / Linear module run before that ReLU site."""
    import torch
    from torch import nn

    from .gates import add_gates, gate_sites, remove_gates

    probe = add_gates(model, example_input=example_input)
    last, found, hooks = [None], {}, []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(lambda m, i, o: last.__setitem__(0, m)))
    for name, gate in gate_sites(probe):
        hooks.append(gate.register_forward_pre_hook(
            lambda m, i, name=name: found.__setitem__(name, last[0])))
    with torch.no_grad():
        model.eval()(example_input)
    for h in hooks:
        h.remove()
    remove_gates(model)
    return found


def _finetune(model, teacher, data, cfg, epochs: int) -> None:
    import torch

    from .gates import weight_parameters
    from .trainer import batches, kd_loss

    f = cfg.finetune
    opt = torch.optim.SGD(weight_parameters(model), lr=f.lr, momentum=f.momentum,
                          weight_decay=f.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(epochs):
        model.train()
        for x, y in batches(data.train, f.batch_size, True, gen):
            with torch.no_grad():
                t = teacher(x)
            loss = kd_loss(model(x), t, y, f.temperature, f.kd_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def run_capacity(spec: dict) -> dict:
    """Bounds, witness and trained fits of N collinear alternating points for one (x, y)."""
    from capacity import bounds
    from capacity.witnesses import alternating_fit, best_known

    start = time.perf_counter()
    (d1, d2), x, y, kind = spec["widths"], spec["x"], spec["y"], spec["kind"]
    linear = kind == "linearized"
    record = {**_spec_fields(spec),
              "theorem1": int(bounds.theorem1(d1, d2) if linear else bounds.theorem1(x, y)),
              "corollary1": _as_float(bounds.corollary1_counts(x, y, d1, d2)),
              "corollary2": _as_float(bounds.corollary2_counts(x, y, d1, d2)),
              "sharp": int(bounds.sharp_capacity([x, y]))}
    if linear and d1 > x and d2 > y:
        net, points = alternating_fit([x, y], [d1, d2])
        if not all(net(p) == label for p, label in points):
            raise AssertionError(f"witness for {spec} does not fit its points")
        record["witness"] = len(points)
    else:  # every piece of the witness alternates in sign: capacity = pieces + 1
        record["witness"] = best_known(d1, d2, x, y) + 1 if linear else best_known(x, y, x, y) + 1
    record["trained"] = trained_capacity(d1 if linear else x, d2 if linear else y, x, y,
                                         spec["restarts"], spec["steps"],
                                         limit=record["witness"])
    record["seconds"] = time.perf_counter() - start
    return record


def _as_float(v):
    return int(v) if float(v).is_integer() else float(v)


def trained_capacity(d1: int, d2: int, x: int, y: int, restarts: int, steps: int,
                     limit: int) -> int:
    """Largest N (scanning N = 2, 3, ... up to ``limit``) for which gradient training of a
    1-input MLP with widths (d1, d2), the first x / y neurons of each layer ReLU and the rest
    linear, fits the N alternating points exactly (sign of the output = label) in at least
    one of ``restarts`` attempts."""
    best = 1
    for n in range(2, limit + 1):
        if not fits_alternating(d1, d2, x, y, n, restarts, steps):
            break
        best = n
    return best


def fits_alternating(d1: int, d2: int, x: int, y: int, n: int, restarts: int, steps: int,
                     seed: int = 0) -> bool:
    """Train ``restarts`` independent networks at once (full-batch Adam, squared hinge) on
    t_i evenly spaced in [-1, 1] with labels (-1)^i; True when one fits every label."""
    import torch

    g = torch.Generator().manual_seed(seed * 7919 + 31 * n + d1 * 1009 + d2)
    r = restarts
    t = torch.linspace(-1, 1, n).view(1, n, 1)
    labels = torch.tensor([(-1.0) ** i for i in range(n)]).view(1, n)

    def uniform(*shape, fan_in):  # nn.Linear's default initialisation
        return ((torch.rand(*shape, generator=g) * 2 - 1) / math.sqrt(fan_in)).requires_grad_()

    w1 = uniform(r, 1, d1, fan_in=1)
    b1 = (-w1.detach() * (torch.rand(r, 1, d1, generator=g) * 2 - 1)).requires_grad_()  # kinks in [-1, 1]
    w2, b2 = uniform(r, d1, d2, fan_in=d1), uniform(r, 1, d2, fan_in=d1)
    w3, b3 = uniform(r, d2, 1, fan_in=d2), uniform(r, 1, 1, fan_in=d2)
    m1 = (torch.arange(d1) < x).float()
    m2 = (torch.arange(d2) < y).float()
    opt = torch.optim.Adam([w1, b1, w2, b2, w3, b3], lr=1e-2)

    def forward():
        z1 = t * w1 + b1                                    # (r, n, d1)
        h1 = z1 - m1 * torch.clamp(z1, max=0)               # ReLU where m1 = 1, identity elsewhere
        z2 = torch.bmm(h1, w2) + b2
        h2 = z2 - m2 * torch.clamp(z2, max=0)
        return (torch.bmm(h2, w3) + b3).squeeze(2)          # (r, n)

    for step in range(steps + 1):
        f = forward()
        if step % 25 == 0 and bool(((f * labels) > 0).all(dim=1).any()):
            return True
        if step == steps:
            return False
        loss = torch.relu(1 - labels * f).pow(2).mean(dim=1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return False


# ----------------------------------------------------------------------------- latency

#: Settings of the latency experiment per model: widths, initial lambda, ReLU budgets of
#: ReLU-budget SNL, and latency budgets of latency-budget SNL as (active sites k, ReLUs n):
#: T = linear + k rho + n beta under the localhost cost model of that network, so a budget
#: says how many sites it pays for. The ConvNet searches with a larger lambda (its count
#: falls slowly at 1e-4; the search is capped at 150 epochs and binarization keeps any budget).
LATENCY_SETTINGS = {
    "mlp": {"widths": [256, 64], "lam": 1e-4, "relu_budgets": [80, 20, 5],
            "latency_budgets": [[2, 40], [1, 200], [1, 20], [0, 0]]},
    "convnet": {"widths": [16], "lam": 1e-3, "relu_budgets": [400, 150, 50],
                "latency_budgets": [[3, 100], [2, 400], [1, 400], [0, 0]]},
}
QUICK_LATENCY = {"mlp": {"widths": [16, 8], "lam": 1e-3, "relu_budgets": [10, 6],
                         "latency_budgets": [[1, 4]]}}
LATENCY_METHODS = ("relu-snl", "latency-snl", "whole-layer")
#: Timed secure inferences per network (after one warm-up), interleaved across networks.
LATENCY_REPEATS = 7


def latency_specs(quick: bool = False, seeds: int | None = None, store: str | None = None) -> list[dict]:
    """One spec per (model, seed): every method of the latency experiment from one pretraining.

    Default: the digits MLP 64-256-64-10 and the ConvNet (width 16) of ``LATENCY_SETTINGS``,
    3 seeds, 30 pretraining epochs, at most 150 search epochs, 20 finetuning epochs. Quick:
    a 16-8 MLP, one seed, a few epochs. ``store`` is the directory the runs keep their
    binarized networks in until they are measured.
    """
    settings = QUICK_LATENCY if quick else LATENCY_SETTINGS
    seeds = (1 if quick else 3) if seeds is None else seeds
    epochs = ({"pretrain": 2, "search": 6, "finetune": 1} if quick
              else {"pretrain": 30, "search": 150, "finetune": 20})
    return [{"experiment": "latency", "model": model, "dataset": "digits", "seed": s,
             "epochs": epochs, "network": "localhost", "budget": None, "store": store, **setting}
            for model, setting in settings.items() for s in range(seeds)]


def run_latency(spec: dict) -> dict:
    """Pretrain once; then ReLU-budget SNL, latency-budget SNL and whole-layer linearization
    from the same pretrained network; one point (kept ReLUs per site, test accuracy, the
    network's file) per budget.

    Each SNL method searches once, towards its smallest budget; a larger budget branches off
    (binarize, finetune) from the checkpoint of the first search epoch that reached it, which
    is exactly the run ``python -m snl_train`` with that budget makes (same seed, same
    lambda schedule up to there). Latency budgets are (sites, ReLUs) pairs, converted to
    seconds by :func:`latency_seconds`.
    """
    start = time.perf_counter()
    store = Path(spec["store"]) / f"{spec['model']}-seed{spec['seed']}"
    store.mkdir(parents=True, exist_ok=True)
    pretrained = store / "pretrained.pt"
    relu = _latency_sweep(spec, "relu-snl", sorted(spec["relu_budgets"], reverse=True), store, pretrained)
    trainer = relu[0][1]
    budgets = {latency_seconds(trainer, k, n): [k, n] for k, n in spec["latency_budgets"]}
    lat = _latency_sweep(spec, "latency-snl", sorted(budgets, reverse=True), store, pretrained)
    points = [_snl_point("relu-snl", b, t, r) for b, t, r in relu]
    points += [{**_snl_point("latency-snl", b, t, r), "sites_relus": budgets[b],
                "estimated_seconds": r["latency_budget"]["estimated_seconds"]} for b, t, r in lat]
    points += _whole_layer_points(spec, trainer, store)
    fields = {k: v for k, v in _spec_fields(spec).items() if k not in ("store", "budget")}
    return {**fields, "points": points,
            "teacher_test_accuracy": relu[0][2]["teacher_test_accuracy"],
            "seconds": time.perf_counter() - start}


def latency_seconds(trainer, sites: int, relus: int) -> float:
    """T = linear + sites x rho + relus x beta (seconds) for ``trainer``'s network on localhost."""
    from .latency import latency_plan

    probe = trainer.teacher if trainer.teacher is not None else trainer.model
    cost = latency_plan(probe, trainer.example_input, 1e6, "localhost").cost
    return float(cost.linear + sites * cost.per_layer + relus * cost.per_relu)


def _latency_config(spec: dict, method: str, budget):
    cfg = _run_config({**spec, "budget": budget if method == "relu-snl" else None})
    if method == "latency-snl":
        cfg.latency_budget, cfg.network = budget, spec["network"]
    return cfg


def _latency_sweep(spec: dict, method: str, budgets: list, store: Path, pretrained: Path) -> list:
    """[(budget, trainer, result)] of one SNL method at ``budgets`` (decreasing); the first
    method to run leaves its pretrained checkpoint at ``pretrained``, later ones start there."""
    import shutil

    from .accounting import relu_counts

    out = store / f"{method}-{len(budgets) - 1}"
    trainer = _trainer(spec, _latency_config(spec, method, budgets[-1]), out_dir=out)
    snapshots: dict = {}

    def reached(t, b) -> bool:
        counts = relu_counts(t.model, t.example_input, t.config.search.epsilon)
        if method == "relu-snl":
            return sum(c.kept for c in counts) <= b
        from fractions import Fraction
        return t.latency.estimate(counts) <= Fraction(repr(b))

    def keep(t, final: bool) -> None:
        """Snapshot the checkpoint just written for each larger budget reached first now."""
        for i, b in enumerate(budgets[:-1]):
            if b not in snapshots and (final or reached(t, b)):
                snapshots[b] = store / f"{method}-{i}.snapshot.pt"
                shutil.copy(out / "checkpoint.pt", snapshots[b])

    def epoch_end(t) -> None:
        if t.stage == "search":
            keep(t, False)

    def stage_end(t) -> None:
        if t.stage == "pretrain" and not pretrained.exists():
            shutil.copy(out / "checkpoint.pt", pretrained)
        if t.stage == "search":  # budgets the search never reached end where it ended
            keep(t, True)

    trainer.add_callback("on_epoch_end", epoch_end)
    trainer.add_callback("on_stage_end", stage_end)
    if pretrained.exists():
        _branch(pretrained, trainer.config, out, None)
        runs = [(budgets[-1], trainer, trainer.run(resume=True))]
    else:
        runs = [(budgets[-1], trainer, trainer.run())]
    for i, b in enumerate(budgets[:-1]):
        branch = _trainer(spec, _latency_config(spec, method, b), out_dir=store / f"{method}-{i}")
        _branch(snapshots[b], branch.config, branch.out_dir, b if method == "relu-snl" else None)
        runs.append((b, branch, branch.run(resume=True)))
    return runs


def _branch(snapshot: Path, cfg, out: Path, relu_budget: int | None) -> None:
    """Start run directory ``out`` from ``snapshot`` with config ``cfg`` (and ReLU budget)."""
    from .checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(snapshot)
    state["config"] = cfg.to_dict()
    if relu_budget is not None:
        state["budget"] = relu_budget
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, out / "checkpoint.pt")


def _snl_point(method: str, budget, trainer, result: dict) -> dict:
    return {"method": method, "budget": budget,
            "kept": [layer["kept"] for layer in result["per_layer"]],
            "relu_count": result["relu_count"], "test_accuracy": result["test_accuracy"],
            "budget_reached_by_search": result["budget_reached_by_search"],
            "file": str(trainer.out_dir / "checkpoint.pt")}


def _whole_layer_points(spec: dict, trainer, store: Path) -> list[dict]:
    """Whole-layer linearization (DeepReDuce-like): rank the sites by the training accuracy of
    the pretrained network with that site alone linearized (highest first: least critical);
    drop the first m sites in that order for m = 0 .. L (every ReLU of a dropped site becomes
    the identity) and finetune each with KD from the pretrained network as SNL does."""
    import torch

    from .accounting import relu_counts
    from .gates import add_gates, freeze_gates, gate_sites
    from .trainer import evaluate

    teacher, data, device = trainer.teacher, trainer.data, trainer.device
    base = add_gates(copy_module(teacher), example_input=trainer.example_input)
    names = [name for name, _ in gate_sites(base)]
    criticality = {}
    for name, gate in gate_sites(base):
        gate.c.data.zero_()
        criticality[name] = evaluate(base, data.train, device)
        gate.c.data.fill_(1.0)
    order = sorted(names, key=lambda n: (-criticality[n], names.index(n)))
    cfg, points = trainer.config, []
    for m in range(len(order) + 1):
        model = copy_module(base)
        with torch.no_grad():
            for name, gate in gate_sites(model):
                gate.c.fill_(0.0 if name in order[:m] else 1.0)
        freeze_gates(model)
        if m:
            torch.manual_seed(cfg.seed)
            _finetune(model, teacher, data, cfg, cfg.finetune.epochs)
        path = store / f"whole-layer-{m}.pt"
        torch.save({"model": model.state_dict()}, path)
        counts = relu_counts(model, trainer.example_input)
        points.append({"method": "whole-layer", "budget": m, "dropped": order[:m],
                       "criticality": criticality, "kept": [c.kept for c in counts],
                       "relu_count": sum(c.kept for c in counts),
                       "test_accuracy": evaluate(model, data.test, device), "file": str(path)})
    return points


def copy_module(module):
    """A trainable deep copy (a frozen teacher's copy gets its gradients back)."""
    import copy

    copied = copy.deepcopy(module)
    for p in copied.parameters():
        p.requires_grad_(True)
    return copied


# ----------------------------------------------------------------------------- latency: measuring

def latency_experiment(quick: bool = False, seeds: int | None = None, jobs: int = 1,
                       progress: bool = False, partial=None) -> dict:
    """Train every method (:func:`run_latency`, in ``jobs`` processes), then measure the
    networks under two-party CrypTen one after the other (:func:`measure_latency`)."""
    import tempfile

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="snl-latency-") as store:
        runs = run_all(latency_specs(quick, seeds, store), jobs, progress, partial)
        trained = time.perf_counter() - start
        measurement = measure_latency(runs, repeats=2 if quick else LATENCY_REPEATS)
    facts = {"quick": quick, "jobs": jobs, "training_seconds": trained,
             "measurement": measurement, "proxy": None if quick else resnet_proxy()}
    return document("latency", runs, **facts, wall_seconds=time.perf_counter() - start)


def _load_point(run: dict, point: dict, example):
    """The binarized, gated network a point of ``run`` saved."""
    import torch

    from .gates import add_gates
    from .models import build_model

    model = build_model(run["model"], 10, tuple(example.shape[1:]), run["widths"])
    add_gates(model, "pixel", example_input=example)
    model.load_state_dict(torch.load(point["file"], weights_only=True)["model"])
    return model.eval()


def measure_latency(runs: list[dict], repeats: int = LATENCY_REPEATS) -> dict:
    """Measure every distinct network of the runs once and give each point its latencies.

    The parties' work depends on the network's layers and how many ReLUs each site keeps,
    not on the weights or which entries are kept, so networks with the same kept counts per
    site are measured once (the first one trained). Batch 1, secret weights, ``repeats``
    timed inferences after one warm-up, interleaved across networks (median kept). Each
    point gets ``latency``: "measured" (localhost, seconds) and the cost model's "localhost",
    "lan" and "wan", plus its bytes and rounds; its ``file`` entry is dropped.

    Returns:
        The measurement's conditions.
    """
    from .accounting import NETWORK_PRESETS, load_cost_profile, private_cost
    from .data import load_dataset
    from .private import ENGINE_NOTE, PrivateConfig, convert, first_test_samples, measure_many

    example, _ = first_test_samples(load_dataset("digits"), 1)
    profile, programs = load_cost_profile(), {}
    for run in runs:
        for point in run["points"]:
            key = (run["model"], tuple(run["widths"]), tuple(point["kept"]))
            if key not in programs:
                programs[key] = convert(_load_point(run, point, example), example)
    config = PrivateConfig(batch_size=1, repeats=repeats, warmup=1, samples=0, modes=("secret",),
                           timeout=600.0 + 10.0 * repeats * len(programs))
    reports = measure_many([(program, example, None, None) for program in programs.values()], config)
    priced = {}
    for (key, program), report in zip(programs.items(), reports):
        secret = report["modes"]["secret"]
        priced[key] = {"measured": secret["seconds_median"], "measured_best": secret["seconds_best"],
                       **{net: private_cost(program.layers, program.outputs, profile, net)["seconds"]
                          for net in ("localhost", *NETWORK_PRESETS)},
                       "bytes": secret["bytes"], "rounds": secret["rounds"]}
    for run in runs:
        for point in run["points"]:
            point["latency"] = priced[(run["model"], tuple(run["widths"]), tuple(point["kept"]))]
            point.pop("file", None)
    return {"engine": ENGINE_NOTE, "batch_size": 1, "weights": "secret", "repeats": repeats,
            "warmup": 1, "networks_measured": len(programs), "profile": profile.name,
            "networks": {"localhost": "measured on this machine's loopback, and the cost model",
                         **{name: preset.description for name, preset in NETWORK_PRESETS.items()}}}


def resnet_proxy(kept_fractions=(1.0, 0.1, 0.01)) -> list[dict]:
    """Where the ReLU count is the right proxy: the cost model's terms for the paper's CIFAR
    ResNet-18 (16 sites, 491,520 ReLUs, secret weights, batch 1) with every site keeping a
    fraction of its ReLUs: linear layers, sites (rho each) and ReLUs (beta each), per network."""
    import torch

    from .accounting import NETWORK_PRESETS, latency_cost_model, load_cost_profile
    from .models import build_model
    from .private import convert

    x = torch.zeros(1, 3, 32, 32)
    program = convert(build_model("resnet18", 10, (3, 32, 32), (16,)), x)
    sites = [layer.total for layer in program.layers if layer.kind == "relu"]
    rows = []
    for net in ("localhost", *NETWORK_PRESETS):
        cost = latency_cost_model(program.layers, program.outputs, load_cost_profile(), net)
        for f in kept_fractions:
            kept = sum(max(1, int(f * t)) for t in sites)
            rows.append({"model": "resnet18", "network": net, "kept_fraction": f, "kept": kept,
                         "sites": len(sites), "linear_seconds": float(cost.linear),
                         "site_seconds": float(len(sites) * cost.per_layer),
                         "relu_seconds": float(kept * cost.per_relu)})
    return rows


# ----------------------------------------------------------------------------- latency: summary

#: Pairs (ahead?, behind?) whose fronts the summary compares.
LATENCY_PAIRS = (("latency-snl", "relu-snl"), ("latency-snl", "whole-layer"), ("whole-layer", "relu-snl"))
LATENCY_NETWORKS = ("measured", "localhost", "lan", "wan")


def latency_configs(runs: Sequence[dict], network: str) -> list[dict]:
    """Points of the same method and budget averaged over seeds: latency on ``network``
    ("measured" or a cost-model network), accuracy (mean, min, max), ReLUs, active sites."""
    import statistics

    groups: dict = {}
    for run in runs:
        for p in run["points"]:
            groups.setdefault((p["method"], str(p["budget"])), []).append(p)
    rows = []
    for (method, budget), points in groups.items():
        acc = [p["test_accuracy"] for p in points]
        rows.append({"method": method, "budget": points[0]["budget"], "n": len(points),
                     "latency": statistics.fmean(p["latency"][network] for p in points),
                     "accuracy": statistics.fmean(acc), "accuracy_min": min(acc), "accuracy_max": max(acc),
                     "relu_count": statistics.fmean(p["relu_count"] for p in points),
                     "active_sites": statistics.fmean(sum(1 for k in p["kept"] if k) for p in points)})
    return sorted(rows, key=lambda r: (LATENCY_METHODS.index(r["method"]), r["latency"]))


def latency_summary(runs: Sequence[dict]) -> dict:
    """Per model and network: the seed-averaged points, each method's Pareto front
    (latency, accuracy), how far one front is ahead of another (``figures.stats.front_gap``:
    accuracy gained at no more latency, latency ratio for no less accuracy, points dominated),
    the cheapest point within 1 accuracy point of the pretrained network, and how measured
    latency correlates with the ReLU count and with the number of active sites."""
    import statistics

    from figures.stats import front_gap, pareto_front

    summary = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        teacher = statistics.fmean(r["teacher_test_accuracy"] for r in mine)
        networks = {}
        for net in LATENCY_NETWORKS:
            configs = latency_configs(mine, net)
            fronts = {m: pareto_front([(c["latency"], c["accuracy"]) for c in configs if c["method"] == m])
                      for m in LATENCY_METHODS}
            cheapest = {}
            for m in LATENCY_METHODS:
                good = [c for c in configs if c["method"] == m and c["accuracy"] >= teacher - 0.01]
                cheapest[m] = min(good, key=lambda c: c["latency"]) if good else None
            networks[net] = {"configs": configs, "fronts": fronts, "cheapest_within_1_point": cheapest,
                             "gaps": {f"{a} vs {b}": front_gap(fronts[a], fronts[b])
                                      for a, b in LATENCY_PAIRS if fronts[a] and fronts[b]}}
        points = [p for r in mine for p in r["points"]]
        summary[model] = {"teacher_test_accuracy": teacher, "networks": networks,
                          "correlation": _latency_correlation(points)}
    return summary


def _latency_correlation(points: list[dict]) -> dict:
    """Pearson correlation of measured latency with the ReLU count and with the active sites."""
    import statistics

    seconds = [p["latency"]["measured"] for p in points]
    out = {}
    for name, values in (("relu_count", [p["relu_count"] for p in points]),
                         ("active_sites", [sum(1 for k in p["kept"] if k) for p in points])):
        try:
            out[name] = statistics.correlation(values, seconds)
        except statistics.StatisticsError:  # constant values (the quick sweep)
            out[name] = None
    return out


def _spec_fields(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in ("experiment", "epochs", "data_dir")}


RUNNERS: dict[str, Callable[[dict], dict]] = {
    "retention": run_retention, "capacity": run_capacity,
    "distribution": run_snl, "pareto": run_pareto, "allocation": run_allocation,
    "latency": run_latency,
}


def _worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    return RUNNERS[spec["experiment"]](spec)


def run_all(specs: Sequence[dict], jobs: int = 1, progress: bool = False,
            partial: str | os.PathLike | None = None) -> list[dict]:
    """Run every spec (in ``jobs`` processes when > 1); results in the order of ``specs``.

    With ``progress``, one line per finished run goes to stderr; with ``partial``, each
    finished run is appended to that JSON-lines file at once (a long sweep that is stopped
    keeps what it finished).
    """
    def report(k: int, result: dict) -> None:
        if partial is not None:
            with open(partial, "a") as f:
                f.write(json.dumps(result) + "\n")
        if progress:
            print(f"[{k}/{len(specs)}] {_describe(result)} ({result['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)

    if jobs <= 1 or len(specs) <= 1:
        results = []
        for spec in specs:
            results.append(_worker(spec))
            report(len(results), results[-1])
        return results
    import multiprocessing
    from concurrent.futures import as_completed

    # biggest runs first keeps both workers busy to the end; results are put back in order
    order = sorted(range(len(specs)), key=lambda i: -_cost(specs[i]))
    done = {}
    # fork: workers inherit the imported modules (importing torch costs seconds per process);
    # safe as DataLoader workers are, since each worker runs torch with one thread
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"))
    try:
        futures = {pool.submit(_worker, specs[i]): i for i in order}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            report(len(done), done[futures[future]])
    finally:  # a failed run or Ctrl-C: do not start the runs still queued
        pool.shutdown(wait=True, cancel_futures=True)
    return [done[i] for i in range(len(specs))]


def _describe(result: dict) -> str:
    keys = ("dataset", "method", "kind", "widths", "budget", "x", "y", "seed", "recipe", "lam")
    return " ".join(f"{k}={result[k]}" for k in keys if k in result)


def _cost(spec: dict) -> float:
    if spec["experiment"] == "capacity":
        return spec["x"] * spec["y"]
    if spec["experiment"] == "latency":  # a ConvNet epoch takes several times an MLP's
        return 10.0 if spec["model"] == "convnet" else 1.0
    return sum(spec.get("widths", [1])) * (2 if spec.get("dataset") == "digits" else 1)


# ----------------------------------------------------------------------------- files

def experiment(name: str, quick: bool = False, seeds: int | None = None, jobs: int = 1,
               progress: bool = False, partial=None, **options) -> dict:
    """Run experiment ``name`` and return the results document written by :func:`save`."""
    if name == "latency":
        return latency_experiment(quick, seeds, jobs, progress, partial)
    specs = {"retention": retention_specs, "capacity": capacity_specs,
             "distribution": distribution_specs, "pareto": pareto_specs,
             "allocation": allocation_specs}[name](
        quick, seeds, **options)
    start = time.perf_counter()
    runs = run_all(specs, jobs, progress, partial)
    return document(name, runs, quick=quick, jobs=jobs, wall_seconds=time.perf_counter() - start)


def document(name: str, runs: list[dict], **facts) -> dict:
    """The results document of experiment ``name``: its runs, ``facts`` and, for retention,
    the error summary per setting and per width ratio (``figures.stats``)."""
    doc = {"experiment": name, **facts, "runs": runs}
    if name == "retention":
        from figures.stats import summary_table

        doc["summary"] = summary_table(runs, ("dataset", "widths", "budget"))
        doc["summary_by_ratio"] = summary_table(
            [{**r, "ratio": r["widths"][0] // r["widths"][1]} for r in runs], ("ratio",))
        doc["by_condition"] = condition_table(runs)
    if name == "allocation":
        doc.update(allocation_summary(runs))
    if name == "latency":
        doc["by_model"] = latency_summary(runs)
    return doc


def condition(run: dict) -> tuple:
    """(recipe, lambda scale) of a retention run; runs made before recipes existed are paper x1."""
    return run.get("recipe", "paper"), run.get("lambda_scale", 1.0)


def condition_table(runs: Sequence[dict], baseline: tuple = ("paper", 1.0)) -> list[dict]:
    """One row per condition (recipe, lambda scale) of a retention results document.

    Each row: the prediction errors (``figures.stats.summarize``), the position of the
    learned counts between the paper's (0) and the sharp (1) optimum
    (``figures.stats.position_summary``), both also per dataset, the fraction of searches
    that reached the budget, and the paired difference of the position from ``baseline``
    over the runs of the same (dataset, widths, budget, seed), with a 95% t-interval.
    """
    from figures.stats import group_by, mean_ci, position, position_summary, summarize

    def key(run):
        return run["dataset"], tuple(run["widths"]), run["budget"], run["seed"]

    groups = group_by([{**r, "condition": condition(r)} for r in runs], ("condition",))
    base = {key(r): position(r) for r in groups.get((baseline,), [])}
    rows = []
    for (cond,), group in sorted(groups.items(), key=lambda kv: (kv[0][0][0] != "paper", kv[0][0][1])):
        row = {"recipe": cond[0], "lambda_scale": cond[1], "lam": group[0].get("lam"),
               "n": len(group), "position": position_summary(group), "errors": summarize(group),
               "budget_reached": sum(r["budget_reached_by_search"] for r in group) / len(group),
               "by_dataset": {ds: {"position": position_summary(rs), "errors": summarize(rs)}
                              for (ds,), rs in sorted(group_by(group, ("dataset",)).items())}}
        pairs = [(position(r), base.get(key(r))) for r in group]
        diffs = [t - b for t, b in pairs if t is not None and b is not None]
        if cond != baseline and diffs:
            iv = mean_ci(diffs)
            row["position_vs_baseline"] = {"baseline": list(baseline), "n": len(diffs),
                                           "mean": iv.mean, "low": iv.low, "high": iv.high}
        rows.append(row)
    return rows


def save(doc: dict, out: str | os.PathLike) -> Path:
    """Write ``doc`` as JSON to ``out`` (and, for retention, a flat CSV beside it), each
    atomically: a failed write leaves the old file as it was."""
    import io

    out = Path(out)
    if doc["experiment"] == "retention":
        buffer = io.StringIO(newline="")
        w = csv.writer(buffer)
        w.writerow(["dataset", "d1", "d2", "budget", "seed", "a1", "a2", "paper_a1",
                    "paper_a2", "sharp_a1", "sharp_a2", "closed_form_feasible",
                    "test_accuracy", "teacher_test_accuracy", "recipe", "lambda"])
        for r in doc["runs"]:
            w.writerow([r["dataset"], *r["widths"], r["budget"], r["seed"],
                        *r["learned_alpha"], *r["predicted"]["paper"],
                        *r["predicted"]["sharp"], r["closed_form_feasible"],
                        r["test_accuracy"], r["teacher_test_accuracy"], condition(r)[0],
                        r.get("lam")])
        write_text_atomic(out.with_suffix(".csv"), buffer.getvalue())
    write_text_atomic(out, json.dumps(doc, indent=1) + "\n")
    return out


def _paired_line(row: dict) -> str:
    """One line of the allocation summary: each allocation minus learned, 95% interval."""
    setting = ", ".join(str(v) for v in row["setting"].values())
    parts = [f"{m} {d['mean']:+.3f} ({d['low']:+.3f} .. {d['high']:+.3f})"
             for m, d in row["difference"].items()]
    return f"{setting} (n={row['n']}, learned {row['mean']['learned']:.3f}): " + "; ".join(parts)


# ----------------------------------------------------------------------------- command line

PROG = "python -m snl_train.experiments"
DISTRIBUTION_ONLY = ("model", "dataset", "data_dir", "budgets")
RETENTION_ONLY = ("recipe", "lambda_scale", "grid")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every value is checked here or in :func:`_check`, before any run."""
    from .config import DATASETS

    cpus = os.cpu_count() or 1
    parser = CommandParser(
        PROG, failure="a run failed (e.g. a NaN loss) or the results file could not be\n"
                      "       written; the finished runs stay in OUT.partial.jsonl",
        description="Run an experiment comparing SNL-trained networks with the capacity "
                    "theory and write its results file (read by python -m figures).",
        epilog="example: python -m snl_train.experiments capacity --quick --out /tmp/capacity.json")
    parser.add_argument("experiment", choices=EXPERIMENTS, help="which sweep to run")
    parser.add_argument("--out", required=True,
                        help="results file to write, NAME.json (finished runs go to "
                             "NAME.partial.jsonl meanwhile; retention also writes NAME.csv)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (about a minute)")
    parser.add_argument("--seeds", type=integer(1, 1000), default=None,
                        help="seeds per setting (capacity: training restarts per N), 1..1000")
    parser.add_argument("--jobs", type=integer(1, 4 * cpus, why=f" (4 x the {cpus} CPUs)"),
                        default=min(2, cpus),
                        help="parallel worker processes (default: 2 or the CPU count)")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not print one line per finished run on stderr")
    parser.add_argument("--model", default=None, help="distribution: model name (default convnet)")
    parser.add_argument("--dataset", default=None, choices=DATASETS,
                        help="distribution: dataset name (default digits)")
    parser.add_argument("--data-dir", default=None,
                        help="distribution: directory of CIFAR / Tiny-ImageNet files")
    parser.add_argument("--budgets", type=integer_list(0, max_items=100), default=None,
                        help="distribution: comma-separated ReLU budgets")
    parser.add_argument("--recipe", default=None,
                        help="retention: training recipes, comma-separated: paper (default), "
                             "official (snl_train --recipe)")
    parser.add_argument("--lambda-scale", default=None,
                        help=f"retention: factors on the initial lambda {BASE_LAMBDA:g}, "
                             "comma-separated, e.g. 0.1,1,10 (default 1)")
    parser.add_argument("--grid", choices=("full", "robustness"), default=None,
                        help="retention: every setting (default full), or robustness: 4 per "
                             "dataset (width ratios 1, 2, 4, 8) for a recipe / lambda comparison")
    return parser


def _check(args) -> tuple[Path, Path, dict]:
    """The results and partial paths and the sweep's options; UsageError before any run."""
    for only, experiment_name in ((DISTRIBUTION_ONLY, "distribution"), (RETENTION_ONLY, "retention")):
        given = [f"--{k.replace('_', '-')}" for k in only if getattr(args, k) is not None]
        if given and args.experiment != experiment_name:
            raise UsageError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} "
                             f"only to the {experiment_name} experiment (see --help)")
    out = Path(args.out)
    if out.suffix != ".json":
        raise UsageError(f"--out must name a .json file, got {args.out!r} (see --help)")
    check_output_file(out, "--out")
    partial = out.with_suffix(".partial.jsonl")
    check_output_file(partial, "partial results file")
    if args.experiment == "retention":
        check_output_file(out.with_suffix(".csv"), "CSV file")
    if partial.is_file() and partial.stat().st_size:
        raise UsageError(f"{partial} holds the finished runs of an earlier sweep that did not "
                         "complete; move it away (or delete it) to start a new one")
    options = {}
    if args.experiment == "distribution":
        options = {"model": args.model or "convnet", "dataset": args.dataset or "digits",
                   "data_dir": args.data_dir, "budgets": args.budgets}
        if args.data_dir is not None:
            check_input_dir(args.data_dir, "--data-dir")
    if args.experiment == "retention":
        try:
            options = _retention_options(args)
        except ValueError as exc:
            raise UsageError(f"{exc} (see --help)") from None
    return out, partial, options


def _check_distribution(options: dict) -> None:
    """Build the distribution sweep's model once: an unknown model, missing data or a budget
    above its ReLU count is reported before any run starts (ValueError)."""
    from .accounting import count_relus
    from .data import load_dataset
    from .models import build_model

    data = load_dataset(options["dataset"], options["data_dir"], augment=False)
    model = build_model(options["model"], data.num_classes, data.in_shape, [4])
    total = count_relus(model, data.train[0][0].unsqueeze(0))
    too_big = [b for b in options["budgets"] or () if b > total]
    if too_big:
        raise ValueError(f"--budgets {','.join(map(str, too_big))} exceed the {total:,} ReLUs of "
                         f"{options['model']} on {options['dataset']}")


def _kept(partial: Path) -> str:
    lines = partial.read_text().count("\n") if partial.is_file() else 0
    return f"; the {lines} finished runs are in {partial}" if lines else ""


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 done, 1 a run failed or the results could not be written, 2 bad input
    (before any run starts), 130 interrupted; finished runs are never deleted on failure."""
    args = build_parser().parse_args(argv)
    out, partial, options = _check(args)
    from .data import DataError
    from .trainer import NonFiniteLoss

    try:
        if args.experiment == "distribution":
            _check_distribution(options)
        if args.experiment == "latency":
            _check_crypten()
        doc = experiment(args.experiment, args.quick, args.seeds, args.jobs, not args.no_progress,
                         partial, **options)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted{_kept(partial)}\n")
        return 130
    except (DataError, ValueError) as exc:
        raise UsageError(f"{exc}{_kept(partial)}") from None
    except (NonFiniteLoss, RuntimeError) as exc:
        sys.stderr.write(f"{PROG}: error: a run failed: {_first_line(exc)}{_kept(partial)}\n")
        return 1
    try:
        path = save(doc, out)
    except OSError as exc:
        sys.stderr.write(f"{PROG}: error: cannot write {exc.filename or out}: "
                         f"{exc.strerror or exc}{_kept(partial)}\n")
        return 1
    partial.unlink(missing_ok=True)  # the results file now holds every run
    print(f"{args.experiment}: {len(doc['runs'])} runs in {doc['wall_seconds']:.0f} s -> {path}")
    for line in _latency_lines(doc.get("by_model", {})):
        print("  " + line)
    for row in doc.get("paired_by_region", ()):
        print("  " + _paired_line(row))
    if "summary" in doc:
        overall = doc["summary"][-1]
        for name in ("paper", "sharp"):
            e = overall["error"][name]
            print(f"  {name:5s} prediction: mean |error| {e['mean']:.3f} "
                  f"(95% CI {e['low']:.3f} .. {e['high']:.3f})")
        print(f"  closer: {overall['closer']}; a1 < a2 in {overall['a1_lt_a2']:.0%} of runs")
    for row in doc.get("by_condition", ()) if len(doc.get("by_condition", ())) > 1 else ():
        print("  " + _condition_line(row))
    return 0


def _retention_options(args) -> dict:
    """``retention_specs`` keywords from --recipe, --lambda-scale and --grid (ValueError if bad)."""
    from .recipes import RECIPES

    recipe, scale = args.recipe or "paper", args.lambda_scale or "1"
    recipes = tuple(r.strip() for r in recipe.split(","))
    if any(r not in RECIPES for r in recipes):
        raise ValueError(f"--recipe must be comma-separated names from {', '.join(RECIPES)}, "
                         f"got {shown(recipe)}")
    try:
        scales = tuple(float(v) for v in scale.split(","))
    except ValueError:
        scales = ()
    if not scales or len(scales) > 100 or any(not (0 < v <= 1e6 and math.isfinite(v)) for v in scales):
        raise ValueError(f"--lambda-scale must be up to 100 comma-separated numbers in (0, 1e6], "
                         f"got {shown(scale)}")
    return {"recipes": recipes, "lambda_scales": scales, "grid": args.grid or "full"}


def _condition_line(row: dict) -> str:
    """One line per condition: position between the optima (0 paper, 1 sharp), vs baseline."""
    p = row["position"]
    line = (f"{row['recipe']:8s} lambda x{row['lambda_scale']:g}: position {p['mean']:.2f} "
            f"(95% CI {p['low']:.2f} .. {p['high']:.2f}), between the optima in "
            f"{p['between']:.0%} of {p['n']} runs")
    d = row.get("position_vs_baseline")
    if d is not None:
        line += (f"; minus {d['baseline'][0]} x{d['baseline'][1]:g}: {d['mean']:+.2f} "
                 f"({d['low']:+.2f} .. {d['high']:+.2f})")
    return line
def _check_crypten() -> None:
    """The latency experiment measures with CrypTen: say how to install it before any run."""
    from .crypten_compat import INSTALL_HINT, crypten_available

    if not crypten_available():
        raise UsageError(f"the latency experiment measures private inference: {INSTALL_HINT}")


def _latency_lines(by_model: dict) -> list[str]:
    """Per model and network: the cheapest point within 1 accuracy point of the pretrained
    network for each method, and how far latency-budget SNL's front is ahead of the others."""
    lines = []
    for model, entry in by_model.items():
        for net, info in entry["networks"].items():
            parts = []
            for method, c in info["cheapest_within_1_point"].items():
                parts.append(f"{method} " + ("-" if c is None else
                                             f"{1000 * c['latency']:.0f} ms ({100 * c['accuracy']:.1f}%)"))
            lines.append(f"{model}, {net}: cheapest within 1 point of the pretrained "
                         f"{100 * entry['teacher_test_accuracy']:.1f}%: " + ", ".join(parts))
            for pair, gap in info["gaps"].items():
                ratio = gap["cost_ratio_median"]
                gain = gap["score_gain_mean"]
                lines.append(f"  {pair}: dominates {gap['dominated']} of {gap['compared']} front points"
                             + ("" if ratio is None else f", latency x{ratio:.2f} for no less accuracy")
                             + ("" if gain is None else f", {100 * gain:+.1f} points at no more latency"))
    return lines


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
