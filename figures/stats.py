"""Statistics of learned retention against the predicted optima.

Every run of the retention experiment gives learned fractions (a1, a2) and, for each
prediction (the paper's Theorem 2 optimum and the sharp-bound optimum), predicted
fractions. The error of a prediction on one run is the mean absolute error over the two
layers, ``(|a1 - p1| + |a2 - p2|) / 2``. Over seeds we report the mean error with a
Student-t confidence interval, which prediction is closer, and how often a1 < a2.

Example:
    >>> interval = mean_ci([0.1, 0.2, 0.3])
    >>> round(interval.mean, 6), round(interval.low, 3), round(interval.high, 3)
    (0.2, -0.048, 0.448)
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

PREDICTIONS = ("paper", "sharp")


@dataclass(frozen=True)
class Interval:
    """A sample mean with a two-sided confidence interval; ``low == high == mean`` for n = 1."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` with a Student-t interval (sample standard deviation, n - 1 dof).

    Raises:
        ValueError: empty ``values`` or a confidence outside (0, 1).
    """
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value, got none")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, mean, mean, 1)
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def absolute_error(learned: Sequence[float], predicted: Sequence[float]) -> float:
    """Mean over layers of |learned_l - predicted_l|.

    Raises:
        ValueError: the two sequences have different lengths or are empty.
    """
    if len(learned) != len(predicted) or not learned:
        raise ValueError(f"expected two equal-length non-empty sequences, got lengths "
                         f"{len(learned)} and {len(predicted)}")
    return sum(abs(a - b) for a, b in zip(learned, predicted)) / len(learned)


def run_errors(run: dict) -> dict:
    """Per prediction name, the absolute error of one run (a dict of the results file)."""
    return {name: absolute_error(run["learned_alpha"], run["predicted"][name])
            for name in PREDICTIONS}


def closer(errors: dict) -> str:
    """Name of the prediction with the smaller error, or "tie" when they are equal."""
    paper, sharp = errors["paper"], errors["sharp"]
    if math.isclose(paper, sharp, rel_tol=0, abs_tol=1e-12):
        return "tie"
    return "paper" if paper < sharp else "sharp"


def position(run: dict) -> float | None:
    """Where the learned retained counts lie on the line from the paper's optimum (0) to the
    sharp-bound optimum (1): the projection of learned - paper onto sharp - paper.

    0 <= t <= 1 means between the two predictions, t < 0 beyond the paper's, t > 1 beyond the
    sharp one. Both optima spend the whole budget, so they and a run that keeps (about) the
    budget lie on one line and t says where. None when the two optima coincide.

    Example:
        >>> position({"learned_retained": [6, 2],
        ...           "predicted_retained": {"paper": [8, 0], "sharp": [4, 4]}})
        0.5
    """
    learned = run["learned_retained"]
    paper, sharp = run["predicted_retained"]["paper"], run["predicted_retained"]["sharp"]
    direction = [s - p for p, s in zip(paper, sharp)]
    norm = sum(d * d for d in direction)
    if norm == 0:
        return None
    return sum((x - p) * d for x, p, d in zip(learned, paper, direction)) / norm


def position_summary(runs: Iterable[dict], confidence: float = 0.95) -> dict:
    """Mean :func:`position` with a t-interval, the fraction of runs between the two optima
    (0 <= t <= 1), and how many runs had no position (the optima coincide).

    Raises:
        ValueError: no run has a position.
    """
    runs = list(runs)
    values = [t for t in map(position, runs) if t is not None]
    if not values:
        raise ValueError("position_summary needs a run whose two optima differ, got none")
    iv = mean_ci(values, confidence)
    return {"n": len(values), "mean": iv.mean, "low": iv.low, "high": iv.high,
            "between": sum(0 <= t <= 1 for t in values) / len(values),
            "undefined": len(runs) - len(values)}


def summarize(runs: Iterable[dict], confidence: float = 0.95) -> dict:
    """Error of each prediction, which is closer, and the fraction of runs with a1 < a2.

    Args:
        runs: dicts with "learned_alpha" ([a1, a2]) and "predicted" ({"paper": [p1, p2],
            "sharp": [s1, s2]}).
        confidence: level of the t-intervals.

    Returns:
        {"n", "error": {name: {"mean", "low", "high"}}, "closer" (by mean error),
        "closer_count": {"paper", "sharp", "tie"} (runs where each one is closer),
        "a1_lt_a2": fraction of runs with a1 < a2}.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("summarize needs at least one run, got none")
    errors = [run_errors(run) for run in runs]
    intervals = {name: mean_ci([e[name] for e in errors], confidence) for name in PREDICTIONS}
    counts = {"paper": 0, "sharp": 0, "tie": 0}
    for e in errors:
        counts[closer(e)] += 1
    below = sum(1 for run in runs if run["learned_alpha"][0] < run["learned_alpha"][1])
    return {
        "n": len(runs),
        "error": {name: {k: v for k, v in asdict(iv).items() if k != "n"}
                  for name, iv in intervals.items()},
        "closer": closer({name: iv.mean for name, iv in intervals.items()}),
        "closer_count": counts,
        "a1_lt_a2": below / len(runs),
    }


