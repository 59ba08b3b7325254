"""Per-site ReLU allocations for a budget: the theory's choices as exact integer quotas.

A *site* is one gated ReLU call site of a network. It has ``total`` ReLUs per sample,
which are kept or linearized in *units* of ``unit`` ReLUs (1 for a pixel-wise gate; H*W
for a channel-wise gate, which keeps or linearizes a whole channel), and an activation of
``pieces`` linear pieces (ReLU: p = 2). An allocation gives each site a kept count k_s,
its *quota*: a multiple of its unit between 0 and its total.

Every kind spends the same *allocated total* T: the largest total <= budget that the units
can make (the budget itself when every unit is 1), so allocations differ only in where
the ReLUs go. The kinds:

* ``sharp``: maximise the sharp bound prod_s ((p_s - 1) k_s + 1) (DESIGN.md, note 4);
  with equal units and p this is water-filling (``capacity.optimum.water_level``).
* ``uniform``: the same fraction a = T / (sum of totals) in every site as nearly as counts
  allow: minimise sum_s (k_s - a t_s)^2; with equal units, largest remainders (Hamilton).
* ``paper``: two sites: the integer maximiser of Corollary 1 (``paper_optimum``), the
  paper's Theorem 2 inside the box.
* a file: counts given by the user (:func:`file_allocation` checks them; the total is
  their sum).

Ties. Among the optimal count vectors the one chosen is the largest in site order
(lexicographically: earlier sites keep more); ``ties`` says how many optima there are.
With mixed units the optimum is found by exact dynamic programming over the lattice of
multiples of the units' gcd; with equal units by the closed forms, which the tests check
against the dynamic programme and against brute force.
"""

from __future__ import annotations

import json
import operator
from collections import namedtuple
from collections.abc import Mapping, Sequence
from math import comb, gcd

from capacity.exact import as_count

#: The allocation kinds computed here (``learned`` is the trainer's own, not computed).
KINDS = ("paper", "sharp", "uniform")

#: Largest (states x choices) the exact dynamic programme over mixed units may take.
MAX_DP_STEPS = 4_000_000

#: How ties are broken, recorded with every allocation.
TIE_RULE = "among optimal allocations, the largest in site order (earlier sites keep more)"


class Site(namedtuple("Site", "name total unit pieces")):
    """One gated ReLU site: ``total`` ReLUs kept in units of ``unit``, ``pieces`` = p.

    Example:
        >>> Site("features.1", 64, 16, 2).units
        4
    """

    __slots__ = ()

    @property
    def units(self) -> int:
        """How many units (gate entries) the site has."""
        return self.total // self.unit


class Allocation(namedtuple("Allocation", "kind counts total budget ties rule")):
    """Kept ReLUs per site (``counts``, in site order) adding up to ``total`` <= ``budget``.

    Attributes:
        kind: "paper", "sharp", "uniform" or "file".
        counts: tuple of kept counts, one per site, each a multiple of the site's unit.
        total: sum of counts (for computed kinds: the largest achievable total <= budget).
        budget: the budget the allocation was computed for.
        ties: how many optimal count vectors there are (1 for a file).
        rule: how the chosen one was picked among them.
    """

    __slots__ = ()

    def quotas(self, sites: Sequence[Site]) -> dict:
        """``{site name: kept count}`` in site order."""
        return {site.name: count for site, count in zip(sites, self.counts)}


class AllocationError(ValueError):
    """An allocation that cannot be applied to these sites and budget (a user error)."""


def check_sites(sites: Sequence[Site], budget: object) -> int:
    """Validate sites (distinct names, total >= 1 a multiple of unit >= 1, p >= 2); return the budget.

    Raises:
        AllocationError: naming the offending site or value.

    Example:
        >>> check_sites([Site("a", 4, 1, 2)], 3)
        3
    """
    if not sites:
        raise AllocationError("there are no gated sites to allocate ReLUs to")
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise AllocationError(f"site names must be distinct, got {names}")
    try:
        for s in sites:
            unit = as_count(s.unit, f"unit of site {s.name}", minimum=1)
            total = as_count(s.total, f"total of site {s.name}", minimum=1)
            as_count(s.pieces, f"pieces of site {s.name}", minimum=2)
            if total % unit:
                raise AllocationError(f"site {s.name}: total {total} is not a multiple of its unit {unit}")
        return as_count(budget, "budget", minimum=0)
    except AllocationError:
        raise
    except ValueError as exc:
        raise AllocationError(str(exc)) from None


