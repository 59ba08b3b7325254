"""Tests for snl_train.data: built-in sets, and CIFAR / Tiny-ImageNet read from tiny files."""
import pickle

import numpy as np
import pytest
import torch

from snl_train.data import DataError, load_dataset


def test_digits_split_is_stratified_scaled_and_seeded():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert a.in_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.test) == 1797
    x, _ = a.train.tensors
    assert x.shape[1:] == (1, 8, 8) and x.min() == 0 and x.max() == 1
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])
    counts = torch.bincount(a.test.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class


def test_collinear_points_alternate_and_lie_on_a_line():
    bundle = load_dataset("collinear", n=10, dim=3)
    x, y = bundle.train.tensors
    assert y.tolist() == [i % 2 for i in range(10)]
    steps = x[1:] - x[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-6)
    assert torch.allclose(x[0], torch.zeros(3))


def test_random_labels_shapes_and_seed():
    a = load_dataset("random", n=20, dim=5, num_classes=3, seed=4)
    b = load_dataset("random", n=20, dim=5, num_classes=3, seed=4)
    assert a.in_shape == (5,) and a.num_classes == 3
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert set(a.train.tensors[1].tolist()) <= {0, 1, 2}


def _write_cifar(root, name, n, label_key, classes):
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             label_key: [int(v) for v in rng.integers(0, classes, n)]}
    with open(root / name, "wb") as f:
        pickle.dump(batch, f)
    return batch


def test_cifar10_reads_python_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        _write_cifar(root, f"data_batch_{i}", 3, b"labels", 10)
    test = _write_cifar(root, "test_batch", 4, b"labels", 10)
    bundle = load_dataset("cifar10", data_dir=tmp_path)
    assert len(bundle.train) == 15 and len(bundle.test) == 4 and bundle.num_classes == 10
    x, y = bundle.test[2]
    assert x.shape == (3, 32, 32) and y == test[b"labels"][2]
    # channel 0 of pixel (0, 0) is byte 0 of the row, normalised with the CIFAR-10 statistics
    expected = (test[b"data"][2][0] / 255.0 - 0.4914) / 0.2470
    assert x[0, 0, 0].item() == pytest.approx(expected, abs=1e-5)
    torch.manual_seed(0)
    assert bundle.train[0][0].shape == (3, 32, 32)


def test_cifar100_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    _write_cifar(root, "train", 5, b"fine_labels", 100)
    test = _write_cifar(root, "test", 2, b"fine_labels", 100)
    bundle = load_dataset("cifar100", data_dir=tmp_path)
    assert bundle.num_classes == 100 and len(bundle.train) == 5
    assert [bundle.test[i][1] for i in range(2)] == test[b"fine_labels"]


