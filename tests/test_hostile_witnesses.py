"""python -m capacity.witnesses against hostile options: one line, exit 2, no traceback, and
a table that would grow without bound (--max-width is N^4 exact counts) is refused at once."""
from hostile import assert_help_complete, refused, table

PROG = "python -m capacity.witnesses"

CASES = [
    ("a million wide", ["--max-width", "1000000"], "got '1000000' (the table grows"),
    ("just too wide", ["--max-width", "9"], "grows as N^4"),
    ("zero", ["--max-width", "0"], "in [1, 8]"),
    ("negative", ["--max-width", "-3"], "in [1, 8]"),
    ("not a number", ["--max-width", "three"], "expected an integer"),
    ("5,000 digits", ["--max-width", "9" * 5000], "(5,000 characters)"),
    ("both modes", ["--table", "--json"], "not allowed with argument --table"),
    ("unknown option", ["--width", "3"], "unrecognized arguments"),
]


@table(CASES)
def test_bad_input_is_one_line_and_exit_2(argv, fragment):
    line = refused("capacity.witnesses", PROG, argv, fragment)
    assert line.endswith("(see --help)") and len(line) < 300


def test_help_lists_the_exit_codes_and_the_limit():
    from capacity.witnesses import build_parser

    assert "at most 8" in assert_help_complete(build_parser())
