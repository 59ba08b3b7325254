"""Measured private inference: fit the MPC cost model and check it on held-out trained networks.

Two CrypTen parties on this machine (forked processes, one torch thread each, gloo over
loopback; CrypTen's default trusted-dealer provider, so every figure is the **online phase**).

1. ``loopback``: the parties' round-trip time (a one-element all-reduce) and bandwidth (a
   16 MB all-reduce), in CrypTen's byte accounting: the localhost network preset.
2. ``fit``: random binary masks on the digits MLP (64-256-64-10) and the ConvNet (width 16),
   chosen to vary the kept ReLUs per layer, how many ReLU layers keep any, and the batch size
   (1 and 8), in both weight modes. The byte and round constants (per kept ReLU, per non-empty
   ReLU layer, per linear layer, per output) are read off and must hold exactly on every run;
   the seconds constants (per inference, per non-empty ReLU layer, per kept ReLU, per linear
   layer, per multiply-accumulate) are fitted by non-negative least squares to the median
   times minus the loopback's rounds x RTT + bytes / bandwidth, each run weighted by 1 / its
   time.
3. ``held-out``: SNL-trained digits networks (short ``python -m snl_train`` runs, trained here
   when ``RUNS/<name>/result.json`` is missing) measured as ``python -m snl_train.private``
   does (secure predictions on the 360 test digits checked); the fitted profile predicts their
   bytes and rounds (exactly) and localhost time.

Within each run of the parties the repeats are interleaved across networks and modes, so
that other load on a shared machine falls on every network alike; medians are used (the best
of the repeats is recorded too, but depends on how lucky a network was with a quiet moment).

Usage::

    python benchmarks/private.py --runs runs/private             # train if needed, measure, fit, check
    python benchmarks/private.py --runs runs/private --write     # also write the profile and
                                                                 # figures/data/private.json
    python benchmarks/private.py --quick --runs /tmp/private     # fewer repeats and networks

The machine may be shared: medians of interleaved repeats, ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "snl_train" / "profiles" / "crypten-2pc.json"
FIGURE_DATA = ROOT / "figures" / "data" / "private.json"

# Short digits runs (the default digits MLP command takes ~25 s): name, model, widths, budget,
# extra options (the ConvNet searches with a larger lambda so that it ends sooner).
CONVNET = ("--lambda", "1e-4", "--search-epochs", "150")
TRAINED = [("mlp-320", "mlp", "256,64", 320, ()), ("mlp-160", "mlp", "256,64", 160, ()),
           ("mlp-80", "mlp", "256,64", 80, ()), ("mlp-40", "mlp", "256,64", 40, ()),
           ("mlp-20", "mlp", "256,64", 20, ()), ("mlp-10", "mlp", "256,64", 10, ()),
           ("convnet-1600", "convnet", "16", 1600, CONVNET), ("convnet-400", "convnet", "16", 400, CONVNET),
           ("convnet-100", "convnet", "16", 100, CONVNET)]
QUICK_TRAINED = ["mlp-320", "mlp-20", "convnet-100"]

# Kept ReLUs per site for the fit: MLP sites (256, 64), ConvNet sites (1024, 512, 64).
MLP_FIT = {1: [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (20, 0), (0, 20), (10, 10), (20, 20),
               (128, 32), (256, 0), (0, 64), (256, 64)],
           8: [(0, 0), (20, 20), (128, 0), (256, 64)]}
CONV_FIT = {1: [(0, 0, 0), (100, 0, 0), (0, 0, 32), (0, 512, 0), (300, 150, 20), (1024, 512, 64)],
            8: [(100, 50, 10), (1024, 512, 64)]}


# ----------------------------------------------------------------------------- networks

def with_kept(model, x, kept: tuple, seed: int):
    """``model`` gated pixel-wise keeping ``kept[i]`` random entries at site i."""
    import torch

    from snl_train.gates import add_gates, gate_sites

    add_gates(model, "pixel", example_input=x)
    g = torch.Generator().manual_seed(seed)
    for (name, gate), k in zip(gate_sites(model), kept):
        c = torch.zeros(gate.c.numel())
        c[torch.randperm(c.numel(), generator=g)[:k]] = 1.0
        gate.c.data.copy_(c.view_as(gate.c))
    return model.eval()


def fit_jobs(batch: int, quick: bool):
    """(label, program, inputs) for the fit set at one batch size."""
    import torch

    from snl_train.data import load_dataset
    from snl_train.models import MLP, SmallConvNet
    from snl_train.private import convert

    data = load_dataset("digits")
    x = torch.stack([data.test[i][0] for i in range(batch)])
    jobs = []
    for name, build, configs in (("mlp", lambda: MLP(64, (256, 64), 10), MLP_FIT),
                                 ("convnet", lambda: SmallConvNet(1, 10, 16), CONV_FIT)):
        chosen = configs[batch][::3] if quick else configs[batch]
        for k, kept in enumerate(chosen):
            torch.manual_seed(k)
            model = with_kept(build(), x, kept, seed=k)
            jobs.append((f"{name} {kept} batch {batch}", convert(model, x), x))
    return jobs


def train(runs: Path, names) -> None:
    """Train the missing SNL runs (resuming an interrupted one)."""
    for name, model, widths, budget, extra in TRAINED:
        out = runs / name
        if name not in names or (out / "result.json").is_file():
            continue
        cmd = [sys.executable, "-m", "snl_train", "--model", model, "--widths", widths,
               "--budget", str(budget), "--out", str(out), "--quiet", *extra]
        if (out / "checkpoint.pt").is_file():
            cmd.append("--resume")
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)


# ----------------------------------------------------------------------------- loopback

def _loopback_party(rank: int, repeats: int) -> dict:
    import torch

    from snl_train.crypten_compat import import_crypten

    comm = import_crypten().communicator.get()
    small, big = torch.zeros(1, dtype=torch.long), torch.zeros(2 ** 20, dtype=torch.long)
    result = {}
    for label, tensor in (("small", small), ("big", big)):
        times = []
        for _ in range(repeats + 2):
            comm.barrier()
            start = time.perf_counter()
            comm.all_reduce(tensor)
            times.append(time.perf_counter() - start)
        result[label] = statistics.median(times[2:])
    return result


def loopback(repeats: int) -> dict:
    """RTT and bandwidth of the parties' link in CrypTen's byte accounting (16 bytes/element
    per party for a 2-party all-reduce)."""
    from snl_train.private import run_parties

    parts = run_parties(_loopback_party, (repeats,))
    rtt = max(p["small"] for p in parts)
    big = max(p["big"] for p in parts)
    return {"rtt": rtt, "bandwidth": 16 * 2 ** 20 / max(big - rtt, 1e-9),
            "description": f"this machine's loopback (gloo), measured {time.strftime('%Y-%m-%d')}"}


# ----------------------------------------------------------------------------- fit

def features(report: dict, layers, mode: str) -> dict:
    """What the cost model counts for one measured run."""
    batch = report["batch_size"]
    relus = [l for l in layers if l.kind == "relu"]
    linear = [l for l in layers if l.kind == "linear"]
    r = report["modes"][mode]
    return {"batch": batch, "kept": sum(l.kept for l in relus),
            "relu_layers": sum(1 for l in relus if l.kept), "linear_layers": len(linear),
            "inputs": sum(l.inputs for l in linear), "weights": sum(l.weights for l in linear),
            "macs": sum(l.macs for l in linear), "outputs": report["outputs"],
            "bytes": r["bytes"], "rounds": r["rounds"], "seconds": r["seconds_median"],
            "seconds_best": r["seconds_best"], "relu_bytes": r["relu_bytes"],
            "linear_bytes": r["linear_bytes"], "output_bytes": r["output_bytes"],
            "other_bytes": r["other_bytes"], "kept_per_layer": [l.kept for l in relus],
            "rows": r["layers"]}


def exact_constants(rows: list[dict]) -> dict:
    """Byte and round constants read off the per-layer rows; raises if any run disagrees."""
    per_relu, relu_rounds, per_output, out_rounds = set(), set(), set(), set()
    for row in rows:
        for layer in row["rows"]:
            if layer["kind"] == "relu" and layer["kept"]:
                per_relu.add(layer["bytes"] / (row["batch"] * layer["kept"]))
                relu_rounds.add(layer["rounds"])
            elif layer["kind"] == "relu":
                relu_rounds.add(("empty", layer["rounds"], layer["bytes"]))
            elif layer["kind"] == "output":
                per_output.add(layer["bytes"] / (row["batch"] * row["outputs"]))
                out_rounds.add(layer["rounds"])
    found = {"per_relu": per_relu, "relu_rounds": relu_rounds, "per_output": per_output,
             "output_rounds": out_rounds}
    expected_sizes = {"per_relu": 1, "relu_rounds": 2, "per_output": 1, "output_rounds": 1}
    if any(len(v) != expected_sizes[k] for k, v in found.items()) or ("empty", 0, 0) not in relu_rounds:
        raise SystemExit(f"the byte/round constants are not constant: {found}")
    return {"bytes_per_relu": int(per_relu.pop()),
            "rounds_per_relu_layer": int(next(r for r in relu_rounds if not isinstance(r, tuple))),
            "output_bytes_per_element": int(per_output.pop()), "output_rounds": int(out_rounds.pop())}


def linear_constants(rows: list[dict]) -> dict:
    """``bytes = a * batch * inputs + b * weights`` and the rounds per linear layer, exactly."""
    import numpy as np

    layers = [(row["batch"] * l["inputs"], l["weights"], l["bytes"], l["rounds"])
              for row in rows for l in row["rows"] if l["kind"] == "linear"]
    a, b = np.linalg.lstsq(np.array([[x, w] for x, w, _, _ in layers], float),
                           np.array([y for _, _, y, _ in layers], float), rcond=None)[0]
    a, b = int(round(a)), int(round(b))
    rounds = {r for *_, r in layers}
    if any(a * x + b * w != y for x, w, y, _ in layers) or len(rounds) != 1:
        raise SystemExit(f"linear bytes are not {a} x inputs + {b} x weights, or rounds vary: {rounds}")
    return {"linear_bytes_per_input": a, "linear_bytes_per_weight": b, "linear_rounds": rounds.pop()}


SECONDS_TERMS = ("seconds_per_inference", "seconds_per_relu_layer", "seconds_per_relu",
                 "seconds_per_linear_layer", "seconds_per_mac")


def _design(row: dict) -> list[float]:
    return [1.0, row["relu_layers"], row["batch"] * row["kept"], row["linear_layers"],
            row["batch"] * row["macs"]]


def fit_seconds(rows: list[dict], link: dict) -> dict:
    """Non-negative least squares of the local-compute constants (relative residuals)."""
    import numpy as np
    from scipy.optimize import nnls

    # Each run weighs by 1 / its time, so short and long runs count alike (relative error).
    design = np.array([_design(r) for r in rows]) / np.array([[r["seconds"]] for r in rows])
    target = np.array([(r["seconds"] - r["rounds"] * link["rtt"] - r["bytes"] / link["bandwidth"])
                       / r["seconds"] for r in rows])
    coef, _ = nnls(design, target)
    return dict(zip(SECONDS_TERMS, (float(c) for c in coef)))


# ----------------------------------------------------------------------------- driver

def measure_fit_set(repeats: int, quick: bool) -> list[dict]:
    from snl_train.private import PrivateConfig, measure_many

    rows = []
    for batch in (1, 8):
        jobs = fit_jobs(batch, quick)
        config = PrivateConfig(batch_size=batch, repeats=repeats, warmup=2, samples=0)
        reports = measure_many([(p, x, None, None) for _, p, x in jobs], config)
        for (label, program, _), report in zip(jobs, reports):
            for mode in ("secret", "public"):
                rows.append({"label": label, "mode": mode, **features(report, program.layers, mode)})
        print(f"measured {len(jobs)} fit networks at batch {batch}", flush=True)
    return rows


def measure_trained(runs: Path, names, repeats: int) -> list[dict]:
    """The trained networks, interleaved in one run of the parties (like measure_run)."""
    from snl_train.accounting import online_latency
    from snl_train.gates import eval_forward
    from snl_train.private import PrivateConfig, convert, first_test_samples, load_run, measure_many

    config = PrivateConfig(repeats=repeats, warmup=2, samples=360)
    jobs, info = [], []
    for name, model, _, budget, _ in TRAINED:
        if name not in names:
            continue
        run = load_run(runs / name)
        program = convert(run.model, run.example_input)
        x, y = first_test_samples(run.data, config.samples)
        jobs.append((program, x, y, eval_forward(run.model, x)))
        result = json.loads((runs / name / "result.json").read_text())
        info.append({"label": name, "model": model, "budget": budget, "relu_total": program.relu_total,
                     "test_accuracy": result["test_accuracy"],
                     "teacher_test_accuracy": result["teacher_test_accuracy"],
                     "budget_reached_by_search": result["budget_reached_by_search"],
                     "delphi_seconds": online_latency(run.model, x[:1], program.relu_kept, repeats=9)["total_seconds"],
                     "layers": program.layers})
    out = []
    for meta, doc in zip(info, measure_many(jobs, config)):
        layers = meta.pop("layers")
        for mode in ("secret", "public"):
            out.append({**meta, "mode": mode, "secure_accuracy": doc["modes"][mode]["accuracy"],
                        "agreement": doc["modes"][mode]["agreement"], **features(doc, layers, mode)})
    print(f"measured {len(jobs)} trained networks", flush=True)
    return out


def predict(rows: list[dict], profile) -> None:
    """Add the profile's localhost / LAN / WAN predictions to each measured row (in place)."""
    from snl_train.accounting import PrivateLayer, private_cost

    for row in rows:
        layers = [PrivateLayer(l["name"], l["kind"], l["total"], l["kept"], l["inputs"], l["weights"],
                               l["macs"]) for l in row["rows"] if l["kind"] in ("relu", "linear")]
        row["predicted"] = {net: private_cost(layers, row["outputs"], profile, net, row["batch"], row["mode"])
                            for net in ("localhost", "lan", "wan")}


