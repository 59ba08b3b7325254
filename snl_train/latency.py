"""Training under a latency budget: the measured MPC cost model applied to a network's gate sites.

``python -m snl_train ... --latency-budget SECONDS --network {localhost,lan,wan}`` prices every
gate site as a ReLU layer of two-party private inference (:mod:`snl_train.accounting`'s cost
profile, batch 1, secret weights): a site keeping k > 0 ReLUs costs rho + beta k, a site keeping
none costs nothing, and the linear layers with the output cost a fixed ``linear``. So the
estimated latency of a binarized network is capacity's ``latency(kept, CostModel(beta, rho,
linear))``, the cost model of :mod:`capacity.latency`, exactly (Fractions of the profile's
decimal constants).

Three places use it (the trainer calls them; this module knows nothing of the trainer):

* the search stops once the network binarized as it stands (c > epsilon kept) is estimated
  within the budget (:meth:`LatencyPlan.estimate`);
* the search's penalty adds a per-site group term (:func:`gate_penalty`): lambda x (sum |c| +
  w sum_s ||c_s||_2 / sqrt(n_s)), w = ``group_penalty`` x rho / beta, rescaled to equal
  sum |c| at the start. A site whose slopes are all 1 then costs rho / beta in units of one
  ReLU, as the cost model says, and the group norm, unlike sum |c|, pulls hardest on sites
  that are already weak, so whole sites go to zero;
* binarization keeps the budget exactly (:func:`binarize_within_latency`): for each number k
  of active sites, capacity's ``relu_budget`` says how many ReLUs k sites can afford; the k
  sites with most slopes above epsilon are kept active and their largest slopes kept up to
  that count; the k keeping the most ReLUs wins (ties: fewer sites, so lower latency). Emptying
  a site is chosen exactly when the ReLUs it frees keep more elsewhere. Fixed allocations
  (``--allocation sharp`` / ``paper``) take their per-site counts from capacity's latency
  optimum (:func:`latency_allocation`), the theory of claim c20.

Example::

    >>> from snl_train.models import MLP
    >>> net = MLP(4, [8, 3], 2)
    >>> plan = latency_plan(net, torch.zeros(1, 4), budget="0.2", network="lan")
    >>> plan.max_sites, float(plan.cost.per_layer) > 1000 * float(plan.cost.per_relu)
    (2, True)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from capacity.latency import CostModel, as_cost, latency, relu_budget

from .accounting import (DEFAULT_PROFILE, NETWORK_PRESETS, SiteCount, latency_cost_model,
                         load_cost_profile, relu_counts)
from .gates import gate_parameters, gate_sites

__all__ = ["NETWORKS", "LatencyPlan", "latency_plan", "cost_profile_json", "gate_penalty",
           "group_weight", "latency_choice", "binarize_within_latency", "latency_allocation",
           "priced_network"]

NETWORKS = ("localhost", *NETWORK_PRESETS)


@dataclass(frozen=True)
class LatencyPlan:
    """A latency budget and the cost model that prices one network's sites.

    Attributes:
        budget: T in seconds, exact.
        cost: capacity's ``CostModel``: per kept ReLU (beta), per site keeping any (rho), and
            ``linear``, the linear layers and the logits' output (exact).
        network, profile, weights, batch_size: what priced it.
        sites: (name, total ReLUs, gated) per inference site in forward order; an excluded
            site (not gated) keeps all its ReLUs, so its cost is fixed.
    """

    budget: Fraction
    cost: CostModel
    network: str
    profile: str
    sites: tuple
    weights: str = "secret"
    batch_size: int = 1

    @property
    def fixed(self) -> Fraction:
        """What any binarization costs: the linear layers and the excluded sites."""
        return Fraction(latency([t if not gated else 0 for _, t, gated in self.sites], self.cost))

    @property
    def gated_cost(self) -> CostModel:
        """The cost model of the gated sites alone (the fixed part in ``linear``)."""
        return self.cost._replace(linear=self.fixed)

    @property
    def max_sites(self) -> int:
        """How many gated sites can be active at once within the budget (one ReLU each)."""
        gated = sum(1 for *_, g in self.sites if g)
        return max(k for k in range(gated + 1)
                   if relu_budget(self.budget, self.gated_cost, k, k) is not None)

    def estimate(self, counts: list[SiteCount]) -> Fraction:
        """Estimated latency of the network keeping ``counts`` (exact seconds)."""
        return Fraction(latency([s.kept for s in counts], self.cost))

    def relu_budget(self) -> int:
        """The most ReLUs any binarization within the budget keeps (excluded sites included):
        max over k of what the k widest gated sites can afford (capacity's ``relu_budget``)."""
        widths = sorted((t for _, t, g in self.sites if g), reverse=True)
        excluded = sum(t for _, t, g in self.sites if not g)
        best = 0
        for k in range(len(widths) + 1):
            b = relu_budget(self.budget, self.gated_cost, k, sum(widths[:k]))
            if b is None:
                break
            best = max(best, b)
        return excluded + best

    def report(self, counts: list[SiteCount]) -> dict:
        """result.json's ``latency_budget`` entry for a network keeping ``counts``.

        ``cost_model`` is in the format of ``python -m capacity.optimize --cost``.
        """
        estimate = self.estimate(counts)
        return {"budget_seconds": float(self.budget), "network": self.network,
                "profile": self.profile, "weights": self.weights, "batch_size": self.batch_size,
                "cost_model": cost_profile_json(self.cost, self),
                "estimated_seconds": float(estimate), "within_budget": estimate <= self.budget,
                "active_sites": sum(1 for s in counts if s.kept > 0), "sites": len(counts),
                "fixed_seconds": float(self.fixed)}


def cost_profile_json(cost: CostModel, plan: LatencyPlan | None = None) -> dict:
    """``cost`` in capacity's cost-profile format ({"per_relu", "per_layer", "linear", "unit"});
    the numbers are the decimals the profile's floats print as, so reading them back with
    ``capacity.latency.parse_cost_profile`` gives ``cost`` exactly."""
    doc = {"per_relu": _decimal(cost.per_relu), "per_layer": _decimal(cost.per_layer),
           "linear": _decimal(cost.linear), "unit": "s"}
    if plan is not None:
        doc["meta"] = {"network": plan.network, "profile": plan.profile, "weights": plan.weights,
                       "batch_size": plan.batch_size}
    return doc


def _decimal(value) -> float | str:
    """A JSON number whose decimal text is ``value`` exactly, else the string "p/q"."""
    as_float = float(value)
    return as_float if Fraction(repr(as_float)) == value else f"{value.numerator}/{value.denominator}"


def latency_plan(model: nn.Module, example_input, budget, network: str = "localhost",
                 profile: str = DEFAULT_PROFILE, epsilon: float = 0.01) -> LatencyPlan:
    """Price ``model``'s layers and check the budget against what no binarization can avoid.

    Args:
        model: the network, ungated or gated (gates at 1 or binarized); not changed.
        example_input: a batch of one sample (its shape fixes the layers' sizes).
        budget: T in seconds: a number >= 0 (a float is read as the decimal it prints as).
        network: "localhost" (the profile's measured loopback), "lan" or "wan".
        profile: a cost profile name or path (:func:`snl_train.accounting.load_cost_profile`).
        epsilon: the gate threshold (to count an excluded site's ReLUs).

    Returns:
        A :class:`LatencyPlan`.

    Raises:
        ValueError: a negative budget, an unknown network or profile, a network the
            converter or the cost model cannot price (named), or a budget below the cost of
            the linear layers (and excluded sites) alone.
    """
    from .gates import is_gated
    from .private import convert

    t = as_cost(repr(budget) if isinstance(budget, float) else budget, "latency budget")
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}")
    loaded = load_cost_profile(profile)
    priced = _binary_copy(model)
    try:
        program = convert(priced, example_input)
        cost = latency_cost_model(program.layers, program.outputs, loaded, network)
    except ValueError as exc:
        raise ValueError(f"--latency-budget needs the network priced by the cost model: {exc}") from None
    gated = {name for name, _ in gate_sites(model)} if is_gated(model) else None
    sites = tuple((s.name, s.total, gated is None or s.name in gated)
                  for s in relu_counts(model, example_input, epsilon))
    plan = LatencyPlan(t, cost, network, loaded.name, sites)
    if plan.fixed > t:
        what = "the linear layers" + (" and the excluded sites" if plan.fixed > cost.linear else "")
        raise ValueError(f"latency budget {float(t):.6g} s is below the cost of {what} alone "
                         f"({float(plan.fixed):.6g} s on {network}): no network fits")
    return plan


