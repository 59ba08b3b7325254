"""python -m capacity.optimize against hostile input: one line, exit 2, no traceback, and
numbers of any size (up to the documented 10,000 digits) stay exact."""
import json
import sys

from hostile import assert_help_complete, refused, run, table

PROG = "python -m capacity.optimize"
BIG = "9" * 5000  # past Python's default 4,300-digit int <-> str limit
TOO_LONG = "9" * 10_001
MANY_TIES = ",".join(["7"] * 2000)  # budget 7000: 1000 of 2000 layers get a 4th ReLU

CASES = [
    ("nan width", ["--d1", "nan", "--d2", "3", "--budget", "2"], "must be an integer"),
    ("float width", ["--d1", "1e3", "--d2", "3", "--budget", "2"], "must be an integer"),
    ("zero width", ["--d1", "0", "--d2", "3", "--budget", "2"], "at least 1"),
    ("negative budget", ["--d1", "4", "--d2", "3", "--budget", "-1"], "at least 0"),
    ("p below 2", ["--d1", "4", "--d2", "3", "--budget", "2", "--p", "1"], "p must be at least 2"),
    ("empty width", ["--widths", "4,,3", "--budget", "2"], "must be an integer"),
    ("unknown option", ["--bogus"], "unrecognized arguments: --bogus (see --help)"),
    ("missing value", ["--d1"], "expected one argument (see --help)"),
    ("newline in a value", ["--d1", "4\n5", "--d2", "3", "--budget", "2"], "must be an integer"),
    ("too many digits", ["--d1", TOO_LONG, "--d2", "3", "--budget", "2"], "10,000"),
    ("result too long", ["--widths", ",".join([BIG] * 12), "--budget", "5"], "digits"),
    ("too many ties to list", ["--widths", MANY_TIES, "--budget", "7000"], "tied integer"),
]


@table(CASES)
def test_bad_input_is_one_line_and_exit_2(argv, fragment):
    assert len(refused("capacity.optimize", PROG, argv, fragment)) < 700


def test_numbers_past_the_int_string_limit_stay_exact():
    """The README's promise: 5,000-digit widths work and print exactly (main: traceback)."""
    proc = run("capacity.optimize", "--d1", BIG, "--d2", BIG, "--budget", BIG, "--json")
    assert proc.returncode == 0, proc.stderr[-500:]
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # the capacity bounds have 10,000 digits
    try:
        sharp = json.loads(proc.stdout)["sharp"]
        half = int(BIG) // 2
    finally:
        sys.set_int_max_str_digits(limit)
    assert sharp["retained"] == [f"{BIG}/2", f"{BIG}/2"]
    assert sorted(map(tuple, sharp["integer_retained"])) == [(half, half + 1), (half + 1, half)]


def test_help_lists_every_option_and_the_exit_codes():
    from capacity.optimize import build_parser

    assert_help_complete(build_parser())
    proc = run("capacity.optimize", "--help")
    assert proc.returncode == 0 and "exit codes:" in proc.stdout


def test_shared_command_helpers_examples():
    """The docstring examples of capacity.cli (one-line messages, checked values)."""
    import doctest

    import capacity.cli

    failures, tried = doctest.testmod(capacity.cli)
    assert tried >= 8 and failures == 0
