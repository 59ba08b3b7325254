"""``python -m capacity.optimize``: how many ReLUs should each layer keep under a budget?

Prints, for the paper's bound (Corollary 1, two hidden layers) and for the sharp bound
prod_l((p-1) x_l + 1) + 1 (any depth), the optimal retention per layer, the ReLUs kept
and linearized, every integer optimum, and the capacity bound at the optimum next to
uniform retention and next to pruning the same counts. ``--json`` prints one object.

Imports nothing heavier than the standard library, so it starts fast. Numbers of any size
stay exact up to ``capacity.cli.MAX_DIGITS`` digits per input; problems whose report would
be too large to print in seconds are refused with one line saying why (``check_size``).
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from collections import namedtuple
from collections.abc import Sequence
from math import comb, floor, log10
from typing import TYPE_CHECKING

from capacity.cli import CommandParser, UsageError, command, parse_integer, read_text
from capacity.bounds import corollary1_counts, corollary2_counts, sharp_capacity
from capacity.exact import Exact, exact_float, exact_str, unlimited_digits
from capacity.optimum import (
    MAX_LISTED_TIES,
    PaperOptimum,
    SharpOptimum,
    check_problem,
    closed_form,
    paper_optimum,
    sharp_optimum,
    water_level,
)

if TYPE_CHECKING:  # capacity.latency is imported by the latency mode only, to keep startup fast
    from capacity.latency import CostModel, LatencyOptimum, LatencyPlan, ReluProxy

PROG = "python -m capacity.optimize"
EXAMPLE = "python -m capacity.optimize --d1 50000 --d2 5000 --budget 10000"

#: Most digits of a number the report prints (printing takes quadratic time: ~1 s here).
MAX_REPORT_DIGITS = 50_000
#: Most numbers the listed integer optima may hold (1,000 ties of 1,000 layers: ~2 s).
MAX_LISTED_NUMBERS = 1_000_000

__all__ = ["UsageError", "build_parser", "parse_problem", "check_size", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        PROG,
        failure="output stopped early (the reader went away, e.g. | head)",
        description=(
            "Optimal per-layer ReLU retention for a ReLU budget: the paper's bound "
            "(Corollary 1 / Theorem 2, corrected for the box [0,1]^2 and integer counts) "
            "and the sharp bound prod(x_l + 1) + 1 (any depth)."
        ),
        epilog=f"example: {EXAMPLE}",
    )
    parser.add_argument("--d1", help="width of hidden layer 1 (integer >= 1)")
    parser.add_argument("--d2", help="width of hidden layer 2 (integer >= 1)")
    parser.add_argument("--widths", help="comma-separated widths W1,W2,... (any depth; instead of --d1/--d2)")
    parser.add_argument("--budget", help="total ReLUs to keep (0 <= B <= sum of widths)")
    parser.add_argument("--p", default="2", help="linear pieces of the activation (ReLU: 2, the default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    add_latency_options(parser)
    return parser


def parse_problem(argv: Sequence[str] | None) -> tuple[list[int], int, int, bool]:
    """Parse and validate the command line; raise UsageError with a one-line message."""
    args = build_parser().parse_args(argv)
    if args.widths is not None and (args.d1 is not None or args.d2 is not None):
        raise UsageError("give either --widths or --d1/--d2, not both")
    if args.widths is not None:
        raw = [w.strip() for w in args.widths.split(",")]
    elif args.d1 is not None and args.d2 is not None:
        raw = [args.d1, args.d2]
    else:
        raise UsageError("the layer widths are missing: give --d1 and --d2, or --widths W1,W2,...")
    if args.budget is None:
        raise UsageError("the ReLU budget is missing: give --budget B")
    values = []
    for name, text in [*((f"width of layer {i + 1}", w) for i, w in enumerate(raw)),
                       ("budget", args.budget), ("p", args.p)]:
        try:
            values.append(parse_integer(text, name))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    *widths, budget, p = values
    try:
        widths, budget, p = check_problem(widths, budget, p)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_size(widths, budget, p)
    return widths, budget, p, args.json


def check_size(widths: list[int], budget: int, p: int) -> None:
    """Refuse (UsageError) a problem whose report cannot be printed in seconds.

    Two things grow without bound: the digits of the capacity bounds (products over the
    layers: printing a number takes time quadratic in its digits) and the listed integer
    optima (up to ``MAX_LISTED_TIES`` tuples of one count per layer).

    Example:
        >>> check_size([50000, 5000], 10000, 2)
    """
    bits = sum(((p - 1) * d + 1).bit_length() for d in widths) + 2 * p.bit_length() + len(widths)
    digits = int(bits * log10(2)) + 1
    if digits > MAX_REPORT_DIGITS:
        raise UsageError(f"the capacity bounds for {len(widths):,} layers of these widths"
                         f"{'' if p == 2 else ' and p'} would have about {digits:,} digits; at "
                         f"most {MAX_REPORT_DIGITS:,} are printed (printing takes time quadratic "
                         "in the digits): use fewer layers, smaller widths or a smaller --p")
    level = water_level(widths, budget)
    q = floor(level)
    open_layers = sum(1 for d in widths if d > q)
    listed = min(comb(open_layers, budget - sum(min(d, q) for d in widths)), MAX_LISTED_TIES)
    if listed * len(widths) > MAX_LISTED_NUMBERS:
        raise UsageError(f"the sharp optimum has {listed:,}+ tied integer allocations of "
                         f"{len(widths):,} layers to list ({listed * len(widths):,} numbers, at "
                         f"most {MAX_LISTED_NUMBERS:,}): use at most "
                         f"{MAX_LISTED_NUMBERS // MAX_LISTED_TIES:,} layers, or a budget that "
                         "fills the layers evenly (no ties)")


def _num(value: Exact) -> str:
    """Human form of an exact number: 56,252,502 or 225010009/4 (~56,252,502.25)."""
    if isinstance(value, int) or value.denominator == 1:
        return f"{int(value):,}"
    approx = exact_float(value)
    shown = f"{approx:,.2f}" if abs(approx) < 1e15 else f"{approx:.6g}"
    return f"{exact_str(value)} (~{shown})"


def _ratio(value: Fraction) -> str:
    return f"{exact_float(value):.6g}"


def _uniform(widths: list[int], budget: int) -> list[Exact]:
    total = sum(widths)
    return [_tidy(Fraction(budget * d, total)) for d in widths]


def _tidy(value: Fraction) -> Exact:
    return value.numerator if value.denominator == 1 else value


def paper_report(widths: list[int], budget: int, p: int) -> dict | None:
    """Everything the command says about the paper's bound, as exact Python values."""
    if len(widths) != 2:
        return None
    d1, d2 = widths
    opt = paper_optimum(d1, d2, budget, p)
    ux, uy = _uniform(widths, budget)
    x, y = opt.integer_retained[0]
    return {
        "optimum": opt,
        "closed_form": closed_form(d1, d2, budget, p),
        "uniform": (ux, uy),
        "uniform_value": corollary1_counts(ux, uy, d1, d2, p),
        "pruned_value": corollary2_counts(opt.retained[0], opt.retained[1], d1, d2, p),
        "pruned_integer_value": corollary2_counts(x, y, d1, d2, p),
    }


