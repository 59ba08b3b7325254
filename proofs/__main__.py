"""``python -m proofs``: check every claim, print a table, write proofs/REPORT.md.

Exit status: 0 when every claim passes, 1 when one fails, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from capacity.cli import quiet_broken_pipe

from proofs.framework import REGISTRY, run
from proofs.report import as_json, readme_section, report_markdown, terminal_table

HERE = Path(__file__).resolve().parent
DEFAULT_REPORT = HERE / "REPORT.md"
DEFAULT_SECTION = HERE.parent / "docs" / "proofs-section.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proofs",
        description="Check the claims of Section 5 and Appendix A with sympy, z3 and "
        "exhaustive enumeration; print a table and write proofs/REPORT.md.",
    )
    parser.add_argument("--only", metavar="ID", action="append",
                        help="run only this claim (repeatable), e.g. --only c06")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--readme-section", action="store_true",
                        help="print the README's markdown block and write it to docs/proofs-section.md")
    parser.add_argument("--report", metavar="PATH", type=Path, default=DEFAULT_REPORT,
                        help="where to write the report (default: proofs/REPORT.md)")
    parser.add_argument("--section-path", metavar="PATH", type=Path, default=DEFAULT_SECTION,
                        help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="write no files")
    return parser


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    """Run the claims; return the exit status."""
    args = _parser().parse_args(argv)
    import proofs.claims  # noqa: F401  (registers every claim)

    ids = args.only or sorted(REGISTRY)
    unknown = [i for i in ids if i not in REGISTRY]
    if unknown:
        print(f"error: unknown claim {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}",
              file=sys.stderr)
        return 2
    outcomes = [run(REGISTRY[i]) for i in ids]
    failed = any(o.verdict != "pass" for o in outcomes)
    if not args.no_write and not args.only:
        args.report.write_text(report_markdown(outcomes))
    if args.readme_section:
        section = readme_section(outcomes)
        if not args.no_write:
            args.section_path.write_text(section)
        print(section, end="")
    elif args.json:
        print(json.dumps({"ok": not failed, "claims": as_json(outcomes)}, indent=2))
    else:
        print(terminal_table(outcomes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