def test_augmentation_changes_training_images_but_not_test(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    _write_cifar(root, "train", 2, b"fine_labels", 100)
    _write_cifar(root, "test", 2, b"fine_labels", 100)
    bundle = load_dataset("cifar100", data_dir=tmp_path)
    torch.manual_seed(0)
    views = [bundle.train[0][0] for _ in range(8)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert torch.equal(bundle.test[0][0], bundle.test[0][0])


def test_tiny_imagenet_image_folders(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    for k, wnid in enumerate(["n02", "n01"]):
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), (40 * k, 10 * j, 200)).save(images / f"{wnid}_{j}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64), (255, 255, 255)).save(root / "val" / "images" / "val_0.png")
    (root / "val" / "val_annotations.txt").write_text("val_0.png\tn02\t0\t0\t63\t63\n")
    bundle = load_dataset("tiny-imagenet", data_dir=tmp_path)
    assert bundle.num_classes == 2 and len(bundle.train) == 4 and len(bundle.test) == 1
    x, y = bundle.test[0]
    assert x.shape == (3, 64, 64) and y == 1  # classes are the sorted wnids: n01, n02
    assert x[0, 0, 0].item() == pytest.approx((1.0 - 0.4802) / 0.2770, abs=1e-5)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tiny-imagenet"])
def test_missing_directory_says_what_to_put_where(tmp_path, name):
    with pytest.raises(DataError, match="expected DIR/"):
        load_dataset(name, data_dir=tmp_path)


def test_unknown_dataset_and_corrupt_batch(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("mnist")
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    (root / "train").write_bytes(b"not a pickle")
    (root / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("cifar100", data_dir=tmp_path)


# ------------------------------------------------------------------ on-device data

def _reference_crops(image: torch.Tensor, pad: int) -> dict:
    """Every crop + flip ``random_crop_flip`` can return, by (top, left, flip), sliced by hand."""
    _, h, w = image.shape
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    crops = {}
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[:, top:top + h, left:left + w]
            crops[(top, left, False)], crops[(top, left, True)] = crop, crop.flip(-1)
    return crops


def test_batched_crop_flip_equals_random_crop_flip_for_the_same_draws():
    """Given the draws random_crop_flip makes, the batched crop returns the same images."""
    from snl_train.data import crop_flip_batch, random_crop_flip

    images = torch.randint(0, 256, (40, 3, 6, 5), dtype=torch.uint8)  # H != W catches a swap
    expected, offsets, flips = [], [], []
    for i, image in enumerate(images):
        torch.manual_seed(i)
        expected.append(random_crop_flip(image.float() / 255, 2))
        torch.manual_seed(i)  # replay the same draws
        offsets.append(torch.randint(0, 5, (2,)).tolist())
        flips.append(bool(torch.rand(()) < 0.5))
    got = crop_flip_batch(images, 2, torch.tensor(offsets), torch.tensor(flips)).float() / 255
    assert set(flips) == {False, True} and len({tuple(o) for o in offsets}) > 10
    assert torch.equal(got, torch.stack(expected))


def test_device_augmentation_is_uniform_over_the_81_crops_and_2_flips():
    """Over epochs the (top, left, flip) draws are uniform on 9 x 9 x 2 (chi-square, 161 dof)."""
    from scipy.stats import chi2

    from snl_train.data import DeviceData

    pad, n = 4, 162 * 40
    image = torch.arange(1, 1 + 3 * 5 * 6, dtype=torch.uint8).view(3, 5, 6)  # distinct, non-zero
    crops = {c.to(torch.uint8).numpy().tobytes(): key
             for key, c in _reference_crops(image, pad).items()}
    assert len(crops) == 162
    data = DeviceData((image.expand(n, 3, 5, 6), torch.arange(n)), (0.0,) * 3, (1.0,) * 3, pad)
    counts = dict.fromkeys(crops.values(), 0)
    for x, _ in data.batches(1000, True, torch.Generator().manual_seed(0)):
        for sample in x.mul(255).round().to(torch.uint8):
            counts[crops[sample.numpy().tobytes()]] += 1  # KeyError: not a possible crop
    expected = n / 162
    statistic = sum((c - expected) ** 2 / expected for c in counts.values())
    assert statistic < chi2.ppf(0.999, 161)
    flipped = sum(c for (_, _, flip), c in counts.items() if flip)
    assert abs(flipped / n - 0.5) < 3 * (0.25 / n) ** 0.5 + 1e-9


def test_device_data_serves_every_sample_once_normalised_like_the_host_dataset():
    from snl_train.data import AugmentedImages, on_device

    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    labels = torch.arange(10)
    host = AugmentedImages(images, labels, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), augment=False)
    device = on_device(host, "cpu")
    batches = list(device.batches(4, True, torch.Generator().manual_seed(1)))
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(device.batches(4, False)) == 3
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    for x, y in batches:
        for xi, yi in zip(x, y):
            assert torch.equal(xi, host[int(yi)][0])  # bit for bit the host's normalisation
    augmented = on_device(AugmentedImages(images, labels, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), True), "cpu")
    x, y = next(iter(augmented.batches(10, False, torch.Generator().manual_seed(0))))
    assert not torch.equal(x, torch.stack([host[i][0] for i in range(10)]))
    assert on_device(load_dataset("digits").train, "cpu").pad is None
