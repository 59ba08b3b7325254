"""Atomic, weights-only-loadable checkpoints for an SNL run.

A checkpoint is a dict of tensors and plain containers (str, int, float, bool, None,
list, dict), so ``torch.load(path, weights_only=True)`` reads it without unpickling
arbitrary objects. It is written to a temporary file in the same directory, fsync'ed and
moved over the old one with ``os.replace``: a crash leaves either the old or the new
checkpoint, never a torn one.

Example::

    >>> save_checkpoint({"format": FORMAT, "stage": "search", "epoch": 3}, "run/ckpt.pt")
    >>> load_checkpoint("run/ckpt.pt")["epoch"]
    3
"""
from __future__ import annotations

import glob
import math
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "snl_train/checkpoint-v1"
REQUIRED = ("format", "stage", "epoch", "config", "model", "rng")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the requested run."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (tmp file in the same dir, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``weights_only=True`` and check its format.

    Raises:
        CheckpointError: missing file, unreadable/corrupt data, or not an snl_train checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return parse_checkpoint(path, path)


def parse_checkpoint(source, path) -> dict:
    """Read a checkpoint from ``source`` (a path or a binary file object) with ``weights_only=True``.

    ``path`` names the checkpoint in error messages (a distributed run parses the bytes rank 0
    read from it). Raises CheckpointError as :func:`load_checkpoint` does.
    """
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"corrupt checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an snl_train checkpoint (format {FORMAT})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    problem = _shape_problem(state)
    if problem:
        raise CheckpointError(f"corrupt or incompatible checkpoint {path}: {problem}")
    return state


def _is_int(value, minimum: int | None = None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and (minimum is None or value >= minimum))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


#: What each entry of a checkpoint must be (None: the entry may also be None).
_CHECKS = {
    "stage": (lambda v: isinstance(v, str), "a stage name"),
    "epoch": (lambda v: _is_int(v, 0), "an epoch number >= 0"),
    "config": (lambda v: isinstance(v, dict), "a config dict"),
    "model": (_is_state_dict, "a model state dict"),
    "rng": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "RNG states"),
    "teacher": (lambda v: v is None or _is_state_dict(v), "None or a teacher state dict"),
    "optimizer": (lambda v: v is None or isinstance(v, dict), "None or an optimizer state"),
    "lam": (_is_number, "a finite lambda"),
    "prev_count": (lambda v: v is None or _is_int(v, 0), "None or a ReLU count"),
    "total": (lambda v: v is None or _is_int(v, 0), "None or a ReLU count"),
    "budget": (lambda v: v is None or _is_int(v, 0), "None or a budget"),
    "relu_count_before": (lambda v: v is None or _is_int(v, 0), "None or a ReLU count"),
    "budget_reached": (lambda v: v is None or isinstance(v, bool), "None or a bool"),
    "last_record": (lambda v: isinstance(v, dict), "a dict"),
    "metrics_lines": (lambda v: _is_int(v, 0), "a line count >= 0"),
}


def _shape_problem(state: dict) -> str:
    """What is wrong with a loaded checkpoint's entries, or "" (only entries that are there
    and that ``Trainer`` reads; the ones every checkpoint has are in ``REQUIRED``)."""
    for key, (ok, expected) in _CHECKS.items():
        if key in state and not ok(state[key]):
            return f"{key!r} is {type(state[key]).__name__}, expected {expected}"
    return ""


def remove_orphans(directory: str | os.PathLike, name: str = "checkpoint.pt") -> list[Path]:
    """Delete the temporary files a killed :func:`save_checkpoint` left in ``directory``.

    They are named ``<name>.<random>.tmp`` (``tempfile.mkstemp`` in ``save_checkpoint``);
    a run calls this before it writes its first checkpoint. Returns the files removed.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for tmp in directory.glob(f"{glob.escape(name)}.*.tmp"):
        try:
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # another process's file, or gone already
            pass
    return removed


def rng_state(device: torch.device) -> dict:
    """Global RNG states to store (torch CPU, and CUDA when running on it)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
