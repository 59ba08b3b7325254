"""python -m capacity.optimize: output, JSON keys and bad input."""

import json
import subprocess
import sys

import pytest

from capacity.optimize import main


def run_json(capsys, *argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_worked_example(capsys):
    out = run_json(capsys, "--d1", "50000", "--d2", "5000", "--budget", "10000")
    paper, sharp = out["paper"], out["sharp"]
    assert paper["retained"] == ["14999/2", "5001/2"]
    assert paper["alpha"] == pytest.approx([0.14999, 0.5001], abs=1e-12)
    assert paper["interior"] is True
    assert paper["integer_retained"] == [[7499, 2501], [7500, 2500]]
    assert paper["capacity_bound"] == 7500 * 2500 + 7500 * 5000 + 2500 + 2
    assert sharp["retained"] == ["5000", "5000"]
    assert sharp["integer_retained"] == [[5000, 5000]]
    assert sharp["capacity_bound"] == 5001 * 5001 + 1
    for key in ("alpha", "retained", "integer_retained", "capacity_bound"):
        assert key in paper and key in sharp


def test_json_boundary_case(capsys):
    """B = 50 > 3 d2 - 1 for (100, 10): infeasible closed form, a2 = 1 binds."""
    paper = run_json(capsys, "--d1", "100", "--d2", "10", "--budget", "50")["paper"]
    assert paper["interior"] is False
    assert paper["retained"] == ["40", "10"]
    assert "a2 = 1" in paper["active"]


def test_widths_any_depth(capsys):
    out = run_json(capsys, "--widths", "100,50,10", "--budget", "64", "--p", "3")
    assert out["paper"] is None
    assert out["sharp"]["integer_retained"] == [[27, 27, 10]]
    assert out["sharp"]["capacity_bound"] == 55 * 55 * 21 + 1


def test_huge_numbers_stay_exact(capsys):
    big = 10**50
    out = run_json(capsys, "--d1", str(big), "--d2", str(big), "--budget", str(big + 1))
    half = big // 2
    assert out["sharp"]["integer_retained"] == [[half, half + 1], [half + 1, half]]
    assert out["sharp"]["retained"] == [f"{big + 1}/2", f"{big + 1}/2"]
    assert out["paper"]["capacity_bound"] > 2 * 10**99


def test_text_mentions_infeasible_closed_form(capsys):
    assert main(["--d1", "100", "--d2", "10", "--budget", "50"]) == 0
    text = capsys.readouterr().out
    assert "infeasible" in text and "a2 = 1" in text
    assert "Sharp bound" in text


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--d1", "1.5", "--d2", "3", "--budget", "2"], "must be an integer"),
        (["--d1", "abc", "--d2", "3", "--budget", "2"], "must be an integer"),
        (["--d1", "0", "--d2", "3", "--budget", "2"], "at least 1"),
        (["--d1", "-4", "--d2", "3", "--budget", "2"], "at least 1"),
        (["--d1", "4", "--d2", "3", "--budget", "-1"], "at least 0"),
        (["--d1", "4", "--d2", "3", "--budget", "8"], "exceeds"),
        (["--d1", "4", "--d2", "3", "--budget", "2", "--p", "1"], "p must be at least 2"),
        (["--widths", "4,3", "--d1", "4", "--budget", "2"], "not both"),
        (["--d1", "4", "--budget", "2"], "widths are missing"),
        (["--d1", "4", "--d2", "3"], "budget is missing"),
        (["--widths", "4,,3", "--budget", "2"], "must be an integer"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, argv, fragment):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in captured.err


def test_module_runs_without_torch():
    """The command as a subprocess: exit 2 on bad input and no torch/numpy/sympy imported."""
    code = (
        "import sys, runpy; sys.argv = ['x', '--d1', '5', '--d2', '3', '--budget', '4', '--json'];\n"
        "try:\n    runpy.run_module('capacity.optimize', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('torch', 'numpy', 'sympy', 'z3') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    bad = subprocess.run([sys.executable, "-m", "capacity.optimize", "--d1", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
