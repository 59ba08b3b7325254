"""Wall time of `python -m capacity.optimize` against `python -c pass`, in one run.

Both commands run alternately ``--repeats`` times in fresh interpreters; the figure that
matters is the ratio of the medians (this machine is noisy, ratios taken in one run are
comparable across runs). Usage: python benchmarks/cli_startup.py [--repeats N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "capacity.optimize (paper example)": [
        sys.executable, "-m", "capacity.optimize", "--d1", "50000", "--d2", "5000", "--budget", "10000",
    ],
    "capacity.optimize --json": [
        sys.executable, "-m", "capacity.optimize", "--d1", "50000", "--d2", "5000", "--budget", "10000", "--json",
    ],
}


def wall_time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            times[name].append(wall_time(cmd))
    base = statistics.median(times["python -c pass"])
    rows = {name: {"median_s": statistics.median(t), "ratio": statistics.median(t) / base} for name, t in times.items()}
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'command':<40}{'median (ms)':>12}{'ratio':>8}")
    for name, row in rows.items():
        print(f"{name:<40}{row['median_s'] * 1000:>12.1f}{row['ratio']:>8.2f}")


if __name__ == "__main__":
    main()