def sharp_report(widths: list[int], budget: int, p: int) -> dict:
    """Everything the command says about the sharp bound, as exact Python values."""
    opt = sharp_optimum(widths, budget, p)
    uniform = _uniform(widths, budget)
    report = {"optimum": opt, "uniform": uniform, "uniform_value": sharp_capacity(uniform, p)}
    if len(widths) == 2:
        paper = paper_optimum(widths[0], widths[1], budget, p)
        report["paper_allocation_value"] = sharp_capacity(paper.retained, p)
        report["paper_allocation_integer_value"] = sharp_capacity(paper.integer_retained[0], p)
    return report


def _layer_rows(widths: list[int], alpha, retained) -> list[str]:
    rows = [f"  {'layer':<7}{'width':>14}  {'retention':>11}  {'ReLUs kept':>24}  {'linearized':>24}"]
    for i, (d, a, x) in enumerate(zip(widths, alpha, retained)):
        rows.append(f"  {i + 1:<7}{d:>14,}  {_ratio(a):>11}  {_num(x):>24}  {_num(d - x):>24}")
    return rows


def _ties(opt) -> str:
    listed = ", ".join("(" + ", ".join(f"{v:,}" for v in alloc) + ")" for alloc in opt.integer_retained)
    total = getattr(opt, "integer_ties", len(opt.integer_retained))
    more = f" ... {total:,} optima in all" if total > len(opt.integer_retained) else ""
    return f"  integer optima (ReLUs kept per layer): {listed}{more}"