def achievable_total(sites: Sequence[Site], budget: int) -> int:
    """Largest sum of per-site multiples of the units (each <= its total) that is <= budget.

    Bounded subset sums on a Python int used as a bit set (bit b set: total b reachable);
    each site's 0..n units are added by binary splitting, so the work is O(log n) shifts.

    Example:
        >>> achievable_total([Site("a", 32, 16, 2), Site("b", 4, 4, 2)], 30)
        20
    """
    mask = (1 << (budget + 1)) - 1
    reach = 1
    for site in sites:
        left, size = site.units, 1
        while left > 0:  # chunks 1, 2, 4, ..., rest make every count 0..n from sums of chunks
            take = min(size, left)
            reach = (reach | (reach << (take * site.unit))) & mask
            left, size = left - take, size * 2
    return reach.bit_length() - 1


# ----------------------------------------------------------------------------- objectives

def _objective(kind: str, sites: Sequence[Site], total: int):
    """(value of site s at count k, combine, identity) of ``kind``; larger combined is better.

    sharp: factors (p - 1) k + 1, multiplied (all positive, so products order like the bound).
    uniform: -(k N - T t)^2 with N the sum of totals: the squared deviation from the fraction
    a = T / N, scaled by N^2 to stay in integers, summed.
    """
    if kind == "sharp":
        return (lambda s, k: (s.pieces - 1) * k + 1), operator.mul, 1
    whole = sum(s.total for s in sites)
    return (lambda s, k: -(k * whole - total * s.total) ** 2), operator.add, 0


def objective_value(kind: str, sites: Sequence[Site], counts: Sequence[int]) -> int:
    """The exact objective of ``counts`` (sharp: the piece bound; uniform: minus scaled deviation).

    Example:
        >>> objective_value("sharp", [Site("a", 4, 1, 2), Site("b", 4, 1, 2)], (2, 2))
        9
    """
    value, combine, result = _objective(kind, sites, sum(counts))
    for site, k in zip(sites, counts):
        result = combine(result, value(site, k))
    return result


