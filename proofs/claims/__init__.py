"""The claims, one module each; importing this package registers them all, in order."""

from importlib import import_module

#: Claim modules in report order.
MODULES = (
    "c01_corollary1_reduces_to_theorem1",
    "c02_relu_forms",
    "c03_corollary2_is_theorem1_pruned",
    "c04_linearization_pruning_gap",
    "c05_appendix_a1_piece_sum",
    "c06_theorem2_relu",
    "c07_theorem2_general_p",
    "c08_inverse_proportionality",
    "c09_worked_example",
    "c10_sharp_bound",
    "c11_water_filling",
    "c12_sharp_linearization_vs_pruning",
    "c13_lemma1_per_neuron",
    "c14_sharp_bound_networks",
    "c15_capacity_pieces",
    "c16_clamped_optimum",
    "c17_theorem1_networks",
    "c18_corollary2_networks",
    "c19_capacity_comparisons",
    "c20_latency_optimum",
    "c21_emptying_threshold",
)

for _name in MODULES:
    import_module(f"{__name__}.{_name}")
