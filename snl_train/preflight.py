"""Checks ``python -m snl_train`` makes before any training, so bad input costs seconds.

Two kinds, in the order the command runs them:

- without torch (:func:`check_args`, :func:`check_run_dir`): option combinations, the
  device's spelling, ``--data-dir``, and the run directory: a directory that already holds
  a run is refused unless ``--resume`` continues it or ``--overwrite`` starts over;
- with the data loaded (:func:`check_size`, :func:`build_checked`, :func:`check_model`):
  a model too large for this machine's memory is refused before it is allocated, a user
  factory that raises is reported in one line, and one forward pass on two real samples
  shows that the model has parameters, returns a single tensor and has one output per class.

Every problem raises :class:`capacity.cli.UsageError` (before torch) or
:class:`PreflightError` (a ``ValueError``), one line each.

Example::

    >>> check_size("mlp", (256, 64), (1, 8, 8), 10, batch_size=64)   # 33k parameters: fine
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

from capacity.cli import UsageError, check_input_dir, check_input_file, check_output_dir, first_line

#: The files of a run in ``--out``; any of them means the directory holds a run.
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "result.json")
#: Datasets read from ``--data-dir``.
FILE_DATASETS = ("cifar10", "cifar100", "tiny-imagenet")
_DEVICE = re.compile(r"(cpu|cuda)(:\d{1,4})?")


class PreflightError(ValueError):
    """A model or data problem found before training (one line)."""


# ----------------------------------------------------------------------------- no torch


def check_args(args) -> None:
    """Option combinations argparse cannot express; raises UsageError.

    ``args`` needs budget, budget_fraction, resume, overwrite, device, dataset, data_dir.
    """
    given = [args.budget, args.budget_fraction, getattr(args, "latency_budget", None)]
    if sum(value is not None for value in given) != 1:
        raise UsageError("give exactly one of --budget N, --budget-fraction F or "
                         "--latency-budget SECONDS (see --help)")
    check_latency_args(args)
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it: "
                         "give one (see --help)")
    if not _DEVICE.fullmatch(args.device):
        raise UsageError(f"unsupported device {args.device!r}; use cpu, cuda or cuda:N (see --help)")
    if args.data_dir is not None:
        if args.dataset not in FILE_DATASETS:
            raise UsageError(f"--data-dir is read only for {', '.join(FILE_DATASETS)}; "
                             f"{args.dataset} is built in (see --help)")
        check_input_dir(args.data_dir, "--data-dir")


def check_latency_args(args) -> None:
    """The options of --latency-budget: only with it, and a profile path that can be read."""
    options = [f"--{name.replace('_', '-')}" for name in ("network", "cost_profile", "group_penalty")
               if getattr(args, name, None) is not None]
    if getattr(args, "latency_budget", None) is None:
        if options:
            verb = "applies" if len(options) == 1 else "apply"
            raise UsageError(f"{' and '.join(options)} only {verb} with --latency-budget (see --help)")
        return
    profile = getattr(args, "cost_profile", None)
    if profile is not None and (profile.endswith(".json") or os.sep in profile):
        check_input_file(profile, "--cost-profile")


def check_run_dir(out: str | os.PathLike, resume: bool, overwrite: bool) -> Path:
    """``--out`` must be a writable directory (or creatable), and hold a run only with
    ``--resume`` (which needs its checkpoint) or ``--overwrite``; raises UsageError.

    Example::

        >>> check_run_dir("/etc/passwd", False, False)
        Traceback (most recent call last):
        capacity.cli.UsageError: --out /etc/passwd is a file, expected a directory
    """
    out = check_output_dir(out, "--out")
    present = [name for name in RUN_FILES if os.path.lexists(out / name)]
    for name in present:
        if not (out / name).is_file():
            raise UsageError(f"{out / name} is not a file; a run directory holds the files "
                             f"{', '.join(RUN_FILES)}")
    if resume and "checkpoint.pt" not in present:
        raise UsageError(f"--resume: no checkpoint {out / 'checkpoint.pt'} to continue; "
                         "drop --resume to start a new run")
    if present and not (resume or overwrite):
        raise UsageError(f"--out {out} already holds a run ({', '.join(present)}): continue it "
                         "with --resume, or start over with --overwrite (which deletes it)")
    return out


def clear_run(out: Path) -> None:
    """``--overwrite``: delete the run files in ``out`` (after every other check passed)."""
    for name in RUN_FILES:
        try:
            (out / name).unlink()
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- with data


def parameter_estimate(model: str, widths, in_shape, num_classes: int) -> int | None:
    """Parameters of a built-in ``mlp`` or ``convnet`` from its sizes (None for others).

    Example::

        >>> parameter_estimate("mlp", (256, 64), (1, 8, 8), 10)
        33738
    """
    if model == "mlp":
        sizes = [math.prod(in_shape), *widths, num_classes]
        return sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    if model == "convnet":
        w, hidden = (widths[0] if widths else 16), 64
        return (in_shape[0] * w * 9 + 2 * w + w * 2 * w * 9 + 4 * w
                + 2 * w * hidden + hidden + hidden * num_classes + num_classes)
    return None


def memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_size(model: str, widths, in_shape, num_classes: int, batch_size: int) -> None:
    """Refuse a built-in model whose training would not fit in memory, before allocating it.

    Training keeps about five float32 copies of the parameters (weights, teacher,
    gradients, two Adam moments) and a few of each hidden activation per sample.
    """
    params = parameter_estimate(model, widths, in_shape, num_classes)
    available = memory_bytes()
    if params is None or available is None:
        return
    hidden = sum(widths) if model == "mlp" else 0
    need = 4 * (5 * params + 4 * batch_size * hidden)
    if need > available:
        raise PreflightError(
            f"--model {model} --widths {','.join(map(str, widths))} on inputs of shape "
            f"{tuple(in_shape)} has {params:,} parameters and needs about {need / 2**30:,.1f} GiB "
            f"to train, more than this machine's {available / 2**30:,.1f} GiB: use smaller widths")


def build_checked(build, name: str):
    """``build()``, with any exception of a user factory (``module:callable``) as one line."""
    try:
        return build()
    except (ValueError, TypeError, ImportError):
        raise
    except Exception as exc:  # user code may raise anything; it is still bad input
        if ":" not in name:
            raise
        raise PreflightError(f"model factory {name!r} failed: {type(exc).__name__}: "
                             f"{first_line(exc)}") from None


def check_model(model, data, name: str) -> None:
    """One forward pass on two training samples: parameters, one tensor, one output per class.

    Raises:
        PreflightError: no parameters; the forward fails on the data's input shape; it returns
            a tuple/list or a non-tensor; its output is not (batch, num_classes).
    """
    import torch

    if not any(p.numel() for p in model.parameters()):
        raise PreflightError(f"model {name!r} has no parameters: there is nothing to train")
    samples = [data.train[i][0] for i in range(min(2, len(data.train)))]
    x = torch.stack(samples)
    shape = tuple(x.shape)
    was_training = model.training
    model.eval()  # no BatchNorm statistics change, one sample per batch is fine
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as exc:  # the model's own code: shapes, dtypes, anything
        raise PreflightError(f"model {name!r} does not accept {data.name} inputs of shape "
                             f"{shape}: {type(exc).__name__}: {first_line(exc)}") from None
    finally:
        model.train(was_training)
    if isinstance(y, (tuple, list)):
        raise PreflightError(f"model {name!r} returns a {type(y).__name__} of {len(y)} items; SNL "
                             f"needs one logits tensor of shape (batch, {data.num_classes})")
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        kind = f"a {y.dtype} tensor" if isinstance(y, torch.Tensor) else type(y).__name__
        raise PreflightError(f"model {name!r} returns {kind}; SNL needs float logits of shape "
                             f"(batch, {data.num_classes})")
    expected = (shape[0], data.num_classes)
    if tuple(y.shape) != expected:
        raise PreflightError(f"model {name!r} maps {data.name} inputs of shape {shape} to outputs "
                             f"of shape {tuple(y.shape)}; expected {expected} "
                             f"({data.num_classes} classes)")