def dp_optimum(kind: str, sites: Sequence[Site], total: int) -> tuple[tuple[int, ...], int]:
    """Exact optimum of ``kind`` over counts that are multiples of the units and sum to ``total``.

    Suffix dynamic programme on the lattice of multiples of g = gcd(units): ``best[i][b]`` is
    (best value, number of optima) of sites i.. spending exactly b*g ReLUs. Going forward,
    each site takes the largest count that stays optimal, which gives the tie rule.

    Returns:
        (counts, number of optimal count vectors).

    Raises:
        AllocationError: ``total`` is not achievable, or the work exceeds ``MAX_DP_STEPS``.
    """
    g = 0
    for s in sites:
        g = gcd(g, s.unit)
    steps = (total // g + 1) * sum(s.units + 1 for s in sites)
    if steps > MAX_DP_STEPS:
        raise AllocationError(
            f"an exact allocation over these sites (units {sorted({s.unit for s in sites})}) needs "
            f"{steps:,} steps, more than {MAX_DP_STEPS:,}; use pixel-wise gates or a file of counts")
    if total % g:
        raise AllocationError(f"no allocation over these sites spends exactly {total} ReLUs")
    value, combine, identity = _objective(kind, sites, total)
    top = total // g
    best = [None] * (len(sites) + 1)
    best[-1] = [(identity, 1)] + [None] * top  # nothing left to allocate: only b = 0 works
    for i in range(len(sites) - 1, -1, -1):
        best[i] = [_dp_cell(sites[i], best[i + 1], b, g, value, combine) for b in range(top + 1)]
    if best[0][top] is None:
        raise AllocationError(f"no allocation over these sites spends exactly {total} ReLUs")
    counts, b = [], top
    for i, site in enumerate(sites):
        target = best[i][b][0]
        for m in range(min(site.units, b * g // site.unit), -1, -1):
            rest = best[i + 1][b - m * site.unit // g]
            if rest is not None and combine(value(site, m * site.unit), rest[0]) == target:
                counts.append(m * site.unit)
                b -= m * site.unit // g
                break
    return tuple(counts), best[0][top][1]


def _dp_cell(site: Site, after: list, b: int, g: int, value, combine):
    """(best value, number of optima) for ``site`` and the sites after it spending b*g ReLUs."""
    cell = None
    step = site.unit // g
    for m in range(min(site.units, b // step) + 1):
        rest = after[b - m * step]
        if rest is None:
            continue
        v = combine(value(site, m * site.unit), rest[0])
        if cell is None or v > cell[0]:
            cell = (v, rest[1])
        elif v == cell[0]:
            cell = (v, cell[1] + rest[1])
    return cell


# ----------------------------------------------------------------------------- closed forms

def _balanced(sites: Sequence[Site], units: int) -> tuple[tuple[int, ...], int]:
    """Water-filling on unit counts: min(n_s, q) each, one more to the first open sites."""
    from capacity.optimum import water_level

    q = int(water_level([s.units for s in sites], units))  # floor of the level
    base = [min(s.units, q) for s in sites]
    extra = units - sum(base)
    open_sites = [i for i, s in enumerate(sites) if s.units > q]
    for i in open_sites[:extra]:
        base[i] += 1
    return tuple(m * s.unit for m, s in zip(base, sites)), comb(len(open_sites), extra)


def _largest_remainders(sites: Sequence[Site], units: int) -> tuple[tuple[int, ...], int]:
    """Hamilton apportionment of ``units`` proportional to the sites' unit counts."""
    whole = sum(s.units for s in sites)
    shares = [divmod(units * s.units, whole) for s in sites]  # (floor, remainder * whole)
    extra = units - sum(q for q, _ in shares)
    order = sorted(range(len(sites)), key=lambda i: -shares[i][1])  # stable: earlier first
    chosen = set(order[:extra])
    ties = 1
    if extra:
        edge = shares[order[extra - 1]][1]
        tied = [i for i in range(len(sites)) if shares[i][1] == edge]
        ties = comb(len(tied), sum(1 for i in tied if i in chosen))
    counts = tuple((q + (i in chosen)) * s.unit for i, (s, (q, _)) in enumerate(zip(sites, shares)))
    return counts, ties


# ----------------------------------------------------------------------------- the kinds

def _computed(kind: str, sites: Sequence[Site], budget: int, closed_form, key) -> Allocation:
    """``kind``'s optimum at the achievable total: ``closed_form(sites, units)`` when every
    site has the same ``key`` (its objective is then the same function of its unit count),
    else the exact dynamic programme."""
    budget = check_sites(sites, budget)
    total = achievable_total(sites, budget)
    if len({key(s) for s in sites}) == 1:
        counts, ties = closed_form(sites, total // sites[0].unit)
    else:
        counts, ties = dp_optimum(kind, sites, total)
    return Allocation(kind, counts, total, budget, ties, TIE_RULE)


def sharp_allocation(sites: Sequence[Site], budget: int) -> Allocation:
    """Maximise prod_s ((p_s - 1) k_s + 1) over quotas spending the achievable total.

    Example:
        >>> sharp_allocation([Site("a", 8, 1, 2), Site("b", 4, 1, 2)], 6).counts
        (3, 3)
    """
    return _computed("sharp", sites, budget, _balanced, lambda s: (s.unit, s.pieces))


def uniform_allocation(sites: Sequence[Site], budget: int) -> Allocation:
    """The same fraction of every site, as nearly as the units allow (least squares).

    Example:
        >>> uniform_allocation([Site("a", 8, 1, 2), Site("b", 4, 1, 2)], 6).counts
        (4, 2)
    """
    return _computed("uniform", sites, budget, _largest_remainders, lambda s: s.unit)


def paper_allocation(sites: Sequence[Site], budget: int) -> Allocation:
    """Theorem 2 (boxed, integer): two sites of unit 1 and equal p; Corollary 1's maximiser.

    Raises:
        AllocationError: not exactly two sites, a unit above 1, or different p.

    Example:
        >>> paper_allocation([Site("a", 64, 1, 2), Site("b", 16, 1, 2)], 40).counts
        (28, 12)
    """
    from capacity.optimum import paper_optimum

    budget = check_sites(sites, budget)
    if len(sites) != 2 or any(s.unit != 1 for s in sites) or sites[0].pieces != sites[1].pieces:
        raise AllocationError(
            f"the paper's allocation needs two hidden layers of single neurons with the same "
            f"activation; got {len(sites)} site(s) with units {[s.unit for s in sites]}")
    total = min(budget, sites[0].total + sites[1].total)
    opt = paper_optimum(sites[0].total, sites[1].total, total, sites[0].pieces)
    counts = max(opt.integer_retained)  # lexicographically largest: the first layer keeps more
    return Allocation("paper", tuple(counts), total, budget, len(opt.integer_retained), TIE_RULE)


def allocate(kind: str, sites: Sequence[Site], budget: int) -> Allocation:
    """The allocation ``kind`` ("paper", "sharp" or "uniform") of ``budget`` over ``sites``.

    Raises:
        AllocationError: an unknown kind, or as the kind's function.
    """
    functions = {"paper": paper_allocation, "sharp": sharp_allocation, "uniform": uniform_allocation}
    if kind not in functions:
        raise AllocationError(f"unknown allocation {kind!r}; choose from {', '.join(KINDS)} or a JSON file")
    return functions[kind](sites, budget)


def file_allocation(sites: Sequence[Site], budget: int, counts: Mapping[str, object]) -> Allocation:
    """Check user-given kept counts per site name; sites not named keep no ReLU.

    Raises:
        AllocationError: an unknown site, a count that is not an integer, is negative, is
        above the site's total or not a multiple of its unit, or counts summing above budget.

    Example:
        >>> file_allocation([Site("a", 8, 1, 2), Site("b", 4, 1, 2)], 6, {"b": 4}).counts
        (0, 4)
    """
    budget = check_sites(sites, budget)
    by_name = {s.name: s for s in sites}
    unknown = [name for name in counts if name not in by_name]
    if unknown:
        raise AllocationError(f"allocation names unknown site {unknown[0]!r}; the gated sites are "
                              f"{', '.join(by_name)}")
    kept = []
    for site in sites:
        k = counts.get(site.name, 0)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise AllocationError(f"site {site.name}: count must be a non-negative integer, got {k!r}")
        if k > site.total:
            raise AllocationError(f"site {site.name}: count {k} exceeds its {site.total} ReLUs")
        if k % site.unit:
            raise AllocationError(f"site {site.name}: count {k} is not a multiple of its unit of "
                                  f"{site.unit} ReLUs (one channel)")
        kept.append(k)
    if sum(kept) > budget:
        raise AllocationError(f"allocation keeps {sum(kept)} ReLUs in all, more than the budget {budget}")
    return Allocation("file", tuple(kept), sum(kept), budget, 1, "given")


def read_counts(text: str, source: str = "allocation file") -> dict:
    """Parse a JSON object ``{"site name": kept count, ...}``.

    Raises:
        AllocationError: malformed JSON or not an object of names to counts.

    Example:
        >>> read_counts('{"features.1": 12}')
        {'features.1': 12}
    """
    try:
        counts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AllocationError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(counts, dict):
        raise AllocationError(f"{source} must hold a JSON object of site names to kept counts, "
                              f"got {type(counts).__name__}")
    return counts
