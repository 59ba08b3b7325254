"""figures.stats on hand-made runs whose answers are known."""
import math

import pytest

from figures.stats import (absolute_error, closer, mean_ci, position, position_summary, summarize,
                           summary_table)


def run(a, paper, sharp, **setting):
    return {"learned_alpha": list(a), "predicted": {"paper": list(paper), "sharp": list(sharp)},
            "dataset": "d", "widths": [4, 2], "budget": 3, **setting}


def test_mean_ci_matches_t_interval_by_hand():
    # n = 4, mean 2.5, sd = sqrt(5/3), t_{0.975, 3} = 3.182446305284263
    iv = mean_ci([1, 2, 3, 4])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert iv.mean == pytest.approx(2.5, abs=1e-12)
    assert iv.low == pytest.approx(2.5 - half, abs=1e-9)
    assert iv.high == pytest.approx(2.5 + half, abs=1e-9)
    assert iv.n == 4


def test_mean_ci_level_and_degenerate_cases():
    assert mean_ci([1, 2, 3], 0.99).half_width > mean_ci([1, 2, 3], 0.9).half_width
    assert mean_ci([5.0, 5.0, 5.0]).half_width == 0
    one = mean_ci([0.3])
    assert (one.mean, one.low, one.high) == (0.3, 0.3, 0.3)
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([1, 2], confidence=1.5)


def test_absolute_error_is_mean_over_layers():
    assert absolute_error([0.5, 0.25], [0.25, 1.0]) == pytest.approx((0.25 + 0.75) / 2)
    with pytest.raises(ValueError):
        absolute_error([0.1], [0.1, 0.2])


def test_closer_and_tie():
    assert closer({"paper": 0.1, "sharp": 0.2}) == "paper"
    assert closer({"paper": 0.3, "sharp": 0.2}) == "sharp"
    assert closer({"paper": 0.2, "sharp": 0.2}) == "tie"


def test_summarize_hand_made():
    runs = [
        run([0.2, 0.8], paper=[0.2, 0.6], sharp=[0.2, 0.8]),   # paper err 0.1, sharp 0
        run([0.4, 0.6], paper=[0.4, 0.6], sharp=[0.2, 0.8]),   # paper 0, sharp 0.2
        run([0.9, 0.1], paper=[0.5, 0.5], sharp=[0.6, 0.6]),   # paper 0.4, sharp 0.4
    ]
    s = summarize(runs)
    assert s["n"] == 3
    assert s["error"]["paper"]["mean"] == pytest.approx(0.5 / 3)
    assert s["error"]["sharp"]["mean"] == pytest.approx(0.6 / 3)
    assert s["closer"] == "paper"
    assert s["closer_count"] == {"paper": 1, "sharp": 1, "tie": 1}
    assert s["a1_lt_a2"] == pytest.approx(2 / 3)
    assert s["error"]["paper"]["low"] < s["error"]["paper"]["mean"] < s["error"]["paper"]["high"]


def test_summary_table_groups_then_overall():
    runs = [run([0.1, 0.9], [0.1, 0.9], [0.5, 0.5], budget=3),
            run([0.5, 0.5], [0.1, 0.9], [0.5, 0.5], budget=5),
            run([0.5, 0.5], [0.1, 0.9], [0.5, 0.5], budget=5)]
    rows = summary_table(runs)
    assert [r["setting"] if r["setting"] == "overall" else r["setting"]["budget"] for r in rows] \
        == [3, 5, "overall"]
    assert rows[0]["closer"] == "paper" and rows[1]["closer"] == "sharp"
    assert rows[1]["n"] == 2 and rows[2]["n"] == 3
    assert rows[1]["a1_lt_a2"] == 0 and rows[0]["a1_lt_a2"] == 1


def counts_run(learned, paper, sharp):
    return {"learned_retained": list(learned),
            "predicted_retained": {"paper": list(paper), "sharp": list(sharp)}}


def test_position_between_the_optima_by_hand():
    """0 at the paper's optimum, 1 at the sharp one, the projection elsewhere."""
    assert position(counts_run((8, 0), (8, 0), (4, 4))) == 0
    assert position(counts_run((4, 4), (8, 0), (4, 4))) == 1
    assert position(counts_run((7, 1), (8, 0), (4, 4))) == pytest.approx(0.25)
    assert position(counts_run((10, -2), (8, 0), (4, 4))) == pytest.approx(-0.5)
    assert position(counts_run((2, 5), (8, 0), (4, 4))) == pytest.approx(11 / 8)  # off the line
    assert position(counts_run((3, 1), (2, 2), (2, 2))) is None


def test_position_summary_counts_between_and_undefined():
    runs = [counts_run(x, (8, 0), (4, 4)) for x in ((8, 0), (6, 2), (2, 6))]
    runs.append(counts_run((1, 1), (2, 2), (2, 2)))
    summary = position_summary(runs)
    assert summary["n"] == 3 and summary["undefined"] == 1
    assert summary["mean"] == pytest.approx((0 + 0.5 + 1.5) / 3)
    assert summary["between"] == pytest.approx(2 / 3)
    assert summary["low"] < summary["mean"] < summary["high"]
    with pytest.raises(ValueError):
        position_summary(runs[-1:])
