"""python -m snl_train against hostile input: one line, exit 2, no traceback, no file changed;
option values and the run directory are checked before torch is imported; models, data and
checkpoints before any training; a CIFAR batch never runs code; a closed stdout does not stop
a run; a run is never overwritten without --overwrite nor resumed with other options."""
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest

from hostile import (CAN_DROP, assert_help_complete, one_error_line, refused, run,
                     run_in_one_process, snapshot, table, world, write)

PROG = "python -m snl_train"
BASE = ["--dataset", "random", "--widths", "8,4", "--budget", "3", "--quiet"]
TINY = ["--dataset", "random", "--widths", "8,4", "--pretrain-epochs", "2", "--search-epochs",
        "4", "--finetune-epochs", "1", "--lambda", "0.05", "--lr", "0.05", "--threads", "1",
        "--budget", "3"]


@pytest.fixture(scope="module")
def files():
    with world() as root:
        write(root / "a_file", "x")
        write(root / "old_run" / "checkpoint.pt", b"weights")
        write(root / "old_run" / "result.json", {"relu_count": 3})
        (root / "empty_run").mkdir()
        (root / "odd_run" / "metrics.jsonl").mkdir(parents=True)
        (root / "readonly").mkdir(mode=0o555)
        (root / "private_data").mkdir(mode=0o700)
        yield root


CASES = [
    ("NaN lambda", ["--lambda", "nan"], "--lambda: must be > 0 and finite"),
    ("infinite lambda", ["--lambda", "inf"], "--lambda: must be > 0 and finite"),
    ("negative lambda", ["--lambda=-1e-5"], "--lambda: must be > 0"),
    ("kappa below 1", ["--kappa", "0.5"], "--kappa: must be >= 1"),
    ("epsilon 1", ["--epsilon", "1"], "--epsilon: must be in [0, 1)"),
    ("negative epsilon", ["--epsilon=-0.01"], "--epsilon: must be in [0, 1)"),
    ("NaN epsilon", ["--epsilon", "nan"], "--epsilon"),
    ("infinite lr", ["--lr", "inf"], "--lr: must be > 0 and finite"),
    ("NaN pretrain lr", ["--pretrain-lr", "nan"], "--pretrain-lr"),
    ("zero finetune lr", ["--finetune-lr", "0"], "--finetune-lr: must be > 0"),
    ("NaN budget fraction", ["--budget-fraction", "nan", "--budget", "3"], "--budget-fraction"),
    ("negative seed", ["--seed=-1"], "--seed: must be in [0, 4294967295]"),
    ("seed past 2^32", ["--seed", str(2**40)], "--seed: must be in [0, 4294967295]"),
    ("a million threads", ["--threads", "1000000"], "--threads"),
    ("a million workers", ["--workers", "1000000"], "--workers"),
    ("zero batch", ["--batch-size", "0"], "--batch-size: must be >= 1"),
    ("a billion epochs", ["--pretrain-epochs", "1000000000"], "--pretrain-epochs"),
    ("1001 layers", ["--widths", ",".join(["4"] * 1001)], "at most 1,000 values"),
    ("5,000-digit width", ["--widths", "9" * 5000], "(5,000 characters)"),
    ("width past 2^31", ["--widths", f"8,{2**31}"], "positive integers below 2^31"),
    ("zero milestone", ["--milestones", "0,5"], "positive integers"),
    ("unknown device", ["--device", "tpu"], "unsupported device 'tpu'"),
    ("resume and overwrite", ["--resume", "--overwrite"], "give one"),
    ("data dir for a built-in set", ["--data-dir", "."], "--data-dir is read only for"),
    ("missing data dir", ["--dataset", "cifar10", "--data-dir", "nowhere"], "does not exist"),
    ("unknown option", ["--learning-rate", "0.1"], "unrecognized arguments"),
]


@table(CASES)
def test_bad_option_is_one_line_and_exit_2(files, argv, fragment):
    refused("snl_train", PROG, [*BASE, *argv, "--out", "new_run"], fragment, files)


OUT_CASES = [
    ("out is a file", ["--out", "a_file"], "is a file, expected a directory"),
    ("out inside a file", ["--out", "a_file/run"], "which is a file"),
    ("out holds a run", ["--out", "old_run"], "continue it with --resume, or start over with --overwrite"),
    ("resume without a checkpoint", ["--out", "empty_run", "--resume"], "no checkpoint"),
    ("a run file is a directory", ["--out", "odd_run"], "is not a file"),
]


