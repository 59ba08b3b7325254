"""Speed of capacity.pieces: the exact path on property-test networks, the fast path on wide ones.

- exact path: networks per second on the networks the property tests draw
  (``networks(activations=ALL_ACTIVATIONS, prune=True)``: depth 1-3, widths 1-6, input 1-3,
  masks, pruning, degenerate neurons; a fixed hypothesis seed), and on the largest of those
  shapes alone (widths (6, 6, 6), input 3).
- fast path: seconds to count one random network (He-initialised float64 weights, converted
  exactly to Fractions as ``from_torch`` does, input 1) of widths (256, 256) and
  (128, 128, 128, 128), and that time divided by the number of breakpoints it finds.

The machine may be busy: each figure is the best of ``--repeats`` runs (median also shown).
Targets: fast path (256, 256) under 0.2 s; exact path at least 200 networks/s.
Usage: python benchmarks/pieces.py [--repeats N] [--networks N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings

from capacity.pieces import Layer, Network, count_pieces
from capacity.strategies import ALL_ACTIVATIONS, networks

FAST_TARGET_S = 0.2
EXACT_TARGET_PER_S = 200


def drawn_networks(strategy, count: int) -> list[Network]:
    """``count`` networks drawn from a strategy with a fixed seed (generation only)."""
    drawn: list[Network] = []

    @seed(0)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(net):
        drawn.append(net)

    draw()
    return drawn


def random_network(widths, rng: np.random.Generator) -> Network:
    """He-initialised ReLU network on the line t (input width 1), weights as exact Fractions."""
    layers, fan = [], 1
    for width in widths:
        w = rng.standard_normal((width, fan)) * np.sqrt(2.0 / fan)
        b = rng.standard_normal(width) * 0.1
        layers.append(Layer(tuple(tuple(Fraction(float(v)) for v in row) for row in w),
                            tuple(Fraction(float(v)) for v in b), (1,) * width))
        fan = width
    out = tuple(Fraction(float(v)) for v in rng.standard_normal(fan))
    return Network(tuple(layers), out, Fraction(0), (Fraction(0),), (Fraction(1),))


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def exact_rate(nets: list[Network], repeats: int) -> dict:
    times = timed(lambda: [count_pieces(net) for net in nets], repeats)
    return {"networks": len(nets), "best_per_s": len(nets) / min(times),
            "median_per_s": len(nets) / statistics.median(times)}


def fast_time(widths, repeats: int) -> dict:
    net = random_network(widths, np.random.default_rng(0))
    count = count_pieces(net, exact=False)
    times = timed(lambda: count_pieces(net, exact=False), repeats)
    best = min(times)
    return {"widths": list(widths), "pieces": count.pieces, "best_s": best,
            "median_s": statistics.median(times),
            "best_us_per_breakpoint": 1e6 * best / max(1, len(count.breakpoints))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure (best and median reported)")
    parser.add_argument("--networks", type=int, default=500, help="property-test networks to count")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    mixed = drawn_networks(networks(activations=ALL_ACTIVATIONS, prune=True), args.networks)
    largest = drawn_networks(networks(widths=(6, 6, 6), max_input=3, activations=ALL_ACTIVATIONS,
                                      prune=True), args.networks // 2)
    report = {
        "exact_property_tests": exact_rate(mixed, args.repeats),
        "exact_widths_6_6_6": exact_rate(largest, args.repeats),
        "fast_256_256": fast_time((256, 256), args.repeats),
        "fast_4x128": fast_time((128,) * 4, args.repeats),
    }
    report["targets_met"] = {
        "fast_256_256_under_0.2s": report["fast_256_256"]["best_s"] < FAST_TARGET_S,
        "exact_at_least_200_per_s": min(report["exact_property_tests"]["best_per_s"],
                                        report["exact_widths_6_6_6"]["best_per_s"]) >= EXACT_TARGET_PER_S,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key in ("exact_property_tests", "exact_widths_6_6_6"):
        row = report[key]
        print(f"{key:<24} {row['networks']:>5} networks   best {row['best_per_s']:8.0f}/s   "
              f"median {row['median_per_s']:8.0f}/s")
    for key in ("fast_256_256", "fast_4x128"):
        row = report[key]
        print(f"{key:<24} {row['pieces']:>5} pieces     best {row['best_s'] * 1000:8.1f} ms  "
              f"median {row['median_s'] * 1000:8.1f} ms   {row['best_us_per_breakpoint']:.0f} us/breakpoint")
    print("targets met:", ", ".join(f"{k}={v}" for k, v in report["targets_met"].items()))


if __name__ == "__main__":
    main()
