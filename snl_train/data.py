"""Datasets for the SNL trainer: real data that ships with scikit-learn, synthetic
memorization sets, and CIFAR-10/100 / Tiny-ImageNet read from a local directory.

Nothing is ever downloaded. Every loader returns a :class:`DataBundle` whose ``train`` and
``test`` are ``torch.utils.data.Dataset`` objects yielding ``(x, y)`` with ``x`` a float
tensor of shape ``in_shape`` and ``y`` an integer class label.

Example::

    >>> bundle = load_dataset("digits", seed=0)
    >>> bundle.in_shape, bundle.num_classes, len(bundle.train) + len(bundle.test)
    ((1, 8, 8), 10, 1797)
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from .config import DATASETS

# Per-channel statistics of the training sets (the usual published values).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)


class DataError(ValueError):
    """Bad dataset name, missing or malformed data directory (a user error)."""


@dataclass
class DataBundle:
    """A train/test pair with the facts a model builder needs."""

    train: Dataset
    test: Dataset
    num_classes: int  # number of output classes
    in_shape: tuple  # shape of one input sample, e.g. (1, 8, 8) or (3, 32, 32)
    name: str  # dataset name as given to load_dataset


class AugmentedImages(Dataset):
    """Normalised uint8 images (N, C, H, W) with optional random crop (zero padding) + flip.

    Augmentation draws from the global torch RNG, so a seeded run (num_workers=0) is
    reproducible and resumable by saving ``torch.get_rng_state()``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std,
                 augment: bool, pad: int = 4):
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment, self.pad = augment, pad

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float().div_(255.0)
        if self.augment:
            x = random_crop_flip(x, self.pad)
        return (x - self.mean) / self.std, int(self.labels[i])


def random_crop_flip(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop of the original size from the zero-padded image, then a random h-flip."""
    _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    x = padded[:, top:top + h, left:left + w]
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    return x


def crop_flip_batch(images: torch.Tensor, pad: int, offsets: torch.Tensor,
                    flips: torch.Tensor) -> torch.Tensor:
    """:func:`random_crop_flip` for a whole batch with given draws, on the batch's device.

    Args:
        images: (B, C, H, W), any dtype (padding is 0, i.e. black for uint8 / [0, 1] images).
        pad: zero padding on each side.
        offsets: (B, 2) integers in [0, 2 * pad]: top and left of each crop in the padded image.
        flips: (B,) booleans: flip that crop horizontally.
    Returns:
        (B, C, H, W) crops; sample i equals ``random_crop_flip`` of image i had it drawn
        ``offsets[i]`` and ``flips[i]``.

    Example:
        >>> x = torch.arange(16.).view(1, 1, 4, 4)
        >>> crop_flip_batch(x, 1, torch.tensor([[1, 1]]), torch.tensor([True]))[0, 0, 0].tolist()
        [3.0, 2.0, 1.0, 0.0]
    """
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (B, H) source rows
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (B, W) source columns
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flipped crop reads them backwards
    # One gather of flat (row, column) positions, the same for every channel of a sample.
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w)
    return padded.flatten(2).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


class DeviceData:
    """An in-memory dataset held as tensors on the training device and served in batches.

    Built by :func:`on_device`. Plain tensor sets are sliced as the host path slices them
    (same permutation, so the same batches); images are kept as uint8 and cropped, flipped
    (when augmenting) and normalised on the device a batch at a time, with the crop offsets
    and flips drawn from the same generator as the permutation (uniform offsets in
    [0, 2 * pad], flip with probability 1/2, as :func:`random_crop_flip`).

    Args:
        tensors: (inputs, labels) on the device.
        mean, std: per-channel normalisation for uint8 images (None: inputs used as they are).
        pad: crop padding when augmenting, None for no augmentation.
    """

    def __init__(self, tensors: tuple, mean=None, std=None, pad: int | None = None):
        self.tensors, self.pad = tensors, pad
        self.mean = self.std = None
        if mean is not None:
            device = tensors[0].device
            self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.tensors[-1])

    def batches(self, batch_size: int, shuffle: bool, generator=None) -> "_DeviceBatches":
        """The epoch's batches (an iterable with a length), drawn from ``generator`` (CPU)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        draws = None
        if self.pad is not None:
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
            draws = (offsets, torch.rand(n, generator=generator) < 0.5)
        device = self.tensors[0].device
        order = order.to(device)
        draws = None if draws is None else tuple(d.to(device) for d in draws)
        return _DeviceBatches(self, order, draws, batch_size)

    def batch(self, index: torch.Tensor, draws=None) -> tuple:
        """Inputs and labels at ``index``; ``draws`` = (offsets, flips) of those samples."""
        x, y = (t[index] for t in self.tensors)
        if self.mean is None:
            return x, y
        if draws is not None:
            x = crop_flip_batch(x, self.pad, *draws)
        return (x.float().div_(255.0) - self.mean) / self.std, y


class _DeviceBatches:
    """One epoch of :class:`DeviceData` batches, made lazily (only one lives at a time)."""

    def __init__(self, data: DeviceData, order, draws, batch_size: int):
        self.data, self.order, self.draws, self.batch_size = data, order, draws, batch_size

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.order), self.batch_size):
            index = self.order[i:i + self.batch_size]
            draws = None if self.draws is None else tuple(d[i:i + self.batch_size] for d in self.draws)
            yield self.data.batch(index, draws)