def _bound_rows(rows: list[tuple[str, Exact, Exact | None]]) -> list[str]:
    out = [f"  {'capacity bound':<52}{'continuous':>30}  {'integer':>20}"]
    for label, cont, integer in rows:
        out.append(f"  {label:<52}{_num(cont):>30}  {'' if integer is None else _num(integer):>20}")
    return out


def render_text(widths: list[int], budget: int, p: int) -> str:
    """The human-readable report."""
    kind = "ReLU, p = 2" if p == 2 else f"p = {p} pieces"
    lines = [f"Optimal retention for widths {tuple(widths)}, budget B = {budget:,} ({kind})", ""]
    paper = paper_report(widths, budget, p)
    if paper is None:
        lines += ["Paper's bound (Corollary 1): stated for two hidden layers only; skipped.", ""]
    else:
        lines += _paper_text(widths, budget, p, paper)
    lines += _sharp_text(widths, budget, p, sharp_report(widths, budget, p))
    return "\n".join(lines)


def _paper_text(widths, budget, p, rep) -> list[str]:
    opt: PaperOptimum = rep["optimum"]
    a1, a2 = rep["closed_form"]
    head = "Theorem 2" if p == 2 else "Theorem 2 generalised to p"
    lines = [f"Paper's bound (Corollary 1, maximised on a1 d1 + a2 d2 = B; {head})"]
    lines += _layer_rows(widths, opt.alpha, opt.retained)
    lines.append(_ties(opt))
    closed = f"closed form a1 = {exact_str(a1)}, a2 = {exact_str(a2)}"
    if opt.interior:
        lines.append(f"  {closed} lies in [0, 1]^2: it is the optimum.")
    else:
        lines.append(f"  note: the {closed} is infeasible (outside [0, 1]^2);")
        lines.append(f"        the optimum is on the boundary, where {opt.active}.")
    ux, uy = rep["uniform"]
    a = Fraction(budget, sum(widths))
    lines.append("")
    lines += _bound_rows([
        ("at the optimum, linearized (Corollary 1)", opt.value, opt.integer_value),
        (f"uniform retention a1 = a2 = {exact_str(a)}, linearized", rep["uniform_value"], None),
        ("same counts, pruned (Corollary 2)", rep["pruned_value"], rep["pruned_integer_value"]),
    ])
    return lines + [""]


def _sharp_text(widths, budget, p, rep) -> list[str]:
    opt: SharpOptimum = rep["optimum"]
    term = "x_l + 1" if p == 2 else f"{p - 1} x_l + 1"
    lines = [f"Sharp bound (prod_l ({term}) + 1, any depth; maximised by water-filling)"]
    lines += _layer_rows(widths, opt.alpha, opt.retained)
    lines.append(_ties(opt))
    rows = [
        ("at the optimum, linearized or pruned", opt.value, opt.integer_value),
        (f"uniform retention a = {exact_str(Fraction(budget, sum(widths)))}", rep["uniform_value"], None),
    ]
    if "paper_allocation_value" in rep:
        rows.append(("at the paper's optimum (above)", rep["paper_allocation_value"],
                     rep["paper_allocation_integer_value"]))
    lines.append("")
    lines += _bound_rows(rows)
    lines.append("  (linearizing and pruning the same counts have the same sharp bound)")
    return lines


