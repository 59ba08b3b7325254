"""A mutation score per core module from a seeded random sample of its mutants (``make mutate``).

A full mutmut run of the six core modules (about 5,500 mutants) takes several hours on a
2-core machine, mostly in ``snl_train/trainer.py``, whose tests train small networks. This
script draws, with a fixed seed, the same ``--per-module`` mutants of each module every time,
runs exactly those (``mutmut run NAME ...``; mutmut caches results in ``mutants/``), and
prints each module's sampled score with its 95 % Wilson interval. ``make mutate-full`` runs
every mutant instead.

Usage (the first run generates the mutants and maps tests to functions, about 2 minutes)::

    python tools/mutate_sample.py --per-module 100 --seed 20261127

Exit status: 0 when every module's sampled score is at least ``--target`` (90 %), 1 otherwise.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
from collections import defaultdict

from capacity.cli import CommandParser, UsageError, command, integer, number

PROG = "tools/mutate_sample.py"
MODULES = ("capacity.bounds", "capacity.optimum", "capacity.pieces", "snl_train.gates",
           "snl_train.trainer", "snl_train.accounting")
KILLED = {"killed", "timeout", "segfault"}  # the tests stopped the mutant
SURVIVED = {"survived", "no tests"}  # no test noticed it


def wilson(killed: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion ``killed / total``."""
    if total == 0:
        return 0.0, 1.0
    p = killed / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    scale = 1 + z * z / total
    return (centre - spread) / scale, (centre + spread) / scale


def parse_results(text: str) -> dict[str, str]:
    """``mutmut results --all true`` output -> {mutant name: status}."""
    statuses = {}
    for line in text.splitlines():
        name, sep, status = line.strip().partition(": ")
        if sep and ".x" in name and "__mutmut_" in name:
            statuses[name] = status.strip()
    return statuses


def module_of(name: str) -> str:
    """``capacity.optimum.x__tidy__mutmut_3`` -> ``capacity.optimum`` (mutmut prefixes the
    function's mangled name, methods included, with ``x``; no core module name has ``.x``)."""
    return name.split(".x", 1)[0]


def draw(names: list[str], per_module: int, seed: int, modules=MODULES) -> dict[str, list[str]]:
    """The same sample for the same mutants and seed: ``per_module`` names of each module."""
    groups = defaultdict(list)
    for name in sorted(names):
        groups[module_of(name)].append(name)
    return {m: random.Random(f"{seed}:{m}").sample(groups[m], min(per_module, len(groups[m])))
            for m in modules if groups[m]}


def results(mutmut: str) -> dict[str, str]:
    """Every generated mutant's status, from ``mutmut results --all true``."""
    try:
        out = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True)
    except OSError as exc:
        raise UsageError(f"cannot run {mutmut!r}: {exc.strerror} (make mutmut installs it)") from None
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or ["no message"]
        raise UsageError(f"{mutmut} results failed: {lines[-1]}")
    return parse_results(out.stdout)


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(PROG, failure="a module scored below --target",
                           description=__doc__.split("\n")[0])
    parser.add_argument("--per-module", type=integer(1), default=100, help="mutants drawn per module (default 100)")
    parser.add_argument("--seed", type=integer(), default=20261127, help="the sample's seed (default 20261127)")
    parser.add_argument("--target", type=number(0, 1), default=0.90, help="score every module must reach (0.90)")
    parser.add_argument("--mutmut", default="mutmut", help="the mutmut executable")
    parser.add_argument("--max-children", type=integer(1), default=2, help="mutmut worker processes (2)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; report the cached results")
    args = parser.parse_args(argv)
    names = list(results(args.mutmut))
    if not names and not args.report_only:
        # generate the mutants and map tests to functions: mutmut does both before it filters,
        # then stops with "nothing matches" for a pattern no mutant has
        print("generating the mutants and running the instrumented tests once", flush=True)
        subprocess.run([args.mutmut, "run", "--max-children", str(args.max_children),
                        "capacity.bounds.x_no_such_function*"], capture_output=True, check=False)
        names = list(results(args.mutmut))
    sample = draw(names, args.per_module, args.seed)
    if not sample:
        raise UsageError("no mutants found (is [tool.mutmut] in pyproject.toml?)")
    if not args.report_only:
        names = [n for group in sample.values() for n in group]
        subprocess.run([args.mutmut, "run", "--max-children", str(args.max_children), *names], check=False)
    status = results(args.mutmut)
    ok = True
    print(f"{'module':24s} {'sampled':>8s} {'killed':>7s} {'survived':>9s} {'other':>6s} {'score':>7s}  95 % CI")
    for module, group in sample.items():
        killed = sum(status.get(n) in KILLED for n in group)
        survived = sum(status.get(n) in SURVIVED for n in group)
        decided = killed + survived
        low, high = wilson(killed, decided)
        score = killed / decided if decided else 0.0
        ok &= decided > 0 and score >= args.target
        print(f"{module:24s} {len(group):8d} {killed:7d} {survived:9d} {len(group) - decided:6d} "
              f"{100 * score:6.1f}%  {100 * low:.1f}-{100 * high:.1f} %")
        for name in group:
            if status.get(name) in SURVIVED:
                print(f"    survived: {name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
