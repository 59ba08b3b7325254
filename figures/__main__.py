"""``python -m figures``: redraw every plot from the results files, without retraining.

Bad input (a missing or unreadable results directory, a results file that is not JSON or
not what its plot needs, an --out that is a file or cannot be written, unknown formats) is
reported in one line with exit code 2 before any figure is written; the results files are
read before matplotlib is imported, so those errors come at once.
"""
from __future__ import annotations

import argparse
import sys

from capacity.cli import (CommandParser, UsageError, check_input_dir, check_output_dir,
                          check_output_file, command)

PROG = "python -m figures"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m figures``."""
    parser = CommandParser(
        PROG, failure="a figure could not be written",
        description="Draw every figure (PNG and PDF) from the results files written by "
                    "python -m snl_train.experiments (private.json: benchmarks/private.py); "
                    "files that are missing are skipped.",
        epilog="example: python -m figures --data figures/data --out figures --formats png")
    parser.add_argument("--data", default="figures/data",
                        help="directory of <experiment>.json results files (default figures/data)")
    parser.add_argument("--out", default="figures",
                        help="directory for the figure files, created if needed (default figures)")
    parser.add_argument("--formats", default="png,pdf",
                        help="comma-separated file formats, e.g. png,pdf,svg (default png,pdf)")
    return parser


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",")))
    if not all(formats):
        raise UsageError(f"--formats has an empty entry: {text!r} (see --help)")
    return formats


@command(PROG)
def main(argv=None) -> int:
    """Entry point; returns the exit code (0 ok, 1 a figure could not be written, 2 bad input)."""
    args = build_parser().parse_args(argv)
    formats = _formats(args.formats)
    data = check_input_dir(args.data, "results directory")
    out = check_output_dir(args.out, "--out directory")
    from .results import ResultsError, read_results

    try:
        docs = read_results(data)
    except ResultsError as exc:
        raise UsageError(str(exc)) from None
    if not docs:
        print(f"no results files in {data}", file=sys.stderr)
        return 0
    from matplotlib.backend_bases import FigureCanvasBase

    from .plots import FIGURES, render_all

    supported = FigureCanvasBase.get_supported_filetypes()
    unknown = [f for f in formats if f not in supported]
    if unknown:
        raise UsageError(f"unknown --formats {','.join(unknown)}; choose from "
                         f"{', '.join(sorted(supported))}")
    for experiment, name, _ in FIGURES:  # every file to be replaced must be writable
        if experiment in docs:
            for fmt in formats:
                check_output_file(out / f"{name}.{fmt}", "figure file")
    try:
        written = render_all(data, out, formats, docs=docs)
    except ResultsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        sys.stderr.write(f"{PROG}: error: cannot write {exc.filename or args.out}: "
                         f"{exc.strerror or exc}\n")
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
