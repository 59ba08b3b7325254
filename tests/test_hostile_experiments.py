"""python -m snl_train.experiments against hostile options: one line, exit 2, no traceback,
decided before any run starts and without leaving a file behind; a results file that cannot
be written never costs the finished runs."""
import json
import os

import pytest

import snl_train.experiments as ex
from hostile import (CAN_DROP, assert_help_complete, one_error_line, refused, run_in_one_process,
                     snapshot, table, world, write)

PROG = "python -m snl_train.experiments"


@pytest.fixture(scope="module")
def files():
    with world() as root:
        write(root / "a_file", "x")
        (root / "a_dir.json").mkdir()
        write(root / "stale.partial.jsonl", '{"seed": 0}\n')
        (root / "readonly").mkdir(mode=0o555)
        yield root


CASES = [
    ("zero seeds", ["capacity", "--seeds", "0", "--out", "r.json"], "in [1, 1000]"),
    ("a billion seeds", ["capacity", "--seeds", "1000000000", "--out", "r.json"], "in [1, 1000]"),
    ("zero jobs", ["capacity", "--jobs", "0", "--out", "r.json"], "--jobs"),
    ("a million jobs", ["capacity", "--jobs", "1000000", "--out", "r.json"], "CPUs"),
    ("NaN seeds", ["capacity", "--seeds", "nan", "--out", "r.json"], "expected an integer"),
    ("out is a directory", ["capacity", "--out", "a_dir.json"], "is a directory"),
    ("out is not .json", ["retention", "--out", "results.csv"], "must name a .json file"),
    ("out inside a file", ["capacity", "--out", "a_file/r.json"], "which is a file"),
    ("model for retention", ["retention", "--model", "resnet18", "--out", "r.json"],
     "--model applies only to the distribution experiment"),
    ("negative budget", ["distribution", "--budgets", "30,-5", "--out", "d.json"],
     "non-negative integers"),
    ("budget not a number", ["distribution", "--budgets", "30,x", "--out", "d.json"],
     "non-negative integers"),
    ("unknown dataset", ["distribution", "--dataset", "mnist", "--out", "d.json"], "invalid choice"),
    ("missing data directory", ["distribution", "--dataset", "cifar10", "--data-dir", "nowhere",
                                "--out", "d.json"], "does not exist"),
    ("unfinished earlier sweep", ["capacity", "--out", "stale.json"], "finished runs of an earlier"),
    ("no experiment", ["--out", "r.json"], "required: experiment"),
    ("unknown experiment", ["accuracy", "--out", "r.json"], "invalid choice: 'accuracy'"),
]


@table(CASES)
def test_bad_input_is_one_line_and_exit_2(files, argv, fragment):
    refused("snl_train.experiments", PROG, argv, fragment, files)


def test_distribution_problems_found_before_any_run(files):
    """Found by building the model once, before any run (main: an empty OUT.partial.jsonl was
    left behind, or the error came from a worker after other runs)."""
    out = str(files / "d.json")
    cases = [["distribution", "--model", "nosuchnet", "--out", out],
             ["distribution", "--budgets", "30,100000000", "--out", out],
             ["distribution", "--dataset", "cifar10", "--out", out]]
    before = snapshot(files)
    results = run_in_one_process([{"module": "snl_train.experiments", "argv": a} for a in cases])
    for proc, fragment in zip(results, ["unknown model", "exceed the", "needs --data-dir"]):
        one_error_line(proc, PROG, 2, fragment)
    assert snapshot(files) == before


@pytest.mark.skipif(not CAN_DROP, reason="needs root to run the command as nobody")
def test_unwritable_out_as_nobody(files):
    refused("snl_train.experiments", PROG, ["capacity", "--quick", "--out", "readonly/c.json"],
            "permission denied", files, as_nobody=True)


def test_failed_final_write_keeps_the_finished_runs(tmp_path, monkeypatch, capsys):
    """The results file cannot be written at the end (disk full): exit 1, one line, and every
    finished run is still in OUT.partial.jsonl (main deleted it first, then raised)."""
    monkeypatch.setitem(ex.RUNNERS, "capacity", lambda spec: {**spec, "seconds": 0.0})

    def disk_full(doc, out):
        raise OSError(28, "No space left on device", str(out))

    monkeypatch.setattr(ex, "save", disk_full)
    out = tmp_path / "capacity.json"
    code = ex.main(["capacity", "--quick", "--jobs", "1", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "No space left" in err and "Traceback" not in err
    partial = tmp_path / "capacity.partial.jsonl"
    runs = [json.loads(line) for line in partial.read_text().splitlines()]
    assert len(runs) == len(ex.capacity_specs(quick=True)) and f"{len(runs)} finished runs" in err
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["capacity.partial.jsonl"]


def test_help_lists_every_option_and_the_exit_codes():
    assert "NAME.partial.jsonl" in assert_help_complete(ex.build_parser())