def _exact_list(values) -> list[str]:
    return [exact_str(v) for v in values]


def render_json(widths: list[int], budget: int, p: int) -> dict:
    """The machine-readable report: exact numbers as strings like "14999/2"."""
    out: dict = {"widths": widths, "budget": budget, "p": p, "paper": None}
    paper = paper_report(widths, budget, p)
    if paper is not None:
        opt: PaperOptimum = paper["optimum"]
        out["paper"] = {
            "alpha": [exact_float(a) for a in opt.alpha],
            "alpha_exact": _exact_list(opt.alpha),
            "retained": _exact_list(opt.retained),
            "linearized": _exact_list(d - x for d, x in zip(widths, opt.retained)),
            "interior": opt.interior,
            "active": opt.active,
            "closed_form": _exact_list(paper["closed_form"]),
            "integer_retained": [list(a) for a in opt.integer_retained],
            "capacity_bound": opt.integer_value,
            "capacity_bound_continuous": exact_str(opt.value),
            "uniform_capacity_bound": exact_str(paper["uniform_value"]),
            "pruned_capacity_bound": paper["pruned_integer_value"],
        }
    rep = sharp_report(widths, budget, p)
    opt = rep["optimum"]
    out["sharp"] = {
        "alpha": [exact_float(a) for a in opt.alpha],
        "alpha_exact": _exact_list(opt.alpha),
        "retained": _exact_list(opt.retained),
        "linearized": _exact_list(d - x for d, x in zip(widths, opt.retained)),
        "level": exact_str(opt.level),
        "integer_retained": [list(a) for a in opt.integer_retained],
        "integer_ties": opt.integer_ties,
        "integer_ties_listed_max": MAX_LISTED_TIES,
        "capacity_bound": opt.integer_value,
        "capacity_bound_continuous": exact_str(opt.value),
        "uniform_capacity_bound": exact_str(rep["uniform_value"]),
    }
    if "paper_allocation_integer_value" in rep:
        out["sharp"]["paper_allocation_capacity_bound"] = rep["paper_allocation_integer_value"]
    return out


# --- latency budget: --latency-budget T with --per-relu/--per-layer/--linear or --cost ---

LATENCY_EXAMPLE = ("python -m capacity.optimize --widths 50000,5000 --latency-budget 10000 "
                   "--per-relu 1 --per-layer 4950")
#: With more possible numbers of active layers than this, the table shows the ends and the
#: neighbourhood of the optimum only (each row is an exact product over the layers).
MAX_PLAN_ROWS = 16


class LatencyProblem(namedtuple("LatencyProblem", "widths budget cost p as_json")):
    """A parsed latency-budget command line (``cost`` is a ``capacity.latency.CostModel``)."""

    __slots__ = ()


def add_latency_options(parser: argparse.ArgumentParser) -> None:
    """The options of the latency-budget mode (numbers: 3, 0.021, 2.5e-4 or 3/4, kept exact)."""
    group = parser.add_argument_group(
        "latency budget (instead of --budget)",
        "Maximise the bounds under linear + sum_l (beta x_l + rho [x_l > 0]) <= T: every kept ReLU "
        "costs beta, every layer keeping at least one ReLU costs rho. Any time unit, used consistently. "
        f"Example: {LATENCY_EXAMPLE}")
    group.add_argument("--latency-budget", metavar="T", help="the latency budget T (>= the linear cost)")
    group.add_argument("--per-relu", metavar="BETA", help="cost of one kept ReLU (>= 0)")
    group.add_argument("--per-layer", metavar="RHO", help="cost of a layer that keeps any ReLU (>= 0)")
    group.add_argument("--linear", metavar="C", help="fixed cost of the linear layers (default 0)")
    group.add_argument("--cost", metavar="PROFILE.json",
                       help='the costs from a JSON file {"per_relu": BETA, "per_layer": RHO, "linear": C} '
                            '("linear" optional; "unit" and "meta" allowed and ignored)')


