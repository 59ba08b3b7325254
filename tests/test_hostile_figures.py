"""python -m figures against hostile directories and results files: one line, exit 2, no
traceback, no figure written or changed; the results files are read (and refused) before
matplotlib is imported."""
import json

import pytest

from hostile import CAN_DROP, assert_help_complete, refused, table, world, write

PROG = "python -m figures"
PARETO = {"experiment": "pareto", "runs": [
    {"model": "convnet", "dataset": "digits", "method": "pixel", "budget": 30, "seed": 0,
     "relu_count": 30, "relu_total": 448, "test_accuracy": 0.8, "teacher_test_accuracy": 0.9}]}

BAD_RESULTS = {
    "invalid UTF-8": b'{"experiment": "pareto", "runs": [], "x": "\xff"}',
    "nested 1000 deep": "[" * 1000 + "]" * 1000,
    "20,000-digit number": '{"experiment": "pareto", "runs": [' + "7" * 20_000 + "]}",
    "not an object": "[1, 2, 3]",
    "no list of runs": {"experiment": "pareto", "runs": 5},
    "truncated": '{"experiment": "pareto", "ru',
    "UTF-16": json.dumps(PARETO).encode("utf-16"),
}


@pytest.fixture(scope="module")
def files():
    with world() as root:
        write(root / "good" / "pareto.json", PARETO)
        write(root / "a_file", "x")
        (root / "dir_as_results" / "pareto.json").mkdir(parents=True)
        for k, (name, content) in enumerate(BAD_RESULTS.items()):
            write(root / f"bad{k}" / "pareto.json", content)
        write(root / "locked" / "pareto.json", PARETO, mode=0o600)  # nobody cannot read it
        (root / "readonly").mkdir(mode=0o555)  # nobody cannot write in it
        (root / "open").mkdir()
        (root / "open").chmod(0o777)  # nobody can write here
        write(root / "wrong" / "pareto.json", {"experiment": "pareto", "runs": [{"method": 1}]})
        yield root


CASES = [
    ("missing data directory", ["--data", "nowhere"], "does not exist"),
    ("data is a file", ["--data", "a_file"], "is a file, expected a directory"),
    ("out is a file", ["--data", "good", "--out", "a_file"], "is a file, expected a directory"),
    ("out inside a file", ["--data", "good", "--out", "a_file/figs"], "which is a file"),
    ("empty format", ["--data", "good", "--out", "o", "--formats", "png,"], "empty entry"),
    ("results file is a directory", ["--data", "dir_as_results", "--out", "o"], "is a directory"),
    *((f"results: {name}", ["--data", f"bad{k}", "--out", "o"], "pareto.json")
      for k, name in enumerate(BAD_RESULTS)),
    ("unknown option", ["--dpi", "300"], "unrecognized arguments"),
    # these two need matplotlib (the format list, a plot that fails on the document)
    ("unknown format", ["--data", "good", "--out", "o", "--formats", "png,bmpx"], "bmpx"),
    ("results the plot cannot use", ["--data", "wrong", "--out", "o"], "is not a results file"),
]


@table(CASES)
def test_bad_input_is_one_line_and_exit_2(files, argv, fragment):
    refused("figures", PROG, argv, fragment, files)


@pytest.mark.skipif(not CAN_DROP, reason="needs root to run the command as nobody")
@pytest.mark.parametrize("argv, fragment", [
    (["--data", "locked", "--out", "open"], "Permission denied"),
    (["--data", "good", "--out", "readonly"], "permission denied"),
], ids=["unreadable results file", "unwritable out directory"])
def test_permissions_as_nobody(files, argv, fragment):
    refused("figures", PROG, argv, fragment, files, as_nobody=True)


def test_help_lists_every_option_and_the_exit_codes():
    from figures.__main__ import build_parser

    assert_help_complete(build_parser())
