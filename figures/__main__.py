"""``python -m figures``: redraw every plot from the results files, without retraining."""
from __future__ import annotations

import argparse
import sys

from capacity.cli import quiet_broken_pipe


@quiet_broken_pipe
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m figures",
        description="Draw every figure (PNG and PDF) from the results files written by "
                    "python -m snl_train.experiments (private.json: benchmarks/private.py); "
                    "files that are missing are skipped.")
    parser.add_argument("--data", default="figures/data", help="directory of <experiment>.json")
    parser.add_argument("--out", default="figures", help="directory for the PNG and PDF files")
    parser.add_argument("--formats", default="png,pdf", help="comma-separated file formats")
    args = parser.parse_args(argv)
    from pathlib import Path

    if not Path(args.data).is_dir():
        print(f"error: no results directory {args.data}", file=sys.stderr)
        return 2
    from matplotlib.backend_bases import FigureCanvasBase

    from .plots import ResultsError, render_all

    formats = tuple(f.strip().lower() for f in args.formats.split(","))
    supported = FigureCanvasBase.get_supported_filetypes()
    unknown = [f for f in formats if f not in supported]
    if unknown:
        print(f"error: unknown --formats {','.join(unknown)}; choose from {', '.join(sorted(supported))}",
              file=sys.stderr)
        return 2
    try:
        written = render_all(args.data, args.out, formats)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    if not written:
        print(f"no results files in {args.data}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
