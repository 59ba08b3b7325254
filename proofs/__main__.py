"""``python -m proofs``: check every claim, print a table, write proofs/REPORT.md.

Exit status: 0 when every claim passes, 1 when one fails, 2 for bad arguments (checked,
with the output paths, before any claim runs), 130 when interrupted. ``--only`` runs a
subset and then writes nothing unless ``--report`` / ``--section-path`` name a file, so the
committed full report and README section are never replaced by a partial one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from capacity.cli import CommandParser, UsageError, check_output_file, command, write_text_atomic

HERE = Path(__file__).resolve().parent
DEFAULT_REPORT = HERE / "REPORT.md"
DEFAULT_SECTION = HERE.parent / "docs" / "proofs-section.md"
PROG = "python -m proofs"


def known_claims() -> list[str]:
    """Claim ids from the claim modules' file names (``cNN_*.py``), without importing them."""
    return sorted({m.group(1) for p in (HERE / "claims").glob("c*_*.py")
                   if (m := re.fullmatch(r"(c\d+)_\w+\.py", p.name))})


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        PROG, failure="a claim failed (a check did not hold or raised)",
        description="Check the claims of Section 5 and Appendix A with sympy, z3 and "
        "exhaustive enumeration; print a table and write proofs/REPORT.md.",
        epilog="example: python -m proofs --only c06 --json")
    parser.add_argument("--only", metavar="ID", action="append",
                        help="run only this claim (repeatable), e.g. --only c06; writes no file "
                             "unless --report or --section-path is given")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    out.add_argument("--readme-section", action="store_true",
                     help="print the README's markdown block and write it to "
                          "docs/proofs-section.md (all claims) or --section-path")
    parser.add_argument("--report", metavar="PATH", type=Path,
                        help="where to write the report (default: proofs/REPORT.md when every "
                             "claim runs)")
    parser.add_argument("--section-path", metavar="PATH", type=Path,
                        help="where --readme-section writes its block (default: "
                             "docs/proofs-section.md when every claim runs)")
    parser.add_argument("--no-write", action="store_true", help="write no files")
    return parser


def _plan(args) -> tuple[list[str], Path | None, Path | None]:
    """The claims to run and the files to write; UsageError before anything runs."""
    known = known_claims()
    ids = list(dict.fromkeys(args.only)) if args.only else known
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise UsageError(f"unknown claim {', '.join(unknown)}; known: {', '.join(known)}")
    if args.section_path is not None and not args.readme_section:
        raise UsageError("--section-path needs --readme-section (see --help)")
    if args.no_write:
        if args.report is not None or args.section_path is not None:
            raise UsageError("--no-write writes no files: drop --report / --section-path (see --help)")
        return ids, None, None
    partial = bool(args.only)  # a subset never replaces the committed full files
    report = args.report if args.report is not None or partial else DEFAULT_REPORT
    section = None
    if args.readme_section:
        section = args.section_path if args.section_path is not None or partial else DEFAULT_SECTION
    for path, what in ((report, "--report"), (section, "--section-path")):
        if path is not None:
            check_output_file(path, f"{what} file")
    return ids, report, section


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    """Run the claims; return the exit status."""
    args = _parser().parse_args(argv)
    ids, report_path, section_path = _plan(args)
    from proofs.framework import REGISTRY, run
    from proofs.report import as_json, readme_section, report_markdown, terminal_table

    import proofs.claims  # noqa: F401  (registers every claim)

    missing = [i for i in ids if i not in REGISTRY]
    if missing:  # a claim file that does not register its id
        raise UsageError(f"claim {', '.join(missing)} is not registered by its module")
    outcomes = [run(REGISTRY[i]) for i in ids]
    failed = any(o.verdict != "pass" for o in outcomes)
    try:
        if report_path is not None:
            write_text_atomic(report_path, report_markdown(outcomes))
        section = readme_section(outcomes) if args.readme_section else None
        if section_path is not None:
            write_text_atomic(section_path, section)
    except OSError as exc:
        sys.stderr.write(f"{PROG}: error: cannot write {exc.filename}: {exc.strerror}\n")
        return 1
    if section is not None:
        print(section, end="")
    elif args.json:
        print(json.dumps({"ok": not failed, "claims": as_json(outcomes)}, indent=2))
    else:
        print(terminal_table(outcomes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
