"""Optimal per-layer retention under a *latency* budget, exactly.

Under two-party private inference every kept ReLU costs ``beta`` and every layer that keeps
at least one ReLU costs ``rho`` (its communication rounds); the linear layers cost a fixed
``linear``. The problem is

    maximise  F(x)   subject to   linear + sum_l (beta x_l + rho [x_l > 0]) <= T,
                                  0 <= x_l <= d_l integers,

for F the sharp bound prod_l((p-1) x_l + 1) + 1 (any depth) or, for two hidden layers, the
paper's Corollary 1. Both are increasing in every x_l, so a set of active layers spends all
the ReLUs it can afford.

The structure that keeps the sharp case fast (claim c20):

* Fix the number k of active layers. They can afford
  B_k = min(S_k, floor((T - linear - k rho) / beta)) ReLUs, S_k = the k largest widths summed.
  Pairing any k layers with the k widest in order of width maps every allocation on the
  former to one on the latter with the same cost and value, so the k widest layers are an
  optimal active set, and inside them the optimum is water-filling with B_k ReLUs (c11).
* The optimum is therefore the best of k = 0 .. K, K = min(L, floor((T - linear) / (beta + rho)))
  (the k with B_k >= k): each is a water-filling of a prefix of the widths sorted in
  decreasing order, found by binary search over prefix sums. Work: O(L log L) arithmetic
  to rank the k by floating-point logarithms, then exact integer products only for the k
  whose logarithm is within a safe margin of the best (ties and near-ties), O(L) big-integer
  multiplications each.
* All ties: every optimum with k active layers holds the multiset of counts of the
  water-filled k widest layers, placed on any layers wide enough. Placing the counts in
  decreasing order, a count v held m times has C(N(v) - used, m) choices (N(v) = layers of
  width >= v, used = layers already holding larger counts); the product counts every tie.

Numbers: ints, Fractions, "p/q" strings and (for costs and budgets, which are measured
times) decimal strings like "0.021", all kept exact. Floats are refused, as in
``capacity.exact``; pass ``str(value)`` to mean the decimal a float prints as.

Example:
    >>> cost = cost_model(per_relu=1, per_layer=40)
    >>> opt = latency_sharp_optimum([100, 60, 8], 120, cost)
    >>> opt.integer_retained, opt.integer_value
    ([(20, 20, 0)], 442)
"""

from __future__ import annotations

from bisect import bisect_left
from collections import namedtuple
from collections.abc import Iterator, Sequence
from fractions import Fraction
from itertools import combinations, compress, groupby, islice, product
from math import comb, isqrt, lcm, log

from capacity.bounds import corollary1_counts, sharp_capacity
from capacity.exact import Exact, as_exact, exact_float
from capacity.optimum import MAX_LISTED_TIES, check_problem

#: At most this many counts are listed in all (ties x layers): 1000 ties of 20,000 layers
#: would be 20 million numbers. Every tie is still counted.
MAX_LISTED_COUNTS = 10**6

#: Keys a cost profile may hold; "unit" and "meta" are carried along, never interpreted.
PROFILE_KEYS = ("per_relu", "per_layer", "linear", "unit", "meta")


# Named tuples rather than dataclasses: importing dataclasses slows the command (see optimum).
class CostModel(namedtuple("CostModel", "per_relu per_layer linear")):
    """Latency cost model; build it with ``cost_model`` (which checks the numbers).

    Attributes:
        per_relu: beta, the cost of one kept ReLU (>= 0).
        per_layer: rho, the cost of a layer that keeps at least one ReLU (>= 0).
        linear: the fixed cost of everything else (the linear layers), >= 0.
    """

    __slots__ = ()


class LatencyPlan(namedtuple("LatencyPlan", "active layers relu_budget retained value latency")):
    """The best allocation with a given set of active layers.

    Attributes:
        active: number of active layers (keeping >= 1 ReLU).
        layers: their 0-based indices (for the sharp bound: the widest ones, one of the ties).
        relu_budget: the ReLUs these layers can afford, capped by their widths.
        retained: an integer optimum on these layers (all L counts, zeros elsewhere).
        value: the capacity bound at ``retained``.
        latency: the cost of ``retained`` under the cost model (linear part included).
    """

    __slots__ = ()


class LatencyContinuous(namedtuple("LatencyContinuous", "active layers relu_budget retained level value")):
    """Optimum of the relaxation with real ReLU counts (the active layers stay a discrete choice).

    Relaxing the indicator [x_l > 0] itself would be meaningless: any x_l > 0, however small,
    pays the whole rho. So the relaxation keeps the choice of active layers and lets the
    counts be real, 0 < x_l <= d_l.

    Attributes:
        active, layers: as in ``LatencyPlan`` (the widest layers for the sharp bound).
        relu_budget: the real ReLU budget (T - linear - active rho) / beta, capped by the widths.
        retained: the real counts per layer (zeros outside ``layers``).
        level: the water level (sharp bound) or None (Corollary 1).
        value: the capacity bound at ``retained`` (a supremum for Corollary 1 when a count is 0).
    """

    __slots__ = ()