def parse_latency_problem(argv: Sequence[str] | None) -> LatencyProblem | None:
    """Parse a latency-budget command line; None when --latency-budget is absent.

    Raises:
        UsageError: with a one-line message (also for latency options without --latency-budget).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    given = [name for name, value in (("--per-relu", args.per_relu), ("--per-layer", args.per_layer),
                                      ("--linear", args.linear), ("--cost", args.cost)) if value is not None]
    if args.latency_budget is None:
        if given:
            raise UsageError(f"{given[0]} needs --latency-budget T")
        return None
    if args.budget is not None:
        raise UsageError("give either --budget (ReLUs) or --latency-budget (time), not both")
    # widths, p and --json are checked as for a ReLU budget (0 ReLUs is always a valid one)
    widths, _, p, as_json = parse_problem([*argv, "--budget", "0"])
    cost = _cost_from_args(args, given)
    from capacity.latency import check_latency_problem

    try:
        widths, budget, cost, p = check_latency_problem(widths, args.latency_budget, cost, p)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return LatencyProblem(widths, budget, cost, p, as_json)


def _cost_from_args(args: argparse.Namespace, given: list[str]) -> CostModel:
    from capacity.latency import cost_model, parse_cost_profile

    try:
        if args.cost is not None:
            if len(given) > 1:
                raise UsageError("give the costs either in --cost PROFILE.json or as --per-relu/--per-layer/"
                                 "--linear, not both")
            return parse_cost_profile(_read_profile(args.cost), source=f"cost profile {args.cost}")
        if args.per_relu is None or args.per_layer is None:
            raise UsageError("the costs are missing: give --per-relu BETA and --per-layer RHO, or --cost PROFILE.json")
        return cost_model(args.per_relu, args.per_layer, "0" if args.linear is None else args.linear)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _read_profile(path: str) -> str:
    return read_text(path, "cost profile", max_bytes=1 << 20)


def latency_report(problem: LatencyProblem, objective: str) -> dict | None:
    """Everything the command says about one bound under the latency budget (exact values)."""
    from capacity.latency import (emptying_threshold, latency_paper_optimum, latency_plans,
                                  latency_sharp_optimum, relu_budget_comparison)

    widths, budget, cost, p, _ = problem
    if objective == "paper":
        if len(widths) != 2:
            return None
        opt = latency_paper_optimum(widths[0], widths[1], budget, cost, p)
        plans = latency_plans(widths, budget, cost, p, objective="paper")
    else:
        opt = latency_sharp_optimum(widths, budget, cost, p)
        plans = latency_plans(widths, budget, cost, p, active=_plan_rows(opt, widths, budget, cost))
    same, proxy = relu_budget_comparison(widths, budget, cost, p, objective, optimum=opt)
    threshold = None
    if objective == "sharp" and len(widths) == 2 and cost.per_relu > 0:
        tau = Fraction(budget - cost.linear) / cost.per_relu
        threshold = (emptying_threshold(widths[0], widths[1], tau, p), Fraction(cost.per_layer) / cost.per_relu)
    return {"optimum": opt, "plans": plans, "same_total": same, "proxy": proxy, "threshold": threshold}


def _plan_rows(opt: LatencyOptimum, widths: list[int], budget: Exact, cost: CostModel) -> list[int]:
    """Which k the table shows: all of them, or the ends and the optimum's neighbourhood."""
    last = min(len(widths), int((Fraction(budget - cost.linear) / (cost.per_relu + cost.per_layer)) // 1))
    if last + 1 <= MAX_PLAN_ROWS:
        return list(range(last + 1))
    best = [plan.active for plan in opt.plans]
    near = {k + d for k in best for d in range(-3, 4)} | {0, 1, last - 1, last}
    return sorted(k for k in near if 0 <= k <= last)


def _exact_num(value: Exact) -> str:
    """A cost or a time, exactly: 10,000, 0.021 (a terminating decimal) or 1/3 (~0.333333)."""
    if isinstance(value, int) or value.denominator == 1:
        return f"{int(value):,}"
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den == 1:  # p / (2^a 5^b) is exactly a decimal with max(a, b) digits
        digits = max(twos, fives)
        scaled = abs(value.numerator) * 10**digits // value.denominator
        whole, frac = divmod(scaled, 10**digits)
        return f"{'-' if value < 0 else ''}{whole:,}.{frac:0{digits}d}"
    return f"{exact_str(value)} (~{exact_float(value):.6g})"


def _layer_list(layers) -> str:
    return ", ".join(str(i + 1) for i in layers) or "none"


def render_latency_text(problem: LatencyProblem) -> str:
    """The human-readable latency-budget report."""
    widths, budget, cost, p, _ = problem
    kind = "ReLU, p = 2" if p == 2 else f"p = {p} pieces"
    lines = [f"Optimal retention for widths {tuple(widths)} under a latency budget ({kind})",
             f"  budget T = {_exact_num(budget)}; per kept ReLU {_exact_num(cost.per_relu)}, per active layer "
             f"{_exact_num(cost.per_layer)}, linear layers {_exact_num(cost.linear)}",
             "  (a layer is active when it keeps at least one ReLU)", ""]
    paper = latency_report(problem, "paper")
    if paper is None:
        lines += ["Paper's bound (Corollary 1): stated for two hidden layers only; skipped.", ""]
    else:
        lines += _latency_text("Paper's bound (Corollary 1; one of four active sets)", problem, paper) + [""]
    term = "x_l + 1" if p == 2 else f"{p - 1} x_l + 1"
    lines += _latency_text(f"Sharp bound (prod_l ({term}) + 1; the k widest layers active, water-filled)",
                           problem, latency_report(problem, "sharp"))
    return "\n".join(lines)


def _latency_text(title: str, problem: LatencyProblem, rep: dict) -> list[str]:
    widths, budget = problem.widths, problem.budget
    opt: LatencyOptimum = rep["optimum"]
    best = {plan.layers for plan in opt.plans}
    lines = [title, f"  {'active layers':<22}{'ReLUs affordable':>18}  {'capacity bound':>24}"]
    for plan in rep["plans"]:
        label = _layer_list(plan.layers) if opt.objective == "paper" else str(plan.active)
        mark = "   <- optimum" if plan.layers in best else ""
        lines.append(f"  {label:<22}{plan.relu_budget:>18,}  {_num(plan.value):>24}{mark}")
    first = opt.plans[0]
    lines += _layer_rows(widths, [Fraction(x, d) for x, d in zip(first.retained, widths)], first.retained)
    lines.append(_ties(opt))
    lines.append(f"  latency at the optimum: {_exact_num(first.latency)} of {_exact_num(budget)}; capacity "
                 f"bound {_num(opt.integer_value)}")
    relaxed = opt.continuous[0]
    lines.append(f"  relaxation (real counts; layers stay whole): ({', '.join(_exact_num(x) for x in relaxed.retained)}),"
                 f" bound {_num(relaxed.value)}")
    lines += _comparison_text(rep, budget)
    return lines


def _comparison_text(rep: dict, budget: Exact) -> list[str]:
    lines = []
    for same in rep["same_total"]:
        kept = ", ".join("(" + ", ".join(f"{v:,}" for v in a) + ")" for a in same.retained)
        if same.same:
            lines.append(f"  the ReLU-budget optimum for the same {same.total:,} ReLUs is the same allocation")
        else:
            worst = max(same.latency)
            verdict = (f"over the budget by {_exact_num(worst - budget)}" if worst > budget
                       else "within the budget, but a different allocation")
            lines.append(f"  the ReLU-budget optimum for the same {same.total:,} ReLUs, {kept}, costs "
                         f"{_exact_num(worst)}: {verdict}")
    proxy = rep["proxy"]
    lines.append(f"  ReLU-count proxy (the largest ReLU budget whose optimum fits): {proxy.relu_budget:,} ReLUs, "
                 f"({', '.join(f'{v:,}' for v in proxy.retained)}), capacity bound {_num(proxy.value)}")
    if rep["threshold"] is not None:
        th, ratio = rep["threshold"]
        verdict = "emptying the narrower layer pays" if th.reached(ratio) else "both layers stay"
        lines.append(f"  two layers: emptying one pays once rho/beta >= {th.approx():,.6g} ({th.regime}; real "
                     f"counts); here rho/beta = {_exact_num(ratio)}: {verdict}")
    return lines


def render_latency_json(problem: LatencyProblem) -> dict:
    """The machine-readable latency-budget report: exact numbers as strings, layers 1-based."""
    widths, budget, cost, p, _ = problem
    out: dict = {"widths": widths, "p": p, "latency_budget": exact_str(budget),
                 "cost": {"per_relu": exact_str(cost.per_relu), "per_layer": exact_str(cost.per_layer),
                          "linear": exact_str(cost.linear)}}
    for objective in ("paper", "sharp"):
        rep = latency_report(problem, objective)
        out[objective] = None if rep is None else _latency_json(rep)
    return out


def _plan_json(plan: LatencyPlan) -> dict:
    return {"active": plan.active, "layers": [i + 1 for i in plan.layers], "relu_budget": plan.relu_budget,
            "retained": list(plan.retained), "latency": exact_str(plan.latency), "capacity_bound": plan.value}


def _latency_json(rep: dict) -> dict:
    opt: LatencyOptimum = rep["optimum"]
    proxy: ReluProxy = rep["proxy"]
    out = {
        "integer_retained": [list(a) for a in opt.integer_retained],
        "integer_ties": opt.integer_ties,
        "integer_ties_listed_max": MAX_LISTED_TIES,
        "capacity_bound": opt.integer_value,
        "active_layers": [i + 1 for i in opt.active_layers],
        "always_active": [i + 1 for i in opt.always_active],
        "optima": [_plan_json(plan) for plan in opt.plans],
        "plans": [_plan_json(plan) for plan in rep["plans"]],
        "continuous": [{"active": c.active, "layers": [i + 1 for i in c.layers],
                        "relu_budget": exact_str(c.relu_budget), "retained": _exact_list(c.retained),
                        "level": None if c.level is None else exact_str(c.level),
                        "capacity_bound": exact_str(c.value)} for c in opt.continuous],
        "same_total": [{"total": s.total, "integer_retained": [list(a) for a in s.retained],
                        "latency": _exact_list(s.latency), "within_budget": s.fits, "same": s.same}
                       for s in rep["same_total"]],
        "relu_proxy": {"relu_budget": proxy.relu_budget, "retained": list(proxy.retained),
                       "latency": exact_str(proxy.latency), "capacity_bound": proxy.value},
    }
    if rep["threshold"] is not None:
        th, ratio = rep["threshold"]
        out["emptying_threshold"] = {"regime": th.regime, "rational": exact_str(th.rational),
                                     "surd": exact_str(th.surd), "radicand": exact_str(th.radicand),
                                     "approx": th.approx(), "ratio": exact_str(ratio), "reached": th.reached(ratio)}
    return out


def print_latency_report(problem: LatencyProblem) -> int:
    """Print the latency report (text or JSON); return 0."""
    with unlimited_digits():  # the sizes were bounded by check_size (via parse_problem)
        if problem.as_json:
            print(json.dumps(render_latency_json(problem), indent=2))
        else:
            print(render_latency_text(problem))
    return 0


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 output stopped early, 2 bad input)."""
    try:
        latency_problem = parse_latency_problem(argv)
        if latency_problem is not None:
            return print_latency_report(latency_problem)
        widths, budget, p, as_json = parse_problem(argv)
    except UsageError as exc:
        message = str(exc)
        raise UsageError(message if message.endswith("(see --help)") else f"{message} (see --help)")
    with unlimited_digits():  # the sizes were bounded by check_size
        if as_json:
            print(json.dumps(render_json(widths, budget, p), indent=2))
        else:
            print(render_text(widths, budget, p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
