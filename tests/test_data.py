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