def build_profile(fit_rows: list[dict], link: dict) -> dict:
    constants = exact_constants(fit_rows)
    modes = {}
    for mode in ("secret", "public"):
        mine = [r for r in fit_rows if r["mode"] == mode]
        modes[mode] = {**linear_constants(mine), **fit_seconds(mine, link)}
    return {"name": "crypten-2pc",
            "engine": "CrypTen 0.4.1, 2 parties, trusted-dealer (TFP) provider: online phase only",
            **constants, "loopback": link, "modes": modes,
            "info": {"measured": time.strftime("%Y-%m-%d"), "machine": _machine(),
                     "fit_runs": len(fit_rows), "script": "benchmarks/private.py",
                     "units": "bytes and rounds per party per batch; seconds of local compute"}}


def _machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other work), "
            f"Python {platform.python_version()}, torch {__import__('torch').__version__}, "
            f"one torch thread per party")


def report(rows: list[dict], title: str) -> list[dict]:
    """Print measured against predicted; return the comparison rows."""
    print(f"\n{title}: measured (median of repeats) vs predicted, per party per batch")
    print(f"{'network':28} {'weights':7} {'kept':>5} {'bytes':>10} {'pred':>10} {'rounds':>6} "
          f"{'pred':>5} {'seconds':>8} {'pred':>8} {'error':>7}")
    out = []
    for r in rows:
        p = r["predicted"]["localhost"]
        error = p["seconds"] / r["seconds"] - 1
        print(f"{r['label'][:28]:28} {r['mode']:7} {r['kept']:5} {r['bytes']:10,} {p['bytes']:10,} "
              f"{r['rounds']:6} {p['rounds']:5} {r['seconds']:8.4f} {p['seconds']:8.4f} {error:+7.1%}")
        out.append({"label": r["label"], "mode": r["mode"], "bytes_exact": r["bytes"] == p["bytes"],
                    "rounds_exact": r["rounds"] == p["rounds"], "seconds_error": error})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "private",
                        help="directory of the trained runs (trained here when missing)")
    parser.add_argument("--repeats", type=int, default=25, help="timed inferences per network (25)")
    parser.add_argument("--quick", action="store_true", help="fewer networks and repeats")
    parser.add_argument("--train-only", action="store_true", help="train the missing runs, then stop")
    parser.add_argument("--write", action="store_true",
                        help=f"write {PROFILE.relative_to(ROOT)} and {FIGURE_DATA.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    import torch

    from snl_train.accounting import load_cost_profile

    torch.set_num_threads(1)  # tiny models: the plaintext timings (DELPHI estimate) too
    repeats = 3 if args.quick else args.repeats
    names = QUICK_TRAINED if args.quick else [t[0] for t in TRAINED]
    train(args.runs, names)
    if args.train_only:
        return 0
    link = loopback(50 if not args.quick else 10)
    print(f"loopback: {link['rtt'] * 1e3:.3f} ms per round, {link['bandwidth'] / 1e6:,.0f} MB/s", flush=True)
    fit_rows = measure_fit_set(repeats, args.quick)
    held_out = measure_trained(args.runs, names, repeats)
    doc = build_profile(fit_rows, link)
    path = PROFILE if args.write else Path(os.environ.get("TMPDIR", "/tmp")) / "crypten-2pc.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    profile = load_cost_profile(path)
    predict(fit_rows, profile)
    predict(held_out, profile)
    checks = {"fit": report(fit_rows, "fit set"), "held_out": report(held_out, "held-out trained networks")}
    print("\nprofile:", json.dumps({k: doc[k] for k in ("bytes_per_relu", "rounds_per_relu_layer")}),
          json.dumps(doc["modes"], indent=1))
    errors = [abs(c["seconds_error"]) for c in checks["held_out"]]
    exact = all(c["bytes_exact"] and c["rounds_exact"] for c in checks["held_out"] + checks["fit"])
    print(f"held-out: bytes and rounds exact: {exact}; localhost seconds |error| median "
          f"{statistics.median(errors):.1%}, max {max(errors):.1%} (target: within 30%)")
    if args.write:
        for row in fit_rows + held_out:
            row.pop("rows")
        FIGURE_DATA.write_text(json.dumps({
            "conditions": {"engine": doc["engine"], "machine": _machine(), "loopback": link,
                           "repeats": repeats, "measured": time.strftime("%Y-%m-%d")},
            "fit": fit_rows, "networks": held_out, "checks": checks}, indent=1) + "\n")
        print(f"wrote {PROFILE.relative_to(ROOT)} and {FIGURE_DATA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
