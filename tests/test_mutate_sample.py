"""tools/mutate_sample.py: the sample make mutate runs, and the score it reports."""

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "tools" / "mutate_sample.py"
_SPEC = importlib.util.spec_from_file_location("mutate_sample", _PATH)
ms = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ms)

RESULTS = """\
    capacity.optimum.x__tidy__mutmut_1: killed
    capacity.optimum.x__tidy__mutmut_2: survived
    capacity.pieces.xǁActivationǁpiece_at__mutmut_3: no tests
    snl_train.gates.xǁReLUGateǁforward__mutmut_12: timeout
    snl_train.trainer.x_run__mutmut_7: not checked
a line that is not a result
"""


def test_wilson_matches_the_closed_forms():
    z2 = 1.959963984540054 ** 2
    # 0 of n: the interval is [0, z^2 / (n + z^2)]; n of n: [n / (n + z^2), 1]
    low, high = ms.wilson(0, 10)
    assert low == pytest.approx(0, abs=1e-15) and high == pytest.approx(z2 / (10 + z2), rel=1e-12)
    low, high = ms.wilson(10, 10)
    assert low == pytest.approx(10 / (10 + z2), rel=1e-12) and high == pytest.approx(1, abs=1e-15)
    # half of n: symmetric about 1/2, half-width z sqrt(n/4 + z^2/4) / (n + z^2)
    low, high = ms.wilson(50, 100)
    half = 1.959963984540054 * math.sqrt(100 / 4 + z2 / 4) / (100 + z2)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), rel=1e-12)
    assert ms.wilson(0, 0) == (0.0, 1.0)


def test_results_are_parsed_by_name_and_module():
    status = ms.parse_results(RESULTS)
    assert status == {"capacity.optimum.x__tidy__mutmut_1": "killed",
                      "capacity.optimum.x__tidy__mutmut_2": "survived",
                      "capacity.pieces.xǁActivationǁpiece_at__mutmut_3": "no tests",
                      "snl_train.gates.xǁReLUGateǁforward__mutmut_12": "timeout",
                      "snl_train.trainer.x_run__mutmut_7": "not checked"}
    assert [ms.module_of(n) for n in status] == ["capacity.optimum", "capacity.optimum", "capacity.pieces",
                                                 "snl_train.gates", "snl_train.trainer"]


def test_the_sample_is_fixed_by_the_seed_and_capped_per_module():
    names = [f"capacity.bounds.x_f__mutmut_{i}" for i in range(50)] + \
            [f"snl_train.gates.xǁReLUGateǁforward__mutmut_{i}" for i in range(3)]
    first = ms.draw(names, 10, seed=7)
    assert first == ms.draw(list(reversed(names)), 10, seed=7)  # order of the listing is irrelevant
    assert len(first["capacity.bounds"]) == 10 and len(set(first["capacity.bounds"])) == 10
    assert sorted(first["snl_train.gates"]) == sorted(names[50:])  # fewer than asked: all of them
    assert set(first) == {"capacity.bounds", "snl_train.gates"}
    assert ms.draw(names, 10, seed=8)["capacity.bounds"] != first["capacity.bounds"]


def test_scores_and_exit_status(monkeypatch, capsys):
    status = ms.parse_results(RESULTS)
    monkeypatch.setattr(ms, "results", lambda mutmut: status)
    assert ms.main(["--report-only", "--per-module", "5"]) == 1  # optimum 1 of 2: below 90 %
    out = capsys.readouterr().out
    assert "survived: capacity.optimum.x__tidy__mutmut_2" in out
    assert "survived: capacity.pieces.xǁActivationǁpiece_at__mutmut_3" in out  # no tests counts
    row = next(line for line in out.splitlines() if line.startswith("capacity.optimum"))
    assert row.split()[1:5] == ["2", "1", "1", "0"] and "50.0%" in row
    gates = next(line for line in out.splitlines() if line.startswith("snl_train.gates"))
    assert gates.split()[1:5] == ["1", "1", "0", "0"] and "100.0%" in gates  # a timeout is a kill
    trainer = next(line for line in out.splitlines() if line.startswith("snl_train.trainer"))
    assert trainer.split()[1:5] == ["1", "0", "0", "1"]  # not checked: undecided, not a pass
    killed_only = {n: "killed" for n in status}
    monkeypatch.setattr(ms, "results", lambda mutmut: killed_only)
    assert ms.main(["--report-only"]) == 0
    monkeypatch.setattr(ms, "results", lambda mutmut: {})
    assert ms.main(["--report-only"]) == 2
    assert "no mutants found" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--per-module", "0"], "argument --per-module: must be >= 1, got '0'"),
    (["--target", "1.5"], "argument --target: must be in [0, 1]"),
    (["--report-only", "--mutmut", "/nonexistent/mutmut"], "cannot run '/nonexistent/mutmut'"),
    (["--report-only", "--mutmut", "false"], "false results failed"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert ms.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tools/mutate_sample.py: error: ") and message in err and err.count("\n") == 1
