"""Memorization-capacity bounds of partially linearized ReLU networks, exactly.

The bounds of Section 5 of the SNL paper (Theorem 1, Corollaries 1-2), the optimal
per-layer retention for a ReLU budget (Theorem 2, corrected for the box and for integer
counts), and the sharper bound prod_l((p-1) x_l + 1) on the number of linear pieces along
a line. Everything here is exact (int / Fraction) and imports no heavy library.

Example:
    >>> from capacity import paper_optimum
    >>> paper_optimum(50000, 5000, 10000).alpha
    (Fraction(14999, 100000), Fraction(5001, 10000))
"""

from capacity.bounds import (
    corollary1,
    corollary1_counts,
    corollary1_relu,
    corollary2,
    corollary2_counts,
    corollary2_relu,
    sharp_capacity,
    sharp_pieces,
    theorem1,
    theorem1_relu,
)
from capacity.exact import as_exact, exact_str
from capacity.optimum import (
    PaperOptimum,
    SharpOptimum,
    closed_form,
    closed_form_feasible,
    paper_optimum,
    sharp_optimum,
)

__all__ = [
    "PaperOptimum",
    "SharpOptimum",
    "as_exact",
    "closed_form",
    "closed_form_feasible",
    "corollary1",
    "corollary1_counts",
    "corollary1_relu",
    "corollary2",
    "corollary2_counts",
    "corollary2_relu",
    "exact_str",
    "paper_optimum",
    "sharp_capacity",
    "sharp_optimum",
    "sharp_pieces",
    "theorem1",
    "theorem1_relu",
]