@table(OUT_CASES)
def test_bad_run_directory_is_one_line_and_exit_2(files, argv, fragment):
    refused("snl_train", PROG, [*BASE, *argv], fragment, files)


@pytest.mark.skipif(not CAN_DROP, reason="needs root to run the command as nobody")
@pytest.mark.parametrize("argv, fragment", [
    (["--out", "readonly/run"], "permission denied"),
    (["--dataset", "cifar10", "--data-dir", "private_data", "--out", "/tmp/unused-run"],
     "cannot read --data-dir"),
], ids=["unwritable out", "unreadable data dir"])
def test_permissions_as_nobody(files, argv, fragment):
    refused("snl_train", PROG, [*BASE, *argv], fragment, files, as_nobody=True)
    assert not os.path.exists("/tmp/unused-run")


# ----------------------------------------------------------------------------- with torch

MODELS = '''
import torch
from torch import nn

class NoParams(nn.Module):
    def forward(self, x):
        return torch.relu(x.flatten(1))[:, :2]

class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 2)
    def forward(self, x):
        y = torch.relu(self.lin(x.flatten(1)))
        return y, y

def no_params(): return NoParams()
def pair(): return Pair()
def seven_classes(): return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 7))
def cifar_input(): return nn.Sequential(nn.Flatten(), nn.Linear(3072, 8), nn.ReLU(), nn.Linear(8, 2))
def broken(): raise RuntimeError("factory broke")
'''