def on_device(dataset, device) -> "DeviceData | Dataset":
    """``dataset`` as :class:`DeviceData` on ``device`` if it is held in memory, else itself.

    Tensor datasets (digits, the synthetic sets) and CIFAR's :class:`AugmentedImages` move;
    Tiny-ImageNet's lazily read image files stay on the host.

    Example:
        >>> on_device(load_dataset("random", n=8).train, "cpu").batch(torch.tensor([0]))[1].shape
        torch.Size([1])
    """
    if isinstance(dataset, TensorDataset):
        return DeviceData(tuple(t.to(device) for t in dataset.tensors))
    if isinstance(dataset, AugmentedImages):
        return DeviceData((dataset.images.to(device), dataset.labels.to(device)),
                          dataset.mean.flatten(), dataset.std.flatten(),
                          dataset.pad if dataset.augment else None)
    return dataset


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, seed: int = 0,
                 augment: bool = True, **synthetic) -> DataBundle:
    """Load dataset ``name`` (one of :data:`DATASETS`).

    Args:
        name: "digits", "random", "collinear", "cifar10", "cifar100" or "tiny-imagenet".
        data_dir: directory holding ``cifar-10-batches-py/``, ``cifar-100-python/`` or
            ``tiny-imagenet-200/`` (ignored for the built-in sets).
        seed: fixes the digits train/test split and the synthetic sets.
        augment: random crop + flip on the CIFAR / Tiny-ImageNet training sets.
        synthetic: ``n``, ``dim``, ``num_classes`` for "random" (or ``shape`` instead of ``dim``
            for samples of any shape, :func:`random_images`); ``n``, ``dim`` for "collinear".
    Raises:
        DataError: unknown name or a missing / malformed data directory.
    """
    if name == "digits":
        return load_digits(seed)
    if name == "random":
        if "shape" in synthetic:
            return random_images(seed=seed, **synthetic)
        return random_labels(seed=seed, **synthetic)
    if name == "collinear":
        return collinear_alternating(seed=seed, **synthetic)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, _require_dir(data_dir, name), augment)
    if name == "tiny-imagenet":
        return load_tiny_imagenet(_require_dir(data_dir, name), augment)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def _require_dir(data_dir, name: str) -> Path:
    if data_dir is None:
        raise DataError(f"dataset {name!r} needs --data-dir; {_layout(name)}")
    return Path(data_dir)


def _layout(name: str) -> str:
    return {
        "cifar10": "expected DIR/cifar-10-batches-py/data_batch_1..5 and test_batch "
                   "(the python version of CIFAR-10)",
        "cifar100": "expected DIR/cifar-100-python/train and test "
                    "(the python version of CIFAR-100)",
        "tiny-imagenet": "expected DIR/tiny-imagenet-200/train/<wnid>/images/*.JPEG and "
                         "DIR/tiny-imagenet-200/val/images + val/val_annotations.txt",
    }[name]


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> DataBundle:
    """scikit-learn's 1,797 8x8 digits scaled to [0, 1], shape (1, 8, 8), stratified split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    data = sk_digits()
    x = torch.tensor(data.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_fraction, random_state=seed,
        stratify=y.numpy())
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return DataBundle(TensorDataset(x[idx_train], y[idx_train]),
                      TensorDataset(x[idx_test], y[idx_test]), 10, (1, 8, 8), "digits")


def random_labels(n: int = 256, dim: int = 16, num_classes: int = 2, seed: int = 0) -> DataBundle:
    """Memorization set: Gaussian inputs with uniformly random labels; test set = train set."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    ds = TensorDataset(x, y)
    return DataBundle(ds, ds, num_classes, (dim,), "random")