class LatencyOptimum(
    namedtuple("LatencyOptimum", "objective integer_retained integer_ties integer_value "
                                 "plans active_layers always_active continuous")
):
    """Maximiser of a capacity bound under a latency budget.

    Attributes:
        objective: "sharp" or "paper" (Corollary 1).
        integer_retained: integer optima, sorted; at most ``MAX_LISTED_TIES`` of them, and at
            most ``MAX_LISTED_COUNTS`` numbers in all (fewer ties for thousands of layers).
        integer_ties: how many integer optima there are in all.
        integer_value: the capacity bound at an integer optimum.
        plans: one ``LatencyPlan`` per optimal number of active layers (sharp) or optimal
            active set (paper), in increasing order of active layers.
        active_layers: 0-based layers that keep a ReLU in at least one optimum.
        always_active: 0-based layers that keep a ReLU in every optimum.
        continuous: the relaxation's optima, one ``LatencyContinuous`` per optimal active set.
    """

    __slots__ = ()


def as_cost(value: object, name: str = "cost") -> Exact:
    """An exact number >= 0: int, Fraction, "p/q", or a decimal string such as "0.021" or "2e-5".

    Raises:
        ValueError: for floats, bools, negative numbers, malformed strings, NaN or infinity.

    Example:
        >>> as_cost("0.021", "per_relu"), as_cost("3/4", "per_layer")
        (Fraction(21, 1000), Fraction(3, 4))
    """
    if isinstance(value, str):
        try:
            value = Fraction(value.strip())  # exact: "0.1" is 1/10, not the float
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name} must be a number such as 3, 0.021 or 3/4, got {value!r}") from None
    exact = as_exact(value, name)
    if exact < 0:
        raise ValueError(f"{name} must be at least 0, got {value}")
    return exact.numerator if isinstance(exact, Fraction) and exact.denominator == 1 else exact


def cost_model(per_relu: object, per_layer: object, linear: object = 0) -> CostModel:
    """Check and build a ``CostModel`` (numbers as in ``as_cost``).

    Raises:
        ValueError: for a negative or inexact number, or when beta = rho = 0 (nothing costs
            anything, so there is nothing to optimise).

    Example:
        >>> cost_model("0.5", 9)
        CostModel(per_relu=Fraction(1, 2), per_layer=9, linear=0)
    """
    beta = as_cost(per_relu, "per-ReLU cost")
    rho = as_cost(per_layer, "per-layer cost")
    fixed = as_cost(linear, "linear cost")
    if beta == 0 and rho == 0:
        raise ValueError("the per-ReLU and per-layer costs are both 0: every allocation is free")
    return CostModel(beta, rho, fixed)