def _binary_copy(model: nn.Module) -> nn.Module:
    """A copy whose gates are all 1 (the converter prices layers, not which entries are kept)."""
    from .gates import is_gated

    if not is_gated(model):
        return model
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for c in gate_parameters(copied):
            c.fill_(1.0)
    return copied


def gate_penalty(model: nn.Module, group_weight: float = 0.0) -> torch.Tensor:
    """The search's penalty before lambda: sum |c| (Algorithm 1), or with ``group_weight`` w > 0

        (sum |c| + w sum_s ||c_s||_2 / sqrt(n_s)) x N / (N + w S)

    for S sites of n_s slopes each, N in all. The bracket is the latency of the relaxed
    network in units of one ReLU when w = rho / beta (a site with every slope at 1 costs w,
    ||c_s|| / sqrt(n_s) being 1 there and 0 only for an empty site); the factor makes the
    whole penalty equal sum |c| = N at the start, so lambda keeps its meaning. A site's slopes
    are pushed down in proportion to c_i / ||c_s||: hardest in sites with few or small
    slopes, so weak sites empty first and whole.

    Example:
        >>> from snl_train.gates import add_gates
        >>> from snl_train.models import MLP
        >>> net = add_gates(MLP(4, [8, 2], 2), example_input=torch.zeros(1, 4))
        >>> gate_penalty(net).item(), gate_penalty(net, 100.0).item()
        (10.0, 10.0)
        >>> _ = gate_parameters(net)[1].data.zero_()  # the 2-slope site emptied
        >>> gate_penalty(net).item(), round(gate_penalty(net, 100.0).item(), 3)
        (8.0, 5.143)
    """
    params = gate_parameters(model)
    penalty = sum(c.abs().sum() for c in params)
    if group_weight:
        total = sum(c.numel() for c in params)
        group = sum(torch.linalg.vector_norm(c) / math.sqrt(c.numel()) for c in params)
        penalty = (penalty + group_weight * group) * (total / (total + group_weight * len(params)))
    return penalty


