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
from collections.abc import Sequence
from math import comb, floor, log10

from capacity.cli import CommandParser, UsageError, command, parse_integer
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


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 output stopped early, 2 bad input)."""
    try:
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