def parse_cost_profile(text: str, source: str = "cost profile") -> CostModel:
    """A ``CostModel`` from a JSON cost profile.

    Format: one object {"per_relu": BETA, "per_layer": RHO, "linear": C}; "linear" is
    optional (0); "unit" (e.g. "s") and "meta" (anything) may be present and are ignored.
    Numbers are JSON numbers (read exactly from their decimal text: 0.021 is 21/1000) or
    strings "p/q". Any other key is an error, so a misspelt "linear" cannot silently be 0.

    Raises:
        ValueError: for malformed JSON, a missing or unknown key, or a bad number.

    Example:
        >>> parse_cost_profile('{"per_relu": 2.5e-4, "per_layer": 0.0125, "unit": "s"}')
        CostModel(per_relu=Fraction(1, 4000), per_layer=Fraction(1, 80), linear=0)
    """
    import json  # only the profile path needs it

    def refuse(constant: str):
        raise ValueError(f"{source}: {constant} is not a cost")

    try:
        data = json.loads(text, parse_float=Fraction, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source} must be a JSON object with per_relu and per_layer")
    unknown = sorted(set(data) - set(PROFILE_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; expected {', '.join(PROFILE_KEYS)}")
    missing = [k for k in ("per_relu", "per_layer") if k not in data]
    if missing:
        raise ValueError(f"{source}: missing {' and '.join(missing)}")
    try:
        return cost_model(data["per_relu"], data["per_layer"], data.get("linear", 0))
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def latency(retained: Sequence[Exact], cost: CostModel) -> Exact:
    """linear + sum_l (beta x_l + rho [x_l > 0]): what an allocation costs.

    Example:
        >>> latency([5, 0, 2], cost_model(1, 10, linear=3))
        30
    """
    total = cost.linear + cost.per_relu * sum(retained) + cost.per_layer * sum(1 for x in retained if x > 0)
    return total.numerator if isinstance(total, Fraction) and total.denominator == 1 else total


def check_latency_problem(widths: Sequence[object], budget: object, cost: CostModel,
                          p: object = 2) -> tuple[list[int], Exact, CostModel, int]:
    """Validate widths (>= 1), the latency budget (>= the linear cost), the costs and p.

    Returns:
        (widths, budget, cost, p) as ints / exact numbers (the cost model re-checked).

    Raises:
        ValueError: naming the offending value; in particular when the budget is below the
            fixed cost of the linear layers alone.

    Example:
        >>> check_latency_problem([4, 3], "1/2", cost_model(1, 0))
        ([4, 3], Fraction(1, 2), CostModel(per_relu=1, per_layer=0, linear=0), 2)
    """
    if not isinstance(cost, CostModel):
        raise ValueError(f"cost must be a CostModel (see cost_model), got {type(cost).__name__}")
    cost = cost_model(*cost)  # a CostModel built by hand gets the same checks
    dims, _, p = check_problem(widths, 0, p)
    t = as_cost(budget, "latency budget")
    if t < cost.linear:
        raise ValueError(f"latency budget {_show(t)} is below the cost of the linear layers alone "
                         f"({_show(cost.linear)}): no allocation fits")
    return dims, t, cost, p


def _show(value: Exact) -> str:
    return str(value) if isinstance(value, int) else f"{value} (~{float(value):.6g})"


def relu_budget(budget: Exact, cost: CostModel, active: int, cap: int, exact: bool = True) -> Exact | None:
    """ReLUs that ``active`` layers of total width ``cap`` can afford, or None if they cannot pay rho.

    With ``exact`` the count is an integer floor((T - linear - active rho) / beta); otherwise the
    real budget of the relaxation. Either way at most ``cap`` (all of it when beta = 0).

    Example:
        >>> relu_budget(100, cost_model(3, 10), active=2, cap=1000)
        26
    """
    return _affordable(_scaled(budget, cost), active, cap, exact)


def _scaled(budget: Exact, cost: CostModel) -> tuple[int, int, int]:
    """(T - linear, rho, beta) times their common denominator: integers, for fast exact budgets."""
    spare, rho, beta = (Fraction(v) for v in (budget - cost.linear, cost.per_layer, cost.per_relu))
    den = lcm(spare.denominator, rho.denominator, beta.denominator)
    return spare.numerator * (den // spare.denominator), rho.numerator * (den // rho.denominator), \
        beta.numerator * (den // beta.denominator)


def _affordable(scaled: tuple[int, int, int], active: int, cap: int, exact: bool) -> Exact | None:
    spare, rho, beta = scaled
    left = spare - active * rho
    if left < 0:
        return None
    if beta == 0 or left >= cap * beta:
        return cap
    return left // beta if exact else _tidy(Fraction(left, beta))


def _tidy(value: Exact) -> Exact:
    return value.numerator if isinstance(value, Fraction) and value.denominator == 1 else value


# --- the sharp bound: water-filling on prefixes of the widths sorted in decreasing order ---

class _Sorted(namedtuple("_Sorted", "order widths sums logs ascending")):
    """Widths in decreasing order (ties by index), prefix sums, prefix sums of log((p-1)w+1)."""

    __slots__ = ()


def _sort_widths(dims: list[int], p: int) -> _Sorted:
    order = sorted(range(len(dims)), key=lambda i: (-dims[i], i))
    widths = [dims[i] for i in order]
    sums, logs = [0], [0.0]
    for w in widths:
        sums.append(sums[-1] + w)
        logs.append(logs[-1] + log((p - 1) * w + 1))
    return _Sorted(order, widths, sums, logs, sorted(dims))


def _fill(srt: _Sorted, k: int, budget: Exact) -> tuple[int, Exact]:
    """Water-fill ``budget`` (0 <= budget <= S_k) into the k widest layers.

    Returns (g, rest): the g widest of them are "open" and share ``rest`` equally (level
    rest / g); the others keep their whole width. g = 0 when every layer is full.
    """
    w, sums = srt.widths, srt.sums
    num, den = (budget.numerator, budget.denominator) if isinstance(budget, Fraction) else (budget, 1)

    def fits(j: int) -> bool:  # raising the j widest to w[j] (the rest full) stays within budget
        return j == k or (sums[k] - sums[j] + j * w[j]) * den <= num

    lo, hi = 0, k  # smallest j with fits(j); fits is monotone (nonincreasing cost in j)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo, budget - (sums[k] - sums[lo])


def _count_groups(srt: _Sorted, k: int, b: int) -> list[tuple[int, int]]:
    """The multiset of counts of the water-filled k widest layers with b ReLUs, as
    (value, multiplicity) pairs in decreasing order of value."""
    g, rest = _fill(srt, k, b)
    q, r = divmod(rest, g) if g else (0, 0)
    counts: dict[int, int] = {}
    for v, m in ((q + 1, r), (q, g - r)):
        if m:
            counts[v] = counts.get(v, 0) + m
    for v, run in groupby(srt.widths[g:k]):
        counts[v] = counts.get(v, 0) + len(list(run))
    return sorted(counts.items(), reverse=True)


def _log_value(srt: _Sorted, k: int, b: int, s: int) -> float:
    """Float log of the sharp pieces bound of the water-filled k widest layers: O(log k)."""
    g, rest = _fill(srt, k, b)
    if g == 0:
        return srt.logs[k]
    q, r = divmod(rest, g)
    return srt.logs[k] - srt.logs[g] + (g - r) * log(s * q + 1) + r * log(s * (q + 1) + 1)


def _best_indices(logs: list[float], exact_value) -> list[int]:
    """Indices of the exact maximum, evaluating exactly only near the float maximum.

    The float logs carry a relative error far below 1e-9 for any realistic length (each term
    is within a few ulps, summed over at most millions of terms), so nothing outside the
    margin can be an exact maximum.
    """
    top = max(logs)
    margin = 1e-9 * (1 + abs(top))
    near = [i for i, v in enumerate(logs) if v >= top - margin]
    values = {i: exact_value(i) for i in near}
    best = max(values.values())
    return [i for i in near if values[i] == best]


def _placements(groups: list[tuple[int, int]], dims: list[int], srt: _Sorted) -> Iterator[tuple[int, ...]]:
    """Every way to place the counts ``groups`` (value, multiplicity; decreasing) on distinct
    layers of width >= value, zeros elsewhere. Depth-first with an explicit stack (one level
    per distinct count, which may be thousands); placing larger counts first never leads to
    a dead end, since how many layers remain for a count does not depend on which were used."""
    alloc = [0] * len(dims)
    if not groups:
        yield tuple(alloc)
        return
    free = bytearray(b"\x01") * len(dims)  # free[j]: the j-th widest layer holds no count yet
    position = {layer: j for j, layer in enumerate(srt.order)}

    def choices(level: int) -> Iterator[tuple[int, ...]]:
        n = _wide_enough(srt, groups[level][0])  # the layers wide enough come first in srt.order
        return combinations(compress(srt.order[:n], free[:n]), groups[level][1])

    def assign(pick: tuple[int, ...], value: int) -> None:
        for i in pick:
            alloc[i], free[position[i]] = value, value == 0

    stack, chosen = [choices(0)], []
    while stack:
        level = len(stack) - 1
        if len(chosen) > level:  # undo this level's previous choice before the next one
            assign(chosen.pop(), 0)
        pick = next(stack[-1], None)
        if pick is None:
            stack.pop()
            continue
        assign(pick, groups[level][0])
        chosen.append(pick)
        if level + 1 == len(groups):
            yield tuple(alloc)
        else:
            stack.append(choices(level + 1))


def _wide_enough(srt: _Sorted, v: int) -> int:
    """How many layers have width >= v."""
    return len(srt.ascending) - bisect_left(srt.ascending, v)


def _count_placements(groups: list[tuple[int, int]], srt: _Sorted, removed: int | None = None) -> int:
    """How many allocations hold exactly the counts ``groups``; with ``removed`` = a width, one
    layer of that width is unavailable (used to find the layers every optimum needs)."""
    total, used = 1, 0
    for v, m in groups:
        available = _wide_enough(srt, v) - used - (removed is not None and removed >= v)
        total *= comb(available, m) if available >= m else 0
        used += m
    return total


def _sharp_groups_value(groups: list[tuple[int, int]], p: int) -> int:
    pieces = 1
    for v, m in groups:
        pieces *= ((p - 1) * v + 1) ** m
    return pieces + 1


def _max_active(dims: list[int], budget: Exact, cost: CostModel) -> int:
    """K: the largest number of layers that can each keep one ReLU (B_k >= k)."""
    spare = budget - cost.linear
    return min(len(dims), int(Fraction(spare) / (cost.per_relu + cost.per_layer) // 1))


def latency_sharp_optimum(widths: Sequence[int], budget: object, cost: CostModel, p: int = 2) -> LatencyOptimum:
    """Maximise the sharp bound prod_l((p-1) x_l + 1) + 1 under a latency budget.

    Args:
        widths: the hidden-layer widths d_l (>= 1), any number of layers.
        budget: the latency budget T (exact; >= cost.linear).
        cost: a ``CostModel`` (beta per kept ReLU, rho per active layer, fixed linear cost).
        p: linear pieces of the activation (ReLU: 2). Unlike the ReLU-budget optimum, the
            latency optimum depends on p (it trades ReLUs against active layers).

    Returns:
        A ``LatencyOptimum``; ties are counted in ``integer_ties``, at most
        ``MAX_LISTED_TIES`` listed.

    Raises:
        ValueError: as ``check_latency_problem``.

    Example:
        >>> opt = latency_sharp_optimum([50000, 5000], 10000, cost_model(1, 4950))
        >>> opt.integer_retained, [plan.active for plan in opt.plans], opt.integer_value
        ([(5050, 0)], [1], 5052)
    """
    dims, t, cost, p = check_latency_problem(widths, budget, cost, p)
    srt = _sort_widths(dims, p)
    scaled = _scaled(t, cost)
    budgets = [_affordable(scaled, k, srt.sums[k], True) for k in range(_max_active(dims, t, cost) + 1)]
    logs = [_log_value(srt, k, b, p - 1) for k, b in enumerate(budgets)]
    best = _best_indices(logs, lambda k: _sharp_groups_value(_count_groups(srt, k, budgets[k]), p))
    groups = {k: _count_groups(srt, k, budgets[k]) for k in best}
    value = _sharp_groups_value(groups[best[0]], p)
    ties = sum(_count_placements(groups[k], srt) for k in best)
    limit = max(1, min(MAX_LISTED_TIES, MAX_LISTED_COUNTS // len(dims)))
    listed = list(islice((a for k in best for a in _placements(groups[k], dims, srt)), limit))
    plans = [_sharp_plan(srt, dims, k, budgets[k], groups[k], cost, p) for k in best]
    some, every = _active_sets(dims, srt, list(groups.values()))
    return LatencyOptimum("sharp", sorted(listed), ties, value, plans, some, every,
                          _sharp_continuous(dims, srt, t, cost, p))


def _canonical(srt: _Sorted, dims: list[int], k: int, groups: list[tuple[int, int]]) -> tuple[int, ...]:
    """The counts placed in decreasing order on the k widest layers (one of the ties)."""
    alloc = [0] * len(dims)
    values = [v for v, m in groups for _ in range(m)]
    for i, v in zip(srt.order[:k], values):
        alloc[i] = v
    return tuple(alloc)


def _sharp_plan(srt, dims, k, b, groups, cost, p) -> LatencyPlan:
    retained = _canonical(srt, dims, k, groups)
    return LatencyPlan(k, tuple(sorted(srt.order[:k])), b, retained, sharp_capacity(retained, p),
                       latency(retained, cost))


def _active_sets(dims, srt, group_lists) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Layers active in some optimum (width >= the smallest count of some optimum: it can take
    that count's place) and in every optimum (no optimum avoids one layer of its width)."""
    smallest = min((groups[-1][0] for groups in group_lists if groups), default=None)
    some = tuple(i for i, d in enumerate(dims) if smallest is not None and d >= smallest)
    needed = {w for w in set(dims)
              if all(groups and _count_placements(groups, srt, removed=w) == 0 for groups in group_lists)}
    return some, tuple(i for i, d in enumerate(dims) if d in needed)


def _sharp_continuous(dims, srt, t, cost, p) -> list[LatencyContinuous]:
    """The relaxation: for each k, water-fill the real budget into the k widest layers."""
    options = [(Fraction(0), 0, None)]  # index k -> (real budget, open layers g, level)
    scaled = _scaled(t, cost)
    for k in range(1, len(dims) + 1):
        b = _affordable(scaled, k, srt.sums[k], False)
        if b is None or b <= 0:  # the real budget only shrinks as k grows
            break
        g, rest = _fill(srt, k, Fraction(b))
        options.append((b, g, rest / g if g else None))

    def log_value(k: int) -> float:
        _, g, level = options[k]
        return srt.logs[k] - srt.logs[g] + (g * _log_fraction((p - 1) * level + 1) if g else 0.0)

    def exact_value(k: int) -> Exact:  # full layers: one integer product; open ones: one power
        _, g, level = options[k]
        full = 1
        for w in srt.widths[g:k]:
            full *= (p - 1) * w + 1
        return _tidy(full * ((p - 1) * level + 1) ** g + 1 if g else Fraction(full + 1))

    out = []
    for k in _best_indices([log_value(k) for k in range(len(options))], exact_value):
        b, _, level = options[k]
        out.append(LatencyContinuous(k, tuple(sorted(srt.order[:k])), _tidy(b), _spread(srt, dims, k, level),
                                     None if level is None else _tidy(level), exact_value(k)))
    return out


def _spread(srt: _Sorted, dims: list[int], k: int, level: Fraction | None) -> tuple[Exact, ...]:
    alloc: list[Exact] = [0] * len(dims)
    for i in srt.order[:k]:
        alloc[i] = dims[i] if level is None else _tidy(min(Fraction(dims[i]), level))
    return tuple(alloc)


def _log_fraction(value: Fraction) -> float:
    """log of a positive Fraction of any size (float(value) could overflow)."""
    return log(value.numerator) - log(value.denominator)


# --- Corollary 1 (two hidden layers): four possible active sets ---

def latency_paper_optimum(d1: int, d2: int, budget: object, cost: CostModel, p: int = 2) -> LatencyOptimum:
    """Maximise Corollary 1's capacity bound (two hidden layers) under a latency budget.

    The active set is one of {}, {1}, {2}, {1, 2}; each spends all the ReLUs it can afford
    (Corollary 1 increases in x and in y), and on {1, 2} the bound is a concave quadratic
    along x + y = b, maximised at Theorem 2's point clamped to 1 <= x <= d1, 1 <= y <= d2.

    Args and raises: as ``latency_sharp_optimum`` with widths (d1, d2).

    Example:
        >>> latency_paper_optimum(50000, 5000, 10000, cost_model(1, 3000)).integer_retained
        [(7000, 0)]
    """
    (d1, d2), t, cost, p = check_latency_problem([d1, d2], budget, cost, p)
    options = _paper_options(d1, d2, t, cost, p)
    value = max(v for *_, v in options)
    plans, listed = [], []
    for layers, b, allocs, v in options:
        if v == value:
            listed += allocs
            plans.append(LatencyPlan(len(layers), layers, b, allocs[0], v, latency(allocs[0], cost)))
    some = tuple(i for i in (0, 1) if any(a[i] for a in listed))
    every = tuple(i for i in (0, 1) if all(a[i] for a in listed))
    return LatencyOptimum("paper", sorted(listed), len(listed), value, plans, some, every,
                          _paper_continuous(d1, d2, t, cost, p))


def _paper_options(d1: int, d2: int, t: Exact, cost: CostModel, p: int) -> list[tuple]:
    """(layers, ReLU budget, its integer optima, their value) for each active set that can
    afford one ReLU per layer."""
    options = []
    for layers in ((), (0,), (1,), (0, 1)):
        b = relu_budget(t, cost, len(layers), sum((d1, d2)[i] for i in layers))
        if b is not None and b >= len(layers):
            options.append((layers, b, *_paper_best(d1, d2, layers, b, p)))
    return options


def latency_plans(widths: Sequence[int], budget: object, cost: CostModel, p: int = 2,
                  objective: str = "sharp", active: Sequence[int] | None = None) -> list[LatencyPlan]:
    """The best allocation for each number of active layers: the trade-off behind the optimum.

    Args:
        widths, budget, cost, p: the problem, as ``latency_sharp_optimum``.
        objective: "sharp" (one plan per k = 0 .. K, the k widest layers water-filled) or
            "paper" (two layers: one plan per affordable active set {}, {1}, {2}, {1, 2}).
        active: for "sharp", only these k (each plan costs O(L) big-integer products).

    Returns:
        ``LatencyPlan`` records in increasing order of active layers.

    Raises:
        ValueError: as ``check_latency_problem``, or for an unknown objective.

    Example:
        >>> [(plan.active, plan.relu_budget, plan.value) for plan in
        ...  latency_plans([50000, 5000], 10000, cost_model(1, 4950))]
        [(0, 0, 2), (1, 5050, 5052), (2, 100, 2602)]
    """
    dims, t, cost, p = check_latency_problem(widths, budget, cost, p)
    if objective == "paper" and len(dims) == 2:
        return [LatencyPlan(len(layers), layers, b, allocs[0], v, latency(allocs[0], cost))
                for layers, b, allocs, v in _paper_options(*dims, t, cost, p)]
    if objective != "sharp":
        raise ValueError(f"objective must be 'sharp' or (for two layers) 'paper', got {objective!r}")
    srt, scaled = _sort_widths(dims, p), _scaled(t, cost)
    ks = range(_max_active(dims, t, cost) + 1)
    plans = []
    for k in ks if active is None else sorted(set(active) & set(ks)):
        b = _affordable(scaled, k, srt.sums[k], True)
        plans.append(_sharp_plan(srt, dims, k, b, _count_groups(srt, k, b), cost, p))
    return plans


def _paper_best(d1: int, d2: int, layers: tuple[int, ...], b: int, p: int) -> tuple[list[tuple[int, int]], int]:
    """Every integer optimum of Corollary 1 with exactly ``layers`` active and b ReLUs, and its value."""
    if len(layers) < 2:
        alloc = tuple(b if i in layers else 0 for i in (0, 1))
        return [alloc], corollary1_counts(*alloc, d1, d2, p)
    y = _paper_split(d1, d2, Fraction(b), p, strict=True)
    candidates = {(b - c, c) for c in (int(y // 1), -int(-y // 1))}
    values = {a: corollary1_counts(*a, d1, d2, p) for a in candidates}
    best = max(values.values())
    return sorted(a for a, v in values.items() if v == best), best


def _paper_split(d1: int, d2: int, b: Fraction, p: int, strict: bool) -> Fraction:
    """Layer 2's count maximising Corollary 1 on x + y = b: Theorem 2's point (any p) clamped
    to the segment (x, y >= 1 for integers, ``strict``; >= 0 for the relaxation)."""
    low = 1 if strict else 0
    y_star = Fraction((p - 1) * b + 1 - d2, 2 * (p - 1))
    return min(max(y_star, max(Fraction(low), b - d1)), min(Fraction(d2), b - low))


def _paper_continuous(d1: int, d2: int, t: Exact, cost: CostModel, p: int) -> list[LatencyContinuous]:
    options = []
    for layers in ((), (0,), (1,), (0, 1)):
        b = relu_budget(t, cost, len(layers), sum((d1, d2)[i] for i in layers), exact=False)
        if b is None or (layers and b <= 0):
            continue
        if len(layers) == 2:
            y = _paper_split(d1, d2, Fraction(b), p, strict=False)
            alloc = (_tidy(b - y), _tidy(y))
        else:
            alloc = tuple(b if i in layers else 0 for i in (0, 1))
        options.append(LatencyContinuous(len(layers), layers, _tidy(b), alloc, None,
                                         corollary1_counts(*alloc, d1, d2, p)))
    best = max(o.value for o in options)
    return [o for o in options if o.value == best]


# --- two layers: the per-layer cost at which emptying the narrower layer becomes optimal ---

class EmptyingThreshold(namedtuple("EmptyingThreshold", "rational surd radicand regime")):
    """The threshold r* on rho / beta, exactly: r* = rational + surd * sqrt(radicand).

    Attributes:
        rational, surd, radicand: exact numbers (surd = 0 when r* is rational).
        regime: which widths bind at r*: "both open", "narrow layer full" (two-layer plan),
            "wide layer full" (one-layer plan), "both full", or "nothing affordable".
    """

    __slots__ = ()

    def reached(self, ratio: object) -> bool:
        """True when rho / beta = ``ratio`` is at least the threshold (exact).

        Example:
            >>> emptying_threshold(50000, 5000, 10000).reached(4929)
            False
        """
        gap = as_exact(ratio, "ratio") - self.rational  # is gap >= surd * sqrt(radicand)?
        if self.surd == 0 or self.radicand == 0:
            return gap >= 0
        if self.surd > 0:
            return gap >= 0 and gap * gap >= self.surd * self.surd * self.radicand
        return gap >= 0 or gap * gap <= self.surd * self.surd * self.radicand

    def approx(self) -> float:
        """The threshold as a float (for display; inf when beyond the float range)."""
        radicand = Fraction(self.radicand)
        scale = 10**40  # sqrt to about 20 significant digits, in integers (no float overflow)
        root = Fraction(isqrt(radicand.numerator * radicand.denominator * scale * scale),
                        radicand.denominator * scale)
        return exact_float(self.rational + self.surd * root)


def emptying_threshold(d1: int, d2: int, relu_units: object, p: int = 2) -> EmptyingThreshold:
    """Smallest rho / beta at which keeping one layer beats keeping two (continuous counts).

    Two hidden layers of widths D >= d, the budget tau = (T - linear) / beta in ReLUs,
    r = rho / beta, s = p - 1. One layer can keep v = tau - r ReLUs, two layers u = tau - 2r.
    Emptying the narrower layer is optimal exactly when

        min(v, D) - u >= s x y,   (x, y) = the water-filled split of u (sharp bound),

    i.e. the ReLUs one layer gains must pay for the product term. The two sides cross once
    (the difference increases with r wherever two layers can still win), at

        both open          r* = (s tau + 1 - sqrt(2 s tau + 1)) / (2 s)
        narrow layer full  r* = s d (tau - d) / (1 + 2 s d)
        wide layer full    r* = tau / 2 - (sqrt(1 + s D) - 1) / s
        both full          r* = (tau - (D + s d^2) / (1 + s d)) / 2

    whichever regime contains it (found from the sign of the difference at the rational
    regime boundaries r = tau - D and r = tau / 2 - d). Claim c21 checks all of this.

    Args:
        d1, d2: the widths (>= 1).
        relu_units: tau = (T - linear) / beta, exact, >= 0.
        p: linear pieces of the activation.

    Returns:
        An ``EmptyingThreshold``; ``.reached(rho / beta)`` decides exactly.

    Raises:
        ValueError: for bad widths, p, or a negative tau.

    Example:
        >>> th = emptying_threshold(50000, 5000, 10000)
        >>> th.regime, th.rational, th.surd, th.radicand, round(th.approx(), 3)
        ('both open', Fraction(10001, 2), Fraction(-1, 2), 20001, 4929.788)
    """
    (d1, d2), _, p = check_problem([d1, d2], 0, p)
    tau = as_cost(relu_units, "budget in ReLUs")
    wide, narrow, s = max(d1, d2), min(d1, d2), p - 1
    if tau == 0:
        return EmptyingThreshold(0, 0, 0, "nothing affordable")
    half = Fraction(tau, 2)
    breaks = sorted({b for b in (tau - wide, half - narrow) if 0 < b < half})
    # the difference increases wherever the root can lie, so the root is in the first
    # interval whose right end has difference >= 0 (at tau / 2 two layers get nothing)
    right = next((b for b in breaks if _one_minus_two(wide, narrow, tau, b, s) >= 0), half)
    mid = (max([Fraction(0)] + [b for b in breaks if b < right]) + right) / 2
    regime = REGIMES[2 * (tau - mid >= wide) + (tau - 2 * mid >= 2 * narrow)]
    return EmptyingThreshold(*_fold(*threshold_parts(regime, tau, wide, narrow, s)), regime)


def _fold(rational: Exact, surd: Exact, radicand: Exact) -> tuple[Exact, Exact, Exact]:
    """rational + surd sqrt(radicand), with a perfect-square radicand folded into the rational part."""
    radicand = Fraction(radicand)
    top, bottom = isqrt(radicand.numerator), isqrt(radicand.denominator)
    if surd and top * top == radicand.numerator and bottom * bottom == radicand.denominator:
        return _tidy(rational + surd * Fraction(top, bottom)), 0, 0
    return rational, surd, _tidy(radicand)


#: The regimes of ``emptying_threshold``, indexed by 2 [one-layer plan full] + [narrow layer full].
REGIMES = ("both open", "narrow layer full", "wide layer full", "both full")


def threshold_parts(regime: str, tau, wide, narrow, s):
    """The closed form of r* in a regime as (rational, surd, radicand): r* = rational + surd sqrt(radicand).

    Plain arithmetic, so it evaluates exactly on ints / Fractions and builds expressions on
    sympy or z3 symbols (claim c21 proves these are the thresholds).

    Raises:
        ValueError: for an unknown regime.

    Example:
        >>> threshold_parts("narrow layer full", 100, 80, 10, 1)
        (Fraction(300, 7), 0, 0)
    """
    if regime == "both open":  # s r = s^2 u^2 / 4 with u = tau - 2 r
        return _over(s * tau + 1, 2 * s), _over(-1, 2 * s), 2 * s * tau + 1
    if regime == "narrow layer full":  # r = s d (u - d)
        return _over(s * narrow * (tau - narrow), 1 + 2 * s * narrow), 0, 0
    if regime == "wide layer full":  # D - u = s u^2 / 4
        return _over(tau, 2) + _over(1, s), _over(-1, s), 1 + s * wide
    if regime == "both full":  # D - u = s d (u - d)
        return _over(tau - _over(wide + s * narrow * narrow, 1 + s * narrow), 2), 0, 0
    raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")


def _over(a, b):
    """a / b: exact for ints and Fractions, symbolic for sympy or z3 expressions."""
    if isinstance(a, (int, Fraction)) and isinstance(b, (int, Fraction)):
        return _tidy(Fraction(a) / b)
    return a / b


def _one_minus_two(wide: int, narrow: int, tau: Exact, r: Exact, s: int) -> Exact:
    """Sharp pieces of the best one-layer plan minus those of the best two-layer plan at r."""
    one = 1 + s * min(tau - r, wide)
    u = min(tau - 2 * r, wide + narrow)
    y = min(Fraction(u, 2), Fraction(narrow))
    return one - (1 + s * (u - y)) * (1 + s * y)


# --- comparison with the ReLU-budget optimum ---

class SameTotal(namedtuple("SameTotal", "total retained latency fits same")):
    """The ReLU-budget optimum that keeps as many ReLUs as a latency optimum.

    Attributes:
        total: ReLUs kept by the latency optimum (one record per distinct total among ties).
        retained: the ReLU-budget integer optima for that total (listed ties).
        latency: the cost of each of them.
        fits: whether each fits the latency budget.
        same: True when the two objectives' integer optima with this total are the same set.
    """

    __slots__ = ()


class ReluProxy(namedtuple("ReluProxy", "relu_budget retained latency value")):
    """What a ReLU-count user gets: the largest ReLU budget R whose ReLU-budget optimum
    (some tie of it) fits the latency budget, and that optimum.

    Attributes:
        relu_budget: R.
        retained: the cheapest ReLU-budget integer optimum for R (ties as in ``sharp_optimum``).
        latency: its cost.
        value: its capacity bound (to compare with the latency optimum's).
    """

    __slots__ = ()


def relu_budget_comparison(widths: Sequence[int], budget: object, cost: CostModel, p: int = 2,
                           objective: str = "sharp",
                           optimum: LatencyOptimum | None = None) -> tuple[list[SameTotal], ReluProxy]:
    """How the latency optimum differs from the ReLU-budget optimum (``sharp_optimum`` or
    ``paper_optimum``): for the same total of ReLUs, and against the ReLU-count proxy.

    Args:
        widths, budget, cost, p: the problem (as ``latency_sharp_optimum``).
        objective: "sharp" or "paper" (two layers).
        optimum: the latency optimum if already computed.

    Returns:
        (same_total, proxy): a ``SameTotal`` per distinct total among the listed optima, and
        the ``ReluProxy``.

    Raises:
        ValueError: as ``check_latency_problem``, or for an unknown objective.

    Example:
        >>> same, proxy = relu_budget_comparison([50000, 5000], 10000, cost_model(1, 4950))
        >>> same[0].retained, same[0].latency, same[0].fits, proxy.relu_budget, proxy.value
        ([(2525, 2525)], [14950], [False], 100, 2602)
    """
    from capacity.optimum import paper_optimum, sharp_optimum

    dims, t, cost, p = check_latency_problem(widths, budget, cost, p)
    if objective == "sharp":
        solve, opt_fn = (lambda b: sharp_optimum(dims, b, p)), latency_sharp_optimum
        opt = optimum or opt_fn(dims, t, cost, p)
    elif objective == "paper" and len(dims) == 2:
        solve = lambda b: paper_optimum(dims[0], dims[1], b, p)  # noqa: E731
        opt = optimum or latency_paper_optimum(dims[0], dims[1], t, cost, p)
    else:
        raise ValueError(f"objective must be 'sharp' or (for two layers) 'paper', got {objective!r}")
    same = []
    for total in sorted({sum(a) for a in opt.integer_retained}):
        relu_opt = solve(total)
        mine = sorted(a for a in opt.integer_retained if sum(a) == total)
        costs = [latency(a, cost) for a in relu_opt.integer_retained]
        same.append(SameTotal(total, relu_opt.integer_retained, costs, [c <= t for c in costs],
                              mine == relu_opt.integer_retained))
    return same, _proxy(solve, sum(dims), t, cost, p)


def _proxy(solve, total_width: int, t: Exact, cost: CostModel, p: int) -> ReluProxy:
    """Binary search for the largest ReLU budget whose cheapest optimum fits (its cost is
    nondecreasing in the budget: the optimum's counts are, and so are its active layers)."""

    def cheapest(b: int) -> tuple[Exact, tuple[int, ...]]:
        return min((latency(a, cost), a) for a in solve(b).integer_retained)

    lo, hi = 0, total_width
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cheapest(mid)[0] <= t else (lo, mid - 1)
    cost_lo, alloc = cheapest(lo)
    return ReluProxy(lo, alloc, cost_lo, solve(lo).integer_value)


# --- brute force: the independent check for small sizes ---

def brute_force_latency_optima(widths: Sequence[int], budget: object, cost: CostModel, p: int = 2,
                               objective: str = "sharp") -> tuple[list[tuple[int, ...]], Exact]:
    """Every allocation in the box that fits the latency budget and maximises the bound, by
    enumeration (sorted), and the maximum. Only for a few layers of width a dozen or so.

    Example:
        >>> brute_force_latency_optima([3, 2], 6, cost_model(1, 2))  # one layer or two: a tie
        ([(1, 1), (3, 0)], 5)
    """
    dims, t, cost, p = check_latency_problem(widths, budget, cost, p)
    if objective == "sharp":
        bound = lambda a: sharp_capacity(a, p)  # noqa: E731
    else:
        bound = lambda a: corollary1_counts(a[0], a[1], dims[0], dims[1], p)  # noqa: E731
    best, winners = None, []
    for alloc in product(*(range(d + 1) for d in dims)):
        if latency(alloc, cost) > t:
            continue
        value = bound(alloc)
        if best is None or value > best:
            best, winners = value, [alloc]
        elif value == best:
            winners.append(alloc)
    return sorted(winners), best
