"""c09: every number of the worked example d1 = 50000, d2 = 5000, B = 10000, and its erratum."""

from __future__ import annotations

from fractions import Fraction

from capacity import bounds, exhaustive, optimum
from proofs.paper import WORKED_EXAMPLE as W
from proofs.framework import Evidence, claim


@claim("c09", "Worked example d1 = 50000, d2 = 5000, B = 10000: a1 = 14999/100000, a2 = 5001/10000; "
       "layer 1 keeps 14999/2, layer 2 keeps 5001/2; integer optima (7499, 2501), (7500, 2500) tie",
       paper="erratum", page="c09_worked_example.md")
def check(optimum_fn=optimum.paper_optimum) -> Evidence:
    """Exact arithmetic through capacity.optimum; enumeration of all 5001 integer allocations."""
    ev = Evidence()
    d1, d2, b = W["d1"], W["d2"], W["B"]
    opt = optimum_fn(d1, d2, b)
    ev.check("exact", f"B = {b} > d2 = {d2} and the closed form is in the box (interior optimum)",
             b > d2 and opt.interior and optimum.closed_form_feasible(d1, d2, b))
    ev.check("exact", f"alpha = {tuple(map(str, opt.alpha))} is the paper's (14999/100000, 5001/10000)",
             opt.alpha == (W["alpha1"], W["alpha2"]))
    ev.check("exact", "rounded to two decimals these are the printed 0.15 and 0.5",
             round(opt.alpha[0], 2) == W["alpha1_approx"] and round(opt.alpha[1], 2) == W["alpha2_approx"])
    x, y = opt.retained
    ev.check("exact", f"retained counts x = a1 d1 = {x}, y = a2 d2 = {y}; linearized "
             f"{d1 - x} in layer 1 and {d2 - y} in layer 2",
             (x, y) == (Fraction(14999, 2), Fraction(5001, 2)))
    winners, best = exhaustive.paper_integer_optima(d1, d2, b)
    ev.check("exhaustive", f"enumerating all integer allocations x + y = {b}: the maximisers of "
             f"Corollary 1 are {winners} (a tie), bound {best}; capacity.optimum agrees",
             winners == [(7499, 2501), (7500, 2500)] == opt.integer_retained and best == opt.integer_value)
    ev.check("exact", f"continuous optimum value {opt.value} = Corollary 1 at (14999/2, 5001/2); "
             "integer optima lose exactly 1/4",
             opt.value == bounds.corollary1_counts(x, y, d1, d2) and opt.value - best == Fraction(1, 4))
    ev.check("exact", f"'linearizing {W['linearized_layer1']:,} neurons in the first layer' matches: "
             f"layer 1 linearizes {d1 - x} (42500 or 42501 at the integer optima)",
             {d1 - xi for xi, _ in winners} == {42500, 42501})
    sentence = (d1 - W["linearized_layer1"], W["relu_layer2"])
    ev.check("exact", f"'only {W['relu_layer2']:,} neurons with ReLU in the second layer' is wrong: "
             f"it exceeds the {d2} neurons of layer 2, and with layer 1 keeping "
             f"{sentence[0]} it would spend {sum(sentence)} != B ReLUs; 7,500 is what layer 1 keeps",
             W["relu_layer2"] > d2 and sum(sentence) != b and (7500, 2500) in winners)
    ev.note("Erratum for the worked example: the optimum keeps 14999/2 = 7499.5 ReLUs in the first "
            "layer (linearizing 42500.5 of 50,000) and 5001/2 = 2500.5 in the second (linearizing "
            "2499.5 of 5,000). In integers, keeping (7,500, 2,500) or (7,499, 2,501) ties, both with "
            "Corollary 1 bound 56,252,502. The sentence should read: 'linearizing 42,500 neurons in "
            "the first layer (keeping 7,500 ReLUs) and keeping 2,500 ReLUs in the second layer "
            "(linearizing 2,500)'. '7,500 neurons with ReLU in the second layer' is impossible: "
            "that layer has 5,000 neurons.")
    return ev
