"""c13: Lemma 1 per neuron: a kept neuron adds at most (p-1)(K+1) breakpoints to K."""

from __future__ import annotations

from itertools import product

import z3

from capacity.pieces import ACTIVATIONS, Layer, Network, layer_breakpoints
from capacity.witnesses import zigzag_network
from proofs.claims._networks import activation_p, layer_counts, neuron_breakpoints, sample
from proofs.framework import Evidence, claim
from proofs.z3tools import prove

#: Networks of the seeded sample checked against the bound (see _networks.sample).
SAMPLE = 150


def per_neuron_bound(p, k):
    """The claim: one kept neuron adds at most (p - 1)(K + 1) breakpoints to K."""
    return (p - 1) * (k + 1)


def crossings(lo_slot: int, hi_slot: int) -> int:
    """Thresholds strictly between two end values given by their slots.

    Slot 2i is "strictly between threshold i and i+1" (slot 0: below all, slot 2(p-1):
    above all); slot 2i+1 is "at threshold i+1". A monotone affine function crosses
    exactly the thresholds strictly between its end values.
    """
    low, high = sorted((lo_slot, hi_slot))
    return sum(1 for s in range(low + 1, high) if s % 2)


def hardtanh_tight() -> Network:
    """p = 3, K = 2: layer 1 = (t linear, hardtanh(t)); layer 2 = hardtanh(-t + 4 hardtanh(t)).

    The second pre-activation falls from +inf to -3 on t < -1, rises from -3 to 3 on
    [-1, 1] and falls to -inf on t > 1: it crosses both thresholds on all three pieces.
    """
    return Network((Layer(((1,), (1,)), (0, 0), (0, 1)), Layer(((-1, 4),), (0,), (1,))),
                   (1,), 0, activation="hardtanh")


@claim("c13", "Lemma 1 per neuron: on a line whose earlier layers break at K points, a kept neuron "
       "adds at most (p-1)(K+1) breakpoints (for all real weights; attained), so layer l+1 adds at "
       "most (p-1) x_{l+1} (K_l+1)", paper="holds", page="c13_lemma1_per_neuron.md")
def check(bound=per_neuron_bound) -> Evidence:
    """z3 for the affine crossing fact, enumeration of endpoint patterns, exact counts."""
    ev = Evidence()
    a, c, t, lo, hi, theta = z3.Reals("a c t lo hi theta")
    z = lambda s: a * s + c  # noqa: E731
    between = z3.Or(z3.And(z(lo) < theta, theta < z(hi)), z3.And(z(hi) < theta, theta < z(lo)))
    exact_once = prove([a != 0, lo < hi],
                       z3.Exists([t], z3.And(lo < t, t < hi, z(t) == theta)) == between)
    ev.check("z3", "for all reals a != 0, c, lo < hi, theta: z = a t + c equals theta at some t in "
             "(lo, hi) iff theta lies strictly between z(lo) and z(hi)", exact_once.proved,
             exact_once.status + " " + exact_once.model)
    t2 = z3.Real("t2")
    once = prove([a != 0, z(t) == theta, z(t2) == theta], t == t2)
    ev.check("z3", "... and at most once; a constant pre-activation (a = 0) crosses nothing",
             once.proved, once.status)
    worst = {}
    for p in range(2, 7):
        slots = range(2 * p - 1)  # an end value's position among the p - 1 thresholds
        worst[p] = max(crossings(s1, s2) for s1, s2 in product(slots, repeat=2))
    ev.check("exhaustive", "every pair of end positions of an affine piece among the p - 1 thresholds "
             f"(p = 2..6; the ends of a ray sit below or above all): at most p - 1 crossings, so per "
             f"interval at most p - 1 and over the K + 1 intervals at most (p-1)(K+1); worst cases {worst}",
             all(w <= bound(p, 0) for p, w in worst.items()))
    _check_networks(ev, bound)
    _check_tight(ev, bound)
    return ev


def _check_networks(ev: Evidence, bound) -> None:
    """Every kept neuron of the sample, counted exactly, respects the bound."""
    bad, neurons = [], 0
    for n, net in enumerate(sample()[:SAMPLE]):
        p, counts = activation_p(net), layer_counts(net)
        for index, layer in enumerate(net.layers):
            for k, kept in enumerate(layer.mask):
                if kept:
                    neurons += 1
                    if neuron_breakpoints(net, index, k) > bound(p, counts[index]):
                        bad.append((n, index, k))
            if counts[index + 1] - counts[index] > sum(layer.mask) * bound(p, counts[index]):
                bad.append((n, index, "layer"))
    ev.check("exact", f"{SAMPLE} seeded random networks (depth <= 3, widths <= 4, ReLU, hard-tanh, leaky "
             f"ReLU, duplicate / scaled / negated / pruned neurons), {neurons} kept neurons: each adds at "
             "most the bound to the breakpoints of the layers before it (exact counter), and each layer "
             "at most x times it", not bad, f"violations: {bad[:3]}")


def _check_tight(ev: Evidence, bound) -> None:
    """The bound is reached: zigzag networks (ReLU) and a hard-tanh network (p = 3)."""
    rows = []
    for retained in ((1, 1), (2, 3), (3, 2), (1, 2, 2)):
        net = zigzag_network(retained)
        counts = layer_counts(net)
        for index, layer in enumerate(net.layers):
            kept = [k for k, m in enumerate(layer.mask) if m]
            rows.append(all(neuron_breakpoints(net, index, k) == bound(2, counts[index]) for k in kept)
                        and counts[index + 1] - counts[index] == len(kept) * bound(2, counts[index]))
    tanh = hardtanh_tight()
    k1 = len(layer_breakpoints(tanh)[0])
    rows.append(k1 == 2 and neuron_breakpoints(tanh, 1, 0) == bound(ACTIVATIONS["hardtanh"].p, k1))
    ev.check("exact", "attained: in the zigzag networks with retained (1, 1), (2, 3), (3, 2), (1, 2, 2) "
             "every kept neuron adds exactly (K+1) breakpoints (ReLU), and hardtanh(-t + 4 hardtanh(t)) "
             "adds 2 (K+1) = 6 (p = 3, K = 2): a smaller per-neuron bound is false",
             all(rows), f"{rows}")
