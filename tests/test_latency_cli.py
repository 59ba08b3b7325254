"""python -m capacity.optimize --latency-budget: text, JSON, cost profiles and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from capacity.optimize import LATENCY_EXAMPLE, main, parse_latency_problem, render_latency_text

README = Path(__file__).resolve().parent.parent / "README.md"
WORKED = ["--widths", "50000,5000", "--latency-budget", "10000", "--per-relu", "1", "--per-layer", "4950"]
DEEP = ["--widths", "4096,2048,512,64", "--latency-budget", "0.5", "--per-relu", "0.0002",
        "--per-layer", "0.09", "--linear", "0.1"]


def run(capsys, *argv):
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def run_json(capsys, *argv):
    return json.loads(run(capsys, *argv, "--json"))


def test_json_worked_example_empties_layer_two(capsys):
    """rho = 4950 > r* = 4929.79: one layer keeps T - rho = 5050 ReLUs under both bounds."""
    out = run_json(capsys, *WORKED)
    assert out["latency_budget"] == "10000" and out["cost"] == {"per_relu": "1", "per_layer": "4950", "linear": "0"}
    sharp, paper = out["sharp"], out["paper"]
    assert sharp["integer_retained"] == [[5050, 0]] and sharp["capacity_bound"] == 5052
    assert sharp["active_layers"] == [1] == sharp["always_active"]
    assert [(p["active"], p["relu_budget"], p["capacity_bound"]) for p in sharp["plans"]] == [
        (0, 0, 2), (1, 5050, 5052), (2, 100, 51 * 51 + 1)]
    assert sharp["optima"] == [{"active": 1, "layers": [1], "relu_budget": 5050, "retained": [5050, 0],
                                "latency": "10000", "capacity_bound": 5052}]
    assert sharp["same_total"] == [{"total": 5050, "integer_retained": [[2525, 2525]], "latency": ["14950"],
                                    "within_budget": [False], "same": False}]
    assert sharp["relu_proxy"]["relu_budget"] == 100 and sharp["relu_proxy"]["retained"] == [50, 50]
    threshold = sharp["emptying_threshold"]
    assert (threshold["rational"], threshold["surd"], threshold["radicand"]) == ("10001/2", "-1/2", "20001")
    assert threshold["reached"] is True and threshold["approx"] == pytest.approx(4929.7876, abs=1e-3)
    assert paper["integer_retained"] == [[5050, 0]] and paper["capacity_bound"] == 5050 * 5000 + 2
    assert "emptying_threshold" not in paper


def test_json_below_the_threshold_keeps_both_layers(capsys):
    """rho = 4929 < r*: two layers with 10000 - 2 * 4929 = 142 ReLUs, (71, 71)."""
    out = run_json(capsys, *WORKED[:-1], "4929")
    assert out["sharp"]["integer_retained"] == [[71, 71]] and out["sharp"]["emptying_threshold"]["reached"] is False
    assert out["sharp"]["same_total"][0]["same"] is True


def test_text_report(capsys):
    text = run(capsys, *WORKED)
    assert "Paper's bound (Corollary 1; one of four active sets)" in text
    assert "integer optima (ReLUs kept per layer): (5,050, 0)" in text
    assert "costs 14,950: over the budget by 4,950" in text
    assert "emptying one pays once rho/beta >= 4,929.79 (both open" in text
    assert text.count("<- optimum") == 2


def test_decimal_costs_are_exact_and_layers_are_emptied(capsys):
    """Decimal inputs stay exact (0.0002 = 1/5000); the narrowest of four layers is emptied."""
    out = run_json(capsys, *DEEP)
    assert out["cost"] == {"per_relu": "1/5000", "per_layer": "9/100", "linear": "1/10"}
    sharp = out["sharp"]
    assert out["paper"] is None  # Corollary 1 is stated for two layers only
    # (0.5 - 0.1 - 3 * 0.09) / 0.0002 = 650 ReLUs water-filled into the three widest layers
    assert sharp["optima"][0]["relu_budget"] == 650 and sharp["optima"][0]["layers"] == [1, 2, 3]
    assert sharp["integer_retained"] == [[216, 217, 217, 0], [217, 216, 217, 0], [217, 217, 216, 0]]
    assert sharp["always_active"] == [1, 2, 3] and "emptying_threshold" not in sharp
    text = run(capsys, *DEEP)
    assert "budget T = 0.5; per kept ReLU 0.0002, per active layer 0.09, linear layers 0.1" in text


def test_cost_profile_file(tmp_path, capsys):
    """--cost PROFILE.json gives the same report as the options."""
    profile = tmp_path / "cost.json"
    profile.write_text('{"per_relu": 0.0002, "per_layer": 0.09, "linear": 0.1, "unit": "s"}')
    by_file = run_json(capsys, *DEEP[:4], "--cost", str(profile))
    assert by_file == run_json(capsys, *DEEP)


def test_long_table_shows_the_ends_and_the_optimum(capsys):
    """Forty layers: the table keeps k = 0, 1, the optimum +-3 and the last two."""
    out = run_json(capsys, "--widths", ",".join(["64"] * 40), "--latency-budget", "400",
                   "--per-relu", "1", "--per-layer", "8")
    best = out["sharp"]["optima"][0]["active"]
    shown = [p["active"] for p in out["sharp"]["plans"]]
    assert shown[:2] == [0, 1] and shown[-1] == 40  # 40 layers can each afford 1 + 8
    assert set(range(best - 3, best + 4)) <= set(shown) and len(shown) < 41
    assert out["sharp"]["integer_ties"] > out["sharp"]["integer_ties_listed_max"]


def test_readme_shows_the_latency_example():
    """The README quotes the command's output for the four-layer example verbatim."""
    text = render_latency_text(parse_latency_problem(DEEP))
    assert "$ python -m capacity.optimize " + " ".join(DEEP) + "\n" + text in README.read_text()
    assert LATENCY_EXAMPLE.split()[3:] == WORKED


