"""c20: under a latency budget the sharp optimum keeps the k widest layers for the best k."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations, product

import z3

from capacity import bounds, latency
from proofs.framework import Evidence, claim
from proofs.z3tools import prove

#: Costs (beta, rho) of the exhaustive grid; the budget T - linear runs over BUDGETS
#: (fewer for three layers), with linear = 1/2.
COSTS = ((1, 0), (1, 2), (Fraction(1, 2), 3), (2, Fraction(1, 2)), (0, 2))
BUDGETS = (0, Fraction(1, 2), 1, 2, 3, 6, 7, 11)  # 6, 7, 11: optima tie across k
BUDGETS_3 = (0, 1, 2, 3, 6, 11)
LINEAR = Fraction(1, 2)
#: Widths for the structure lemma: every tuple with these many layers and widths up to the bound.
SHAPES = ((1, 8), (2, 5), (3, 3), (4, 3))
#: Widths for the optima: one layer <= 6 and two layers <= 4 (p = 2, 3), three layers <= 3 (p = 2).
OPTIMA_SHAPES = ((1, 6), (2, 4), (3, 3))


def _mn(a, b):
    return z3.If(a <= b, a, b)


def _mx(a, b):
    return z3.If(a >= b, a, b)


@claim("c20", "Latency budget linear + sum_l (beta x_l + rho [x_l > 0]) <= T: the sharp bound's "
       "optimum keeps the k widest layers active for the best k (of L + 1) and water-fills "
       "inside them; every tie is a placement of the same counts; Corollary 1's optimum is one "
       "of four active sets", paper="new", page="c20_latency_optimum.md")
def check(optimum_fn=latency.latency_sharp_optimum, paper_fn=latency.latency_paper_optimum,
          sharp_capacity=bounds.sharp_capacity) -> Evidence:
    """Brute force for the structure and the optima; z3 for the two-layer relaxation."""
    ev = Evidence()
    widest, counter = _widest_is_best(sharp_capacity)
    ev.check("exhaustive", "for every width tuple (1 layer <= 8, 2 layers <= 5, 3 and 4 layers "
             "<= 3), every k and every ReLU budget b: the best allocation on any k layers with at most "
             "b ReLUs is no better than the best on the k widest (p in 2, 3)", not widest,
             f"{len(widest)} counterexamples, first: {widest[:3]}")
    ev.check("exhaustive", "but the k widest are not the only optimal k layers, even up to layers of "
             f"equal width: e.g. widths {counter and counter[0]}, k = {counter and counter[1]}, "
             f"b = {counter and counter[2]}: also the layers {counter and counter[3]} (0-based)",
             counter is not None)
    bad, cases, across = _against_brute_force(optimum_fn, paper_fn, sharp_capacity)
    ev.check("exhaustive", f"{cases} problems, {across} of them with optima of different numbers of "
             "active layers tying (one layer of width <= 6 and two layers <= 4 with p = 2, 3; "
             f"three layers <= 3 with p = 2; (beta, rho) in {_show(COSTS)}; T - linear in "
             f"{_show_list(BUDGETS)} (three layers: {_show_list(BUDGETS_3)}); linear = 1/2): latency_sharp_optimum's "
             "integer optima (every tie, their count, the value, the layers active in some / every "
             "optimum) equal enumeration of every allocation that fits; for two layers so does "
             "latency_paper_optimum; the relaxation's value bounds every integer one",
             not bad and across > 0, f"{len(bad)} mismatches, first: {bad[:3]}")
    rule, attained = _two_layer_relaxation(sharp_capacity)
    ev.check("z3", "for all reals D >= d >= 1, s = p - 1 >= 1, tau = (T - linear)/beta >= 0, "
             "r = rho/beta >= 0 and every (x, y) in [0, D] x [0, d] with x + y + r([x > 0] + [y > 0]) "
             "<= tau: sharp(x, y) <= max(sharp(nothing), sharp(one-layer plan), sharp(two-layer plan)), "
             "the plans being min(tau - r, D) ReLUs in the wide layer (if tau > r) and min(tau - 2r, D + d) "
             "water-filled into both (if tau > 2r)",
             rule.proved, rule.status + " " + rule.model)
    ev.check("z3", "and each plan fits the budget (for the same quantifiers): the rule's value is "
             "attained", attained.proved, attained.status + " " + attained.model)
    return ev


def _show(costs) -> str:
    return ", ".join(f"({b}, {r})" for b, r in costs)


def _show_list(values) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"


def _widths(shapes=SHAPES):
    for layers, top in shapes:
        yield from product(range(1, top + 1), repeat=layers)


def _widest_is_best(sharp_capacity):
    """Compare, per (k, b), the best over all allocations with at most k active layers against
    the best over allocations inside the k widest layers. Also find a tie with other layers."""
    bad, counter = [], None
    for widths, p in product(_widths(), (2, 3)):
        order = sorted(range(len(widths)), key=lambda i: -widths[i])
        total = sum(widths)
        any_k = [[0] * (total + 1) for _ in range(len(widths) + 1)]
        top_k = [[0] * (total + 1) for _ in range(len(widths) + 1)]
        for alloc in product(*(range(d + 1) for d in widths)):
            support = {i for i, x in enumerate(alloc) if x}
            value, spent = sharp_capacity(alloc, p), sum(alloc)
            for k in range(len(support), len(widths) + 1):
                any_k[k][spent] = max(any_k[k][spent], value)
                if support <= set(order[:k]):
                    top_k[k][spent] = max(top_k[k][spent], value)
        for k in range(len(widths) + 1):
            for b in range(1, total + 1):  # best with at most b ReLUs: running maxima
                for table in (any_k, top_k):
                    table[k][b] = max(table[k][b], table[k][b - 1])
                if any_k[k][b] != top_k[k][b]:
                    bad.append((widths, k, b, p))
        if counter is None and p == 2:
            counter = _other_optimal_set(widths, order, sharp_capacity)
    return bad, counter


def _other_optimal_set(widths, order, sharp_capacity):
    """A k-set other than the k widest that reaches the same best value, if any (k < L)."""
    for k in range(1, len(widths)):
        for b in range(k, sum(sorted(widths)[-k:]) + 1):
            best = {}
            for chosen in combinations(range(len(widths)), k):
                allocs = product(*(range(min(widths[i], b) + 1) for i in chosen))
                best[chosen] = max(sharp_capacity(a) for a in allocs if sum(a) <= b)
            top = tuple(sorted(order[:k]))
            profile = sorted(widths[i] for i in top)
            others = [c for c in best if best[c] == best[top] and sorted(widths[i] for i in c) != profile]
            if others:  # not just a layer of the same width swapped in
                return widths, k, b, others[0]
    return None


def _against_brute_force(optimum_fn, paper_fn, sharp_capacity):
    """Every problem of the grid against enumeration; each width tuple's allocations are
    enumerated once (value, ReLUs, active layers) and filtered per cost and budget."""
    bad, cases, across = [], 0, 0
    for widths, p in product(_widths(OPTIMA_SHAPES), (2, 3)):
        if (len(widths) != 2 and p == 3) or len(bad) >= 3:  # three mismatches say enough
            continue
        table = [(a, sum(a), sum(1 for x in a if x), sharp_capacity(a, p),
                  bounds.corollary1_counts(a[0], a[1], *widths, p) if len(widths) == 2 else None)
                 for a in product(*(range(d + 1) for d in widths))]
        for (beta, rho), spare in product(COSTS, BUDGETS_3 if len(widths) == 3 else BUDGETS):
            cost, budget = latency.cost_model(beta, rho, LINEAR), spare + LINEAR
            fits = [row for row in table if beta * row[1] + rho * row[2] <= spare]
            cases += 1
            winners, best = _argmax(fits, 3)
            across += len({sum(1 for x in a if x) for a in winners}) > 1
            if not _same(optimum_fn(list(widths), budget, cost, p), winners, best, len(widths)):
                bad.append(("sharp", widths, budget, cost, p))
            if len(widths) == 2 and not _same(paper_fn(*widths, budget, cost, p), *_argmax(fits, 4), 2):
                bad.append(("paper", widths, budget, cost, p))
    return bad, cases, across


def _argmax(rows, column):
    best = max(row[column] for row in rows)
    return sorted(row[0] for row in rows if row[column] == best), best


def _same(opt, winners, best, layers) -> bool:
    some = tuple(i for i in range(layers) if any(a[i] for a in winners))
    every = tuple(i for i in range(layers) if all(a[i] for a in winners))
    return (opt.integer_retained == winners and opt.integer_ties == len(winners)
            and opt.integer_value == best and opt.active_layers == some and opt.always_active == every
            and all(c.value >= best for c in opt.continuous))


def _two_layer_relaxation(sharp_capacity):
    """z3: the rule max(nothing, one layer, two layers water-filled) is the real optimum."""
    tau, r, wide, narrow, s, x, y = z3.Reals("tau r D d s x y")
    premises = [wide >= narrow, narrow >= 1, s >= 1, r >= 0, tau >= 0]
    one = _mn(tau - r, wide)
    both = _mn(tau - 2 * r, wide + narrow)
    y_fill = _mn(both / 2, narrow)
    plans = [z3.If(tau - r > 0, sharp_capacity([one], s + 1), 2),
             z3.If(tau - 2 * r > 0, sharp_capacity([both - y_fill, y_fill], s + 1), 2)]
    active = z3.If(x > 0, 1, 0) + z3.If(y > 0, 1, 0)
    feasible = [0 <= x, x <= wide, 0 <= y, y <= narrow, x + y + r * active <= tau]
    rule = prove(premises + feasible, sharp_capacity([x, y], s + 1) <= _mx(*plans))
    fits = z3.And(z3.Implies(tau - r > 0, z3.And(one + r <= tau, 0 < one, one <= wide)),
                  z3.Implies(tau - 2 * r > 0, z3.And(both + 2 * r <= tau, 0 < y_fill, y_fill <= narrow,
                                                     0 < both - y_fill, both - y_fill <= wide)))
    return rule, prove(premises, fits)
