"""python -m capacity.pieces against hostile files and options: one line, exit 2, no
traceback, no file touched; counts that would not finish are refused or stopped in seconds."""
import json
import random

import pytest

from capacity.pieces import network_to_dict
from capacity.witnesses import zigzag_network
from hostile import CAN_DROP, assert_help_complete, refused, run, table, world, write

PROG = "python -m capacity.pieces"
GOOD = {"layers": [{"weight": [[1], [1]], "bias": [0, -1]}], "output": {"weight": [1, -2], "bias": 0}}


def wide(width: int) -> dict:
    """Two hidden layers of ``width`` with distinct integer kinks (an exact count is O(width^3))."""
    rnd = random.Random(0)
    return {"layers": [{"weight": [[1]] * width, "bias": list(range(width))},
                       {"weight": [[rnd.randint(-3, 3) for _ in range(width)] for _ in range(width)],
                        "bias": [0] * width}],
            "output": {"weight": [1] * width, "bias": 0}}


FILES = {
    "good.json": GOOD,
    "utf16.json": "\ufeff" + json.dumps(GOOD),  # written as UTF-16 below
    "latin1.json": b'{"layers": [], "output": {"weight": [], "bias": 1}, "activation": "\xe9"}',
    "deep.json": "[" * 5000 + "]" * 5000,
    "big_int.json": '{"layers": [], "output": {"weight": [], "bias": ' + "9" * 10_001 + "}}",
    "big_string.json": json.dumps({"layers": [], "output": {"weight": [], "bias": "9" * 30_000}}),
    "nan.json": '{"layers": [], "output": {"weight": [], "bias": NaN}}',
    "not_json.json": "{layers",
    "wide.json": wide(600),
    "huge_for_float.json": {"layers": [{"weight": [[1]], "bias": [0]}],
                            "output": {"weight": ["1" + "0" * 400], "bias": 0}},
    "zigzag.json": network_to_dict(zigzag_network([3] * 12)),  # 4^12 pieces
}


@pytest.fixture(scope="module")
def files():
    with world() as root:
        for name, content in FILES.items():
            write(root / name, content)
        (root / "utf16.json").write_bytes(json.dumps(GOOD).encode("utf-16"))
        (root / "a_directory.json").mkdir()
        write(root / "locked.json", GOOD, mode=0o600)  # readable by root only
        yield root


CASES = [
    ("missing file", ["nowhere.json"], "does not exist"),
    ("a directory", ["a_directory.json"], "is a directory"),
    ("UTF-16 with BOM", ["utf16.json"], "UTF-16"),
    ("invalid UTF-8", ["latin1.json"], "not UTF-8"),
    ("nested 5000 deep", ["deep.json"], "nested more than 64 levels"),
    ("10,001-digit integer", ["big_int.json"], "more than 10,000 digits"),
    ("30,000-digit string", ["big_string.json"], "at most 10,000 digits"),
    ("NaN", ["nan.json"], "NaN is not a number JSON allows"),
    ("not JSON", ["not_json.json"], "not valid JSON"),
    ("/dev/zero", ["/dev/zero"], "bytes"),
    ("no file given", [], "required: network (see --help)"),
    ("negative time limit", ["good.json", "--time-limit", "-1"], "must be >= 0"),
    ("NaN time limit", ["good.json", "--time-limit", "nan"], "finite"),
    ("exact count too large", ["wide.json"], "use --fast"),
    ("float64 overflow", ["huge_for_float.json", "--fast"], "too large for --fast"),
    ("count past the time limit", ["zigzag.json", "--time-limit", "1"], "stopped after 1 s"),
]


@table(CASES)
def test_bad_input_is_one_line_and_exit_2(files, argv, fragment):
    refused("capacity.pieces", PROG, argv, fragment, files)


def test_utf8_bom_is_read(files):
    """A UTF-8 byte-order mark (Windows editors write one) is not an error."""
    path = files / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode())
    try:
        proc = run("capacity.pieces", path, "--json")
    finally:
        path.unlink()
    assert proc.returncode == 0 and json.loads(proc.stdout)["pieces"] == 3


@pytest.mark.skipif(not CAN_DROP, reason="needs root to run the command as nobody")
def test_unreadable_file_as_nobody(files):
    refused("capacity.pieces", PROG, ["locked.json"], "Permission denied", files, as_nobody=True)


def test_help_lists_every_option_and_the_exit_codes():
    from capacity.pieces import build_parser

    assert "--time-limit" in assert_help_complete(build_parser())
