"""python -m proofs against hostile options: one line, exit 2, no traceback, decided before
any claim runs (sympy not even imported); --only never replaces the committed full report or
README section."""
import shutil
import subprocess
import sys

import pytest

from hostile import CAN_DROP, ROOT, assert_help_complete, refused, run, snapshot, table, world, write

PROG = "python -m proofs"


@pytest.fixture(scope="module")
def files():
    with world() as root:
        write(root / "a_file", "x")
        (root / "a_dir").mkdir()
        (root / "locked").mkdir(mode=0o555)  # root may write here; nobody may not
        yield root


CASES = [
    ("unknown claim", ["--only", "c99"], "unknown claim c99"),
    ("empty claim id", ["--only", ""], "unknown claim"),
    ("report is a directory", ["--report", "a_dir"], "is a directory"),
    ("report inside a file", ["--report", "a_file/REPORT.md"], "which is a file"),
    ("section path without section", ["--section-path", "s.md"], "needs --readme-section"),
    ("json and section", ["--json", "--readme-section"], "not allowed with"),
    ("no-write with a report", ["--no-write", "--report", "r.md"], "--no-write writes no files"),
    ("unknown option", ["--verbose"], "unrecognized arguments: --verbose"),
    ("missing value", ["--only"], "expected one argument"),
]


@table(CASES)
def test_bad_input_is_one_line_and_exit_2(files, argv, fragment):
    refused("proofs", PROG, argv, fragment, files)


def test_bad_claim_is_refused_before_any_claim_is_imported():
    code = ("import sys\nfrom proofs.__main__ import main\n"
            "assert main(['--only', 'c99', '--report', '/nonexistent/dir/r.md']) == 2\n"
            "print(sorted(m for m in ('sympy', 'z3', 'proofs.claims') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-1000:]


@pytest.mark.skipif(not CAN_DROP, reason="needs root to run the command as nobody")
def test_unwritable_report_as_nobody(files):
    refused("proofs", PROG, ["--only", "c02", "--report", "locked/REPORT.md"],
            "permission denied", files, as_nobody=True)


def test_only_leaves_the_full_report_and_readme_section_alone():
    """On a copy of the package: --only c02 --readme-section prints the block and writes
    neither proofs/REPORT.md nor docs/proofs-section.md; --report PATH writes PATH only."""
    with world() as root:
        for package in ("proofs", "capacity"):
            shutil.copytree(ROOT / package, root / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        (root / "docs").mkdir()
        shutil.copy(ROOT / "docs" / "proofs-section.md", root / "docs")
        before = snapshot(root)
        proc = run("proofs", "--only", "c02", "--readme-section", cwd=root)
        assert proc.returncode == 0, proc.stderr[-1000:]
        assert "c02_relu_forms.md" in proc.stdout and "c06" not in proc.stdout
        assert snapshot(root) == before
        proc = run("proofs", "--only", "c02", "--report", root / "mine.md", cwd=root)
        assert proc.returncode == 0 and "## c02" in (root / "mine.md").read_text()
        assert (root / "proofs" / "REPORT.md").read_text() == (ROOT / "proofs" / "REPORT.md").read_text()


def test_help_lists_every_option_and_the_exit_codes():
    from proofs.__main__ import _parser

    assert "--section-path" in assert_help_complete(_parser())
