"""The paper's own statements that the claims test, quoted once as expressions.

These are the objects under test, not formulas the package uses: the bounds themselves
come from ``capacity.bounds`` (through ``capacity.symbolic``). Section and equation
references are to "Selective Network Linearization for Efficient Private Inference"
(ICML 2022), Section 5 and Appendix A.
"""

from __future__ import annotations

from fractions import Fraction

import sympy

from capacity.symbolic import S


def theorem2_alpha() -> tuple[sympy.Expr, sympy.Expr]:
    """Theorem 2: a1 = (B + d2 - 1) / (2 d1), a2 = (B - d2 + 1) / (2 d2)."""
    return (S.B + S.d2 - 1) / (2 * S.d1), (S.B - S.d2 + 1) / (2 * S.d2)


def a3_objective() -> sympy.Expr:
    """Appendix A.3's objective: a1 a2 d1 d2 + a1 d1 d2 + a2 d2 + 1."""
    return S.a1 * S.a2 * S.d1 * S.d2 + S.a1 * S.d1 * S.d2 + S.a2 * S.d2 + 1


def a3_hessian() -> sympy.Matrix:
    """Appendix A.3's matrix H, whose determinant the paper says is positive."""
    d1, d2 = S.d1, S.d2
    return sympy.Matrix([[0, d1, d2], [d1, 0, d1 * d2], [d2, d1 * d2, 0]])


def a1_piece_sum(first_index: int = 1) -> sympy.Expr:
    """Appendix A.1's sum of pieces over the second hidden layer, as printed.

    a1 d1 p(p-1) + p + sum_{i=first}^{a2 d2} (a1 d1 p(p-1) + p - 1)
                     + sum_{i=1}^{(1-a2) d2} (a1 d1 (p-1) + 1 - 1).
    The paper prints ``first_index = 1``.
    """
    a1, a2, d1, d2, p = S.a1, S.a2, S.d1, S.d2, S.p
    i = sympy.Symbol("i", integer=True)
    kept = a1 * d1 * p * (p - 1) + p
    linear = a1 * d1 * (p - 1) + 1
    return (
        kept
        + sympy.summation(kept - 1, (i, first_index, a2 * d2))
        + sympy.summation(linear - 1, (i, 1, (1 - a2) * d2))
    )


def a1_piece_closed_form() -> sympy.Expr:
    """Appendix A.1's closed form of that sum (pieces; capacity is one more)."""
    a1, a2, d1, d2, p = S.a1, S.a2, S.d1, S.d2, S.p
    return a1 * a2 * d1 * d2 * p * (p - 1) + a2 * d2 * (p - 1) + a1 * (1 - a2) * d1 * d2 * (p - 1) + 1


def a1_neuron_pieces() -> dict[str, sympy.Expr]:
    """Appendix A.1's per-neuron piece counts in layer 2."""
    a1, d1, p = S.a1, S.d1, S.p
    return {
        "pre-activation z2": a1 * d1 * (p - 1) + 1,
        "kept neuron sigma(z2)": a1 * d1 * p * (p - 1) + p,
        "linear neuron z2": a1 * d1 * (p - 1) + 1,
    }


#: Section 5's worked example, every number as printed.
WORKED_EXAMPLE = {
    "d1": 50000,
    "d2": 5000,
    "B": 10000,
    "alpha1": Fraction(14999, 100000),
    "alpha2": Fraction(5001, 10000),
    "alpha1_approx": Fraction(15, 100),
    "alpha2_approx": Fraction(5, 10),
    "linearized_layer1": 42500,
    "relu_layer2": 7500,
}

#: The sentence the worked example ends with.
WORKED_SENTENCE = (
    "linearizing 42,500 neurons in the first layer, and only 7,500 neurons with ReLU in "
    "the second layer gives the best memorization capacity among all possible choices"
)