def group_weight(plan: LatencyPlan, scale: float) -> float:
    """w = ``scale`` x rho / beta (0 when ``scale`` is 0; rho / beta is infinite when beta = 0:
    then w = ``scale`` x the sites' largest ReLU count, which empties sites as readily)."""
    if scale == 0:
        return 0.0
    rho, beta = plan.cost.per_layer, plan.cost.per_relu
    ratio = rho / beta if beta else max((t for _, t, _ in plan.sites), default=1)
    return float(scale * ratio)


# ----------------------------------------------------------------------------- binarization

@dataclass(frozen=True)
class _Site:
    """A gated site as binarization sees it."""

    name: str
    index: int  # position among the gated sites
    unit: int  # ReLUs per gate entry
    c: torch.Tensor  # flattened slopes
    above: int  # entries whose slope is above the threshold

    @property
    def available(self) -> int:
        """ReLUs whose slope is above the threshold."""
        return self.above * self.unit


def _gated(model: nn.Module, example_input, epsilon: float) -> list[_Site]:
    totals = {s.name: s.total for s in relu_counts(model, example_input, epsilon)}
    out = []
    for k, (name, gate) in enumerate(gate_sites(model)):
        c = gate.c.detach().flatten().cpu()
        out.append(_Site(name, k, totals[name] // c.numel(), c, int((c > epsilon).sum())))
    return out


def _greedy_kept(sites: list[_Site], budget: int, epsilon: float) -> int:
    """ReLUs ``binarize_within_budget`` keeps on these sites: slopes above epsilon in
    decreasing order (ties: site, then entry), each unit kept while it fits."""
    if all(s.unit == 1 for s in sites):
        return min(budget, sum(s.available for s in sites))
    candidates = sorted((-float(v), s.index, i, s.unit) for s in sites
                        for i, v in enumerate(s.c.tolist()) if v > epsilon)
    used = 0
    for *_, size in candidates:
        if used + size <= budget:
            used += size
    return used


def latency_choice(sites: list[_Site], plan: LatencyPlan, epsilon: float) -> tuple[list[_Site], int]:
    """(active sites, their ReLU budget): the choice keeping the most ReLUs within the budget.

    For k = 0, 1, ... the k sites with most ReLUs above epsilon (ties: forward order) can
    afford ``relu_budget(T, cost, k, ...)`` ReLUs; the first k that keeps the most wins.
    """
    ranked = sorted(sites, key=lambda s: (-s.available, s.index))
    best = ([], 0, 0)  # (active, budget, kept)
    for k in range(1, len(ranked) + 1):
        active = ranked[:k]
        b = relu_budget(plan.budget, plan.gated_cost, k, sum(s.c.numel() * s.unit for s in active))
        if b is None:
            break  # more sites only cost more
        kept = _greedy_kept(active, b, epsilon)
        if kept > best[2]:
            best = (active, b, kept)
    return best[0], best[1]


@torch.no_grad()
def binarize_within_latency(model: nn.Module, plan: LatencyPlan, epsilon: float, example_input):
    """Set every gate to 0/1 so that the estimated latency is within ``plan.budget``; return
    the counts (:func:`snl_train.accounting.relu_counts`).

    Sites outside :func:`latency_choice`'s active set keep nothing; inside it the largest
    slopes above epsilon are kept up to the ReLUs the active sites can afford
    (:func:`snl_train.trainer.binarize_within_budget`).

    Raises:
        RuntimeError: the result is over the budget (a bug: the choice guarantees it).
    """
    from .trainer import binarize_within_budget

    sites = _gated(model, example_input, epsilon)
    active, budget = latency_choice(sites, plan, epsilon)
    chosen = {s.name for s in active}
    for name, gate in gate_sites(model):
        if name not in chosen:
            gate.c.zero_()
    counts = binarize_within_budget(model, budget, epsilon, example_input)
    if plan.estimate(counts) > plan.budget:
        raise RuntimeError(f"binarization over the latency budget: {float(plan.estimate(counts))} s")
    return counts


def latency_allocation(kind: str, sites: list, plan: LatencyPlan, counts: dict | None = None):
    """Per-site kept counts of a fixed allocation under the latency budget, as a
    :class:`capacity.allocation.Allocation`.

    ``sharp`` and ``paper`` (two sites) are capacity's latency optima (claim c20; the largest
    tie in site order), for single-ReLU units and one activation; ``uniform`` spends what all
    sites active can afford; a file's ``counts`` are checked against the budget.

    Raises:
        capacity.allocation.AllocationError: channel units for sharp / paper, or counts over
            the budget.
    """
    from capacity import allocation as alloc
    from capacity.latency import latency_paper_optimum, latency_sharp_optimum

    cost, widths = plan.gated_cost, [s.total for s in sites]
    if kind in ("sharp", "paper"):
        if any(s.unit != 1 for s in sites) or len({s.pieces for s in sites}) != 1:
            raise alloc.AllocationError(f"--allocation {kind} under --latency-budget needs one gate "
                                        "per ReLU and one activation (--granularity pixel)")
        p = sites[0].pieces
        opt = (latency_sharp_optimum(widths, plan.budget, cost, p) if kind == "sharp"
               else latency_paper_optimum(widths[0], widths[1], plan.budget, cost, p))
        chosen = max(opt.integer_retained)
        return alloc.Allocation(kind, tuple(chosen), sum(chosen), plan.relu_budget(),
                                opt.integer_ties, alloc.TIE_RULE + "; latency-budget optimum")
    if kind == "uniform":
        b = relu_budget(plan.budget, cost, len(sites), sum(widths))
        return alloc.allocate("uniform", sites, 0 if b is None else b)
    chosen = alloc.file_allocation(sites, sum(widths), counts)
    spent = latency(chosen.counts, cost)
    if spent > plan.budget:
        raise alloc.AllocationError(f"the allocation file's counts cost {float(spent):.6g} s on "
                                    f"{plan.network}, over the latency budget {float(plan.budget):.6g} s")
    return chosen


def priced_network(model: nn.Module, example_input, network: str, profile: str = DEFAULT_PROFILE) -> float:
    """Estimated latency (seconds) of a binarized ``model`` on ``network`` under the same cost
    model (for networks not trained with a latency budget)."""
    from .private import convert

    program = convert(model, example_input)
    cost = latency_cost_model(program.layers, program.outputs, load_cost_profile(profile), network)
    return float(latency([layer.kept for layer in program.layers if layer.kind == "relu"], cost))