def group_by(runs: Iterable[dict], keys: Sequence[str]) -> dict:
    """Runs grouped by the tuple of their values at ``keys`` (lists become tuples)."""
    groups = defaultdict(list)
    for run in runs:
        groups[tuple(_hashable(run[k]) for k in keys)].append(run)
    return dict(groups)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def summary_table(runs: Sequence[dict], keys: Sequence[str] = ("dataset", "widths", "budget"),
                  confidence: float = 0.95) -> list[dict]:
    """One :func:`summarize` row per setting (the values at ``keys``), then an "overall" row."""
    rows = []
    for setting, group in sorted(group_by(runs, keys).items(), key=lambda kv: str(kv[0])):
        rows.append({"setting": dict(zip(keys, setting)), **summarize(group, confidence)})
    rows.append({"setting": "overall", **summarize(runs, confidence)})
    return rows


def allocation_score(run: dict, allocation: str) -> float:
    """Score of one allocation in a run of the allocation experiment: test accuracy on
    digits, training accuracy (the fraction of points memorized) on random labels."""
    entry = run["allocations"][allocation]
    return entry["train_accuracy"] if run["dataset"] == "random" else entry["test_accuracy"]


def paired_table(rows: Sequence[dict], keys: Sequence[str], baseline: str,
                 confidence: float = 0.95) -> list[dict]:
    """Per setting (the values at ``keys``): each method's mean score and its paired
    difference against ``baseline`` (same run, so the same seed) with a t-interval.

    Args:
        rows: dicts with the ``keys`` and "scores" ({method: score}); every row of a setting
            must score the same methods.
        baseline: the method the others are compared with.

    Returns:
        Rows {"setting", "n", "mean": {method: mean score}, "difference": {method: {"mean",
        "low", "high"}}, "verdict": {method: "better", "worse" or "no clear difference"}
        (whether the interval excludes 0), "best": the method with the highest mean}.

    Example:
        >>> rows = [{"k": 1, "scores": {"a": 0.5, "b": 0.7}}, {"k": 1, "scores": {"a": 0.6, "b": 0.7}}]
        >>> row = paired_table(rows, ("k",), "a")[0]
        >>> row["best"], round(row["difference"]["b"]["mean"], 3)
        ('b', 0.15)
    """
    table = []
    for setting, group in sorted(group_by(rows, keys).items(), key=lambda kv: str(kv[0])):
        methods = list(group[0]["scores"])
        if any(list(r["scores"]) != methods for r in group):
            raise ValueError(f"setting {setting}: runs score different methods")
        means = {m: sum(r["scores"][m] for r in group) / len(group) for m in methods}
        diffs, verdict = {}, {}
        for m in methods:
            if m == baseline:
                continue
            iv = mean_ci([r["scores"][m] - r["scores"][baseline] for r in group], confidence)
            diffs[m] = {"mean": iv.mean, "low": iv.low, "high": iv.high}
            verdict[m] = "better" if iv.low > 0 else "worse" if iv.high < 0 else "no clear difference"
        table.append({"setting": dict(zip(keys, setting)), "n": len(group), "mean": means,
                      "difference": diffs, "verdict": verdict,
                      "best": max(methods, key=lambda m: means[m])})
    return table


# ----------------------------------------------------------------------------- Pareto fronts

def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, score) points no other point beats (cost <= and score >=, one strictly),
    in increasing cost.

    Example:
        >>> pareto_front([(1, 0.9), (2, 0.8), (3, 0.95), (3, 0.9)])
        [(1, 0.9), (3, 0.95)]
    """
    front, best = [], -math.inf
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((cost, score))
            best = score
    return front


def front_gap(ahead: Sequence[tuple[float, float]], behind: Sequence[tuple[float, float]]) -> dict:
    """How far the front of ``ahead`` lies beyond the front of ``behind`` (points (cost, score)).

    For each point of ``behind``'s front: the score ``ahead`` reaches at no higher cost minus
    its score (None where ``ahead`` has nothing that cheap), and the cost ``ahead`` needs for
    at least its score divided by its cost (None where ``ahead`` never scores that high).

    Returns:
        {"score_gain_mean", "cost_ratio_median", "dominated", "compared"}: the mean score gain
        and median cost ratio over the points where they exist (None if nowhere), and how
        many of ``behind``'s front points a point of ``ahead`` dominates (no higher cost,
        no lower score, one of them strictly).

    Example:
        >>> gap = front_gap([(1, 0.9), (2, 0.97)], [(3, 0.95)])
        >>> round(gap["score_gain_mean"], 3), round(gap["cost_ratio_median"], 3), gap["dominated"]
        (0.02, 0.667, 1)
    """
    import statistics

    mine, theirs = pareto_front(ahead), pareto_front(behind)
    gains, ratios, dominated = [], [], 0
    for cost, score in theirs:
        cheaper = [s for c, s in mine if c <= cost]
        if cheaper:
            gains.append(max(cheaper) - score)
        enough = [c for c, s in mine if s >= score]
        if enough:
            ratios.append(min(enough) / cost if cost > 0 else None)
        if any(c <= cost and s >= score and (c < cost or s > score) for c, s in mine):
            dominated += 1
    ratios = [r for r in ratios if r is not None]
    return {"score_gain_mean": statistics.fmean(gains) if gains else None,
            "cost_ratio_median": statistics.median(ratios) if ratios else None,
            "dominated": dominated, "compared": len(theirs)}