class Marker:
    """A pickle that would create a file when unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _cifar(root, test_batch):
    rng = np.random.default_rng(0)
    batch_dir = root / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [0, 1]}
        (batch_dir / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (batch_dir / "test_batch").write_bytes(pickle.dumps(test_batch))
    return root


def _tiny_imagenet(root):
    from PIL import Image

    images = root / "tiny-imagenet-200" / "train" / "n01" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(images / "a.JPEG")
    (root / "tiny-imagenet-200" / "val" / "images").mkdir(parents=True)
    (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text("gone.JPEG\tn01\n")
    return root


def _checkpoints(run_dir, root):
    """Copies of a finished run with one thing wrong in each checkpoint."""
    import torch

    good = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    changes = {
        "lacks model": lambda s: s.pop("model"),
        "epoch is text": lambda s: s.update(epoch="three"),
        "RNG state cut short": lambda s: s.update(rng={"torch": torch.zeros(7, dtype=torch.uint8)}),
        "unknown config entry": lambda s: s.update(config={**s["config"], "colour": "red"}),
        "weights of another model": lambda s: s.update(model={"w": torch.zeros(3)}),
    }
    dirs = {}
    for name, change in changes.items():
        target = root / f"ckpt {name}"
        shutil.copytree(run_dir, target)
        state = dict(good)
        change(state)
        torch.save(state, target / "checkpoint.pt")
        dirs[name] = target
    garbage = root / "ckpt garbage"
    shutil.copytree(run_dir, garbage)
    (garbage / "checkpoint.pt").write_bytes(b"\x80\x02not a checkpoint")
    dirs["garbage"] = garbage
    return dirs


def test_training_command_checks_with_torch():
    """One real run with stdout closed (it must finish: main stopped after the first log
    line), then every torch-side bad input in one process: models, data, checkpoints,
    resuming with other options; each one line and exit 2 with nothing changed."""
    with world() as root:
        run_dir = root / "run"
        read_end, write_end = os.pipe()
        os.close(read_end)  # nobody reads: every write to stdout fails with EPIPE
        try:
            proc = run("snl_train", *TINY, "--out", run_dir, stdout=write_end,
                       stderr=subprocess.PIPE, capture_output=False, timeout=300)
        finally:
            os.close(write_end)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert (run_dir / "result.json").is_file()

        write(root / "mods" / "hostile_models.py", MODELS)
        marker = root / "PWNED"
        evil = _cifar(root / "evil", {b"data": Marker(marker), b"labels": [0]})
        labels = _cifar(root / "labels", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
        tiny = _tiny_imagenet(root / "tiny")
        ckpt = _checkpoints(run_dir, root)
        fresh = str(root / "never_created")
        cases = [  # (argv, fragment)
            *(([*BASE, "--model", f"hostile_models:{m}", "--out", fresh], fragment) for m, fragment in (
                ("no_params", "has no parameters"),
                ("pair", "returns a tuple of 2 items"),
                ("seven_classes", "to outputs of shape (2, 7); expected (2, 2)"),
                ("cifar_input", "does not accept random inputs of shape (2, 16)"),
                ("broken", "failed: RuntimeError: factory broke"))),
            ([*BASE[:2], "--widths", "100000000,100000000", "--budget", "3", "--out", fresh], "GiB"),
            ([*BASE[2:], "--dataset", "cifar10", "--data-dir", str(evil), "--out", fresh],
             "refusing to load posix.system"),
            ([*BASE[2:], "--dataset", "cifar10", "--data-dir", str(labels), "--out", fresh],
             "labels must be in 0..9"),
            ([*BASE[2:], "--dataset", "tiny-imagenet", "--data-dir", str(tiny), "--out", fresh],
             "gone.JPEG does not exist (named in"),
            *(([*TINY, "--out", str(ckpt[name]), "--resume"], fragment) for name, fragment in (
                ("lacks model", "lacks model"),
                ("epoch is text", "corrupt or incompatible checkpoint"),
                ("RNG state cut short", "corrupt or incompatible checkpoint"),
                ("unknown config entry", "corrupt or incompatible checkpoint"),
                ("weights of another model", "corrupt or incompatible checkpoint"),
                ("garbage", "corrupt checkpoint"))),
            ([*TINY, "--lambda", "0.5", "--out", str(run_dir), "--resume"],
             "written with --lambda 0.05, this run has 0.5"),
            ([*TINY, "--search-epochs", "9", "--out", str(run_dir), "--resume"],
             "written with --search-epochs 4, this run has 9"),
        ]
        again = root / "again"  # a run killed while writing a checkpoint, resumed
        shutil.copytree(run_dir, again)
        orphan = again / "checkpoint.pt.k2j4h5g3.tmp"
        orphan.write_bytes(b"half a checkpoint")
        checked = [p for p in root.iterdir() if p != again]
        before = snapshot(*checked)
        results = run_in_one_process(
            [{"module": "snl_train.__main__", "argv": argv, "path": [str(root / "mods")]}
             for argv in [*(c[0] for c in cases),
                          [*TINY, "--threads", "2", "--quiet", "--out", str(again), "--resume"]]])
        failures = []
        for (argv, fragment), proc in zip(cases, results):
            try:
                one_error_line(proc, PROG, 2, fragment)
            except AssertionError as exc:
                failures.append(f"{argv[-4:]}: {exc}")
        assert not failures, "\n".join(failures)
        assert not marker.exists(), "a CIFAR batch ran a command"
        assert snapshot(*checked) == before and not os.path.exists(fresh)
        resumed = results[-1]  # another thread count does not change the result: allowed
        assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr[-2000:]
        assert not orphan.exists()


def test_help_names_every_option_and_the_exit_codes():
    from snl_train.__main__ import build_parser

    assert "--overwrite" in assert_help_complete(build_parser())


def test_preflight_examples():
    """The docstring examples of snl_train.preflight (sizes, run directory)."""
    import doctest

    import snl_train.preflight

    failures, tried = doctest.testmod(snl_train.preflight)
    assert tried >= 3 and failures == 0


def test_cifar_batch_whose_reduce_runs_a_command_is_refused(tmp_path):
    """The restricted unpickler: a batch naming os.system is refused and the command never
    runs (main: pickle.load ran it and created the marker); a protocol-2 batch, which names
    _codecs.encode and numpy's array rebuilders, still loads."""
    from snl_train.data import DataError, load_dataset

    marker = tmp_path / "PWNED"
    root = _cifar(tmp_path / "evil", {b"data": Marker(marker), b"labels": [0]})
    with pytest.raises(DataError, match="refusing to load posix.system"):
        load_dataset("cifar10", root)
    assert not marker.exists()
    batch = {b"data": np.full((2, 3072), 7, np.uint8), b"labels": [3, 9]}
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    bundle = load_dataset("cifar10", root, augment=False)
    assert [bundle.test[i][1] for i in range(2)] == [3, 9]
