"""The README shows real output: its demo block and Python examples match the code."""

import doctest
from pathlib import Path

import pytest

import capacity.bounds
import capacity.exact
import capacity.exhaustive
import capacity.optimum
import capacity.symbolic
from capacity.optimize import render_text

README = Path(__file__).resolve().parent.parent / "README.md"


def test_demo_output_is_quoted_verbatim():
    """The paper's example as printed by the command appears in the README unchanged."""
    assert render_text([50000, 5000], 10000, 2) in README.read_text()


def test_pieces_output_is_quoted_verbatim():
    """`python -m capacity.pieces examples/net.json` prints what the README shows."""
    import subprocess
    import sys

    root = README.parent
    out = subprocess.run([sys.executable, "-m", "capacity.pieces", "examples/net.json"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    assert "$ python -m capacity.pieces examples/net.json\n" + out in README.read_text()


def test_readme_python_examples():
    failures, tried = doctest.testfile(str(README), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


@pytest.mark.parametrize(
    "module", [capacity.bounds, capacity.exact, capacity.exhaustive, capacity.optimum, capacity.symbolic]
)
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0


def test_console_scripts_exist_and_match_the_readme():
    """Every script of the README's command table is declared and points at a main()."""
    import importlib
    import re

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    scripts = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["scripts"]
    listed = set(re.findall(r"\| `(snl-[a-z]+)` \|", README.read_text()))
    assert listed and listed == set(scripts)
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name))