def random_images(shape=(3, 32, 32), num_classes: int = 10, n: int = 256, seed: int = 0) -> DataBundle:
    """Image-shaped memorization set: Gaussian samples of ``shape`` with uniformly random labels.

    For trying a model without data (``--dataset random --input-shape 3,32,32 --classes 10``);
    the test set is the training set.

    Raises:
        DataError: a shape with a non-positive size, fewer than 2 classes, or ``n < 1``.

    Example:
        >>> bundle = random_images((3, 8, 8), num_classes=4, n=16)
        >>> bundle.in_shape, bundle.num_classes, tuple(bundle.train[0][0].shape)
        ((3, 8, 8), 4, (3, 8, 8))
    """
    shape = tuple(int(d) for d in shape)
    if not shape or any(d < 1 for d in shape) or num_classes < 2 or n < 1:
        raise DataError(f"random images need positive sizes, at least 2 classes and 1 sample; "
                        f"got shape {shape}, {num_classes} classes, {n} samples")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + shape, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    ds = TensorDataset(x, y)
    return DataBundle(ds, ds, num_classes, shape, "random")


def collinear_alternating(n: int = 64, dim: int = 2, seed: int = 0) -> DataBundle:
    """The capacity argument's set: x_i = i * u, y_i = i mod 2, i = 0..n-1; test = train.

    ``u`` is a random direction of length 1/n, so the points span a unit segment.
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(dim, generator=g)
    u = u / (u.norm() * n)
    i = torch.arange(n)
    ds = TensorDataset(i.float().unsqueeze(1) * u, i % 2)
    return DataBundle(ds, ds, 2, (dim,), "collinear")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches and nothing else: a pickle names the callables it
    runs, and this one admits only those that rebuild numpy arrays (plus a latin-1 byte
    decoder) -- a batch whose ``__reduce__`` names ``os.system`` is refused, not run."""

    def find_class(self, module: str, name: str):
        found = _allowed_globals().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only dicts, lists, "
                "bytes, strings, numbers and numpy arrays")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id: not a CIFAR batch")


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, for latin-1 only."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r})")
    return text.encode("latin-1")


def _allowed_globals() -> dict:
    """(module, name) -> object for the callables a numpy-array pickle names."""
    import numpy as np

    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1}
    for package in ("numpy.core", "numpy._core"):  # pickles name either, by numpy version
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


def _unpickle(path: Path) -> dict:
    """One CIFAR batch, read with :class:`_BatchUnpickler` (no code from the file runs)."""
    if not path.exists():
        raise DataError(f"missing file {path}")
    if not path.is_file():
        raise DataError(f"{path} is a directory, expected a CIFAR batch file")
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # truncated, foreign or refused content
        raise DataError(f"cannot read {path}: {_first_line(exc)}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, expected a CIFAR batch (a dict)")
    return batch


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def _cifar_arrays(batches: list[tuple[Path, dict]], label_key: bytes, classes: int):
    """Images (N, 3, 32, 32) uint8 and labels (N,) from checked batches; DataError names the
    file and what is wrong (shape, dtype, value or label range, lengths)."""
    import numpy as np

    xs, ys = [], []
    for path, batch in batches:
        if b"data" not in batch or label_key not in batch:
            raise DataError(f"{path}: batch lacks b'data' or {label_key!r}")
        data, labels = batch[b"data"], batch[label_key]
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
            shape = data.shape if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: b'data' must be an array of shape (N, 3072) "
                            f"(32x32 RGB rows), got {shape}")
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise DataError(f"{path}: b'data' must hold bytes 0..255, got dtype {data.dtype}")
        labels = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
        if labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{path}: {label_key!r} must be a list of integer labels")
        if len(labels) != len(data):
            raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(f"{path}: labels must be in 0..{classes - 1}, got "
                            f"{labels.min()}..{labels.max()}")
        xs.append(torch.from_numpy(data.astype(np.uint8)).reshape(-1, 3, 32, 32))
        ys.append(torch.from_numpy(labels.astype(np.int64)))
    return torch.cat(xs), torch.cat(ys)


