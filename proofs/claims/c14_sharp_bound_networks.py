"""c14: the sharp bound as a statement about networks, checked on networks."""

from __future__ import annotations

from itertools import product

import z3

from capacity import bounds
from capacity.pieces import count_pieces, layer_breakpoints, restrict
from capacity.witnesses import zigzag_network
from proofs.claims._networks import activation_p, layer_counts, masked_counts, sample
from proofs.claims.c13_lemma1_per_neuron import per_neuron_bound
from proofs.framework import Evidence, claim
from proofs.z3tools import prove

#: Networks of the seeded sample (see _networks.sample).
SAMPLE = 300


@claim("c14", "For every network (any depth, widths, real weights, masks, pruning, activation with p "
       "pieces) and every line: at most prod_l ((p-1) x_l + 1) pieces, x_l the kept, unpruned "
       "activations of layer l; attained by zigzag networks", paper="new",
       page="c14_sharp_bound_networks.md")
def check(sharp_pieces=bounds.sharp_pieces, neuron_bound=per_neuron_bound) -> Evidence:
    """z3 for the induction from Lemma 1 per neuron, exact counts on networks, zigzag witnesses."""
    ev = Evidence()
    p, k, x = z3.Reals("p K x")
    step = prove([p >= 2, k >= 0, x >= 0],
                 k + x * neuron_bound(p, k) + 1 <= (k + 1) * sharp_pieces([x], p))
    ev.check("z3", "for all reals p >= 2, K, x >= 0: a layer of x kept neurons, each adding at most "
             "(p-1)(K+1) breakpoints (c13), keeps K' + 1 <= (K + 1)((p-1) x + 1); by induction over "
             "the layers from K_0 = 0, K_L + 1 <= prod_l ((p-1) x_l + 1) for every depth L",
             step.proved, step.status + " " + step.model)
    bad_layers, bad_output, bad_bound = [], [], []
    for n, net in enumerate(sample()):
        p_, counts = activation_p(net), layer_counts(net)
        for depth in range(1, len(net.layers) + 1):
            if counts[depth] + 1 > sharp_pieces(masked_counts(net)[:depth], p_):
                bad_layers.append(n)
        if not set(restrict(net).breakpoints) <= set(layer_breakpoints(net)[-1]):
            bad_output.append(n)
        if count_pieces(net).pieces > sharp_pieces(net.retained(), p_):
            bad_bound.append(n)
    ev.check("exact", f"{SAMPLE} seeded random networks (depth <= 3, widths <= 4, all three activations, "
             "masks, duplicate / scaled / negated / pruned neurons): at every depth l, |K_l| + 1 <= "
             "prod over layers <= l of ((p-1) x + 1), x counted by the masks", not bad_layers,
             f"violations: {bad_layers[:3]}")
    ev.check("exact", "the output's breakpoints are among the last layer's K_L (the output is affine in "
             "the last layer): pieces <= |K_L| + 1", not bad_output, f"violations: {bad_output[:3]}")
    ev.check("exact", "so pieces <= prod_l ((p-1) x_l + 1) with x_l = Network.retained() (pruned "
             "neurons, by weight row or by outgoing weights, do not count)", not bad_bound,
             f"violations: {bad_bound[:3]}")
    short = [r for depth in (1, 2, 3) for r in product(range(4 - depth + 1), repeat=depth)
             if count_pieces(zigzag_network(r)).pieces != sharp_pieces(r)]
    ev.check("exact", "attained: the zigzag network of every retained vector of 1-3 layers (counts <= 3, "
             "2, 1 per layer) has exactly prod_l (x_l + 1) pieces (ReLU)", not short, f"short: {short[:3]}")
    return ev