@pytest.mark.parametrize("argv, fragment", [
    (["--widths", "4,3", "--latency-budget", "-1", "--per-relu", "1", "--per-layer", "1"], "at least 0"),
    (["--widths", "4,3", "--latency-budget", "5", "--per-relu", "-1", "--per-layer", "1"], "at least 0"),
    (["--widths", "4,3", "--latency-budget", "5", "--per-relu", "1", "--per-layer", "-0.5"], "at least 0"),
    (["--widths", "4,3", "--latency-budget", "5", "--per-relu", "0", "--per-layer", "0"], "both 0"),
    (["--widths", "4,3", "--latency-budget", "5", "--per-relu", "abc", "--per-layer", "1"], "a number such as"),
    (["--widths", "4,3", "--latency-budget", "nan", "--per-relu", "1", "--per-layer", "1"], "a number such as"),
    (["--widths", "4,3", "--latency-budget", "5", "--per-relu", "1", "--per-layer", "1", "--linear", "6"],
     "below the cost of the linear layers alone"),
    (["--widths", "4,3", "--latency-budget", "5", "--per-relu", "1"], "costs are missing"),
    (["--widths", "4,3", "--per-relu", "1"], "--per-relu needs --latency-budget"),
    (["--widths", "4,3", "--budget", "3", "--latency-budget", "5", "--per-relu", "1", "--per-layer", "1"],
     "not both"),
    (["--latency-budget", "5", "--per-relu", "1", "--per-layer", "1"], "widths are missing"),
    (["--widths", "4,x", "--latency-budget", "5", "--per-relu", "1", "--per-layer", "1"], "must be an integer"),
    (["--widths", "4,3", "--latency-budget", "5", "--cost", "/nonexistent/cost.json"], "cannot read cost profile"),
    (["--widths", "4,3", "--latency-budget", "5", "--cost", "c.json", "--per-relu", "1"], "not both"),
])
def test_bad_input_one_line_exit_2(capsys, argv, fragment):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and fragment in lines[0]


@pytest.mark.parametrize("content, fragment", [
    ('{"per_relu": 1, "per_layer": 1, "linar": 2}', "unknown key(s) linar"),
    ('{"per_relu": 1}', "missing per_layer"),
    ("not json", "not valid JSON"),
    ('{"per_relu": 1, "per_layer": 1, "linear": 9}', "below the cost of the linear layers"),
])
def test_bad_profile_one_line_exit_2(tmp_path, capsys, content, fragment):
    profile = tmp_path / "cost.json"
    profile.write_text(content)
    assert main(["--widths", "4,3", "--latency-budget", "5", "--cost", str(profile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


def test_latency_mode_imports_nothing_heavy():
    """As a subprocess: the latency report runs without torch, numpy, sympy or z3."""
    code = (
        "import sys, runpy; sys.argv = ['x', *sys.argv[1:], '--json']\n"
        "try:\n    runpy.run_module('capacity.optimize', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'numpy', 'sympy', 'z3') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *WORKED], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