def load_cifar(name: str, data_dir: Path, augment: bool = True) -> DataBundle:
    """CIFAR-10 / CIFAR-100 in their standard python pickle format from ``data_dir``."""
    if name == "cifar10":
        root, key, classes, mean, std = (data_dir / "cifar-10-batches-py", b"labels", 10,
                                         CIFAR10_MEAN, CIFAR10_STD)
        train_files = [root / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [root / "test_batch"]
    else:
        root, key, classes, mean, std = (data_dir / "cifar-100-python", b"fine_labels", 100,
                                         CIFAR100_MEAN, CIFAR100_STD)
        train_files, test_files = [root / "train"], [root / "test"]
    if not root.is_dir():
        raise DataError(f"no {root.name}/ in {data_dir}; {_layout(name)}")
    x_tr, y_tr = _cifar_arrays([(p, _unpickle(p)) for p in train_files], key, classes)
    x_te, y_te = _cifar_arrays([(p, _unpickle(p)) for p in test_files], key, classes)
    return DataBundle(AugmentedImages(x_tr, y_tr, mean, std, augment),
                      AugmentedImages(x_te, y_te, mean, std, False), classes, (3, 32, 32), name)


class ImageFiles(Dataset):
    """Images read lazily from disk with PIL, resized to ``size`` if needed, normalised."""

    def __init__(self, files: list[Path], labels: list[int], size: int, augment: bool):
        self.files, self.labels, self.size, self.augment = files, labels, size, augment
        self.mean = torch.tensor(TINY_MEAN).view(-1, 1, 1)
        self.std = torch.tensor(TINY_STD).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        try:
            with Image.open(self.files[i]) as img:
                img = img.convert("RGB")
                if img.size != (self.size, self.size):
                    img = img.resize((self.size, self.size))
                x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # not an image
            raise DataError(f"cannot read image {self.files[i]}: {_first_line(exc)}") from None
        x = x.view(self.size, self.size, 3).permute(2, 0, 1).float().div_(255.0)
        if self.augment:
            x = random_crop_flip(x, 4)
        return (x - self.mean) / self.std, self.labels[i]


IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def load_tiny_imagenet(data_dir: Path, augment: bool = True, size: int = 64) -> DataBundle:
    """Tiny-ImageNet-200 from its image-folder layout; classes are the sorted train wnids."""
    root = data_dir / "tiny-imagenet-200"
    train_root, val_root = root / "train", root / "val"
    annotations = val_root / "val_annotations.txt"
    if not train_root.is_dir() or not annotations.is_file():
        raise DataError(f"no usable tiny-imagenet-200/ in {data_dir}; {_layout('tiny-imagenet')}")
    try:
        wnids = sorted(p.name for p in train_root.iterdir() if p.is_dir())
        index = {w: k for k, w in enumerate(wnids)}
        train_files, train_labels = [], []
        for wnid in wnids:
            images = train_root / wnid / "images"
            if images.is_dir() and not os.access(images, os.R_OK | os.X_OK):
                raise PermissionError(13, "Permission denied", str(images))
            for f in sorted(images.glob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    train_files.append(f)
                    train_labels.append(index[wnid])
        text = annotations.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {exc.filename or root}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"{annotations} is not UTF-8 text") from None
    val_files, val_labels = [], []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        if parts[1] not in index:
            raise DataError(f"{annotations}: class {parts[1]!r} has no train/{parts[1]}/ folder")
        if not parts[0] or "/" in parts[0] or "\\" in parts[0] or parts[0] in (".", ".."):
            raise DataError(f"{annotations}: {parts[0]!r} is not a file name in val/images/")
        val_files.append(val_root / "images" / parts[0])
        val_labels.append(index[parts[1]])
    # a stat per file: a missing or unreadable image now, not in the middle of an epoch
    for files, source in ((train_files, ""), (val_files, f" (named in {annotations})")):
        for f in files:
            if not f.is_file() or not os.access(f, os.R_OK):
                state = "cannot be read" if f.is_file() else "does not exist"
                raise DataError(f"image {f} {state}{source}")
    if not train_files or not val_files:
        raise DataError(f"no images found under {root}; {_layout('tiny-imagenet')}")
    return DataBundle(ImageFiles(train_files, train_labels, size, augment),
                      ImageFiles(val_files, val_labels, size, False), len(wnids),
                      (3, size, size), "tiny-imagenet")
