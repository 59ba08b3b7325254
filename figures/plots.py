"""The plots, each drawn from one results document of ``snl_train.experiments``.

Every ``plot_*`` function takes the parsed JSON document and returns a matplotlib Figure;
:func:`render_all` reads ``DATA_DIR/<experiment>.json`` for each experiment present and
writes ``OUT_DIR/<figure>.png`` and ``.pdf``. Nothing here trains anything.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import ResultsError, read_results  # noqa: E402,F401  (ResultsError: re-exported)
from .stats import allocation_score, position, summary_table  # noqa: E402

FIGSIZE = (7, 4.5)
DPI = 120
COLORS = {"paper": "#d62728", "sharp": "#2ca02c", "digits": "#1f77b4", "random": "#9467bd",
          "pixel": "#1f77b4", "channel": "#ff7f0e", "l1-prune": "#7f7f7f"}
MARKERS = {"digits": "o", "random": "s"}


def _style() -> None:
    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9,
                         "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8})


# ----------------------------------------------------------------------------- retention

def predicted_curves(d1: int, d2: int, budgets) -> dict:
    """Per prediction, the lists (a1, a2) of the continuous optimum at each budget."""
    from capacity.optimum import paper_optimum, sharp_optimum

    curves = {"paper": ([], []), "sharp": ([], [])}
    for b in budgets:
        for name, opt in (("paper", paper_optimum(d1, d2, b)), ("sharp", sharp_optimum((d1, d2), b))):
            curves[name][0].append(float(opt.alpha[0]))
            curves[name][1].append(float(opt.alpha[1]))
    return curves


def plot_retention(doc: dict):
    """Learned a1 (top) and a2 (bottom) against budget, one column per width (d1, d2), with
    the paper's and the sharp-bound optimum as curves and the seed spread as error bars."""
    _style()
    runs = doc["runs"]
    widths = sorted({tuple(r["widths"]) for r in runs}, key=lambda w: w[0] / w[1])
    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(2, len(widths), figsize=(max(FIGSIZE[0], 2.3 * len(widths)), 5.2),
                             sharey=True, squeeze=False)
    for col, (d1, d2) in enumerate(widths):
        mine = [r for r in runs if tuple(r["widths"]) == (d1, d2)]
        top = max(r["budget"] for r in mine)
        grid = list(range(1, min(d1 + d2, int(top * 1.15) + 2) + 1))
        curves = predicted_curves(d1, d2, grid)
        for row in range(2):
            ax = axes[row][col]
            for name, style in (("paper", "--"), ("sharp", "-")):
                ax.plot(grid, curves[name][row], style, color=COLORS[name], lw=1.4,
                        label=f"{'paper (Thm 2, boxed)' if name == 'paper' else 'sharp bound'} optimum")
            for k, ds in enumerate(datasets):
                by_budget = defaultdict(list)
                for r in mine:
                    if r["dataset"] == ds:
                        by_budget[r["budget"]].append(r["learned_alpha"][row])
                bs = sorted(by_budget)
                shift = (k - (len(datasets) - 1) / 2) * 0.012 * top
                means = [sum(by_budget[b]) / len(by_budget[b]) for b in bs]
                lo = [m - min(by_budget[b]) for m, b in zip(means, bs)]
                hi = [max(by_budget[b]) - m for m, b in zip(means, bs)]
                ax.errorbar([b + shift for b in bs], means, yerr=[lo, hi], fmt=MARKERS.get(ds, "o"),
                            color=COLORS.get(ds, "k"), ms=4, capsize=2, lw=1,
                            label=f"learned, {ds} (mean, seed min-max)")
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"d1={d1}, d2={d2} (d1/d2={d1 / d2:g})")
            else:
                ax.set_xlabel("ReLU budget B (ReLUs)")
            if col == 0:
                ax.set_ylabel(f"retention a{row + 1} (fraction kept)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    fig.suptitle("Learned per-layer ReLU retention after SNL vs the two predicted optima")
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    return fig


def plot_error_by_ratio(doc: dict):
    """Mean absolute error of each prediction by width ratio (95% t-intervals over runs),
    with the fraction of runs where a1 < a2 on a second axis."""
    _style()
    runs = [{**r, "ratio": r["widths"][0] / r["widths"][1]} for r in doc["runs"]]
    rows = summary_table(runs, ("ratio",))
    settings = sorted((r for r in rows if r["setting"] != "overall"),
                      key=lambda r: r["setting"]["ratio"])
    settings.append(rows[-1])
    labels = [f"{r['setting']['ratio']:g}" if r["setting"] != "overall" else "all" for r in settings]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    width = 0.38
    for k, name in enumerate(("paper", "sharp")):
        xs = [i + (k - 0.5) * width for i in range(len(settings))]
        means = [r["error"][name]["mean"] for r in settings]
        err = [[m - max(r["error"][name]["low"], 0) for m, r in zip(means, settings)],
               [r["error"][name]["high"] - m for m, r in zip(means, settings)]]
        ax.bar(xs, means, width, yerr=err, capsize=3, color=COLORS[name],
               label=f"{'paper (Thm 2, boxed)' if name == 'paper' else 'sharp-bound'} prediction")
    ax.set_xticks(range(len(settings)), labels)
    ax.set_xlabel("width ratio d1/d2 (d2 = 16; all budgets and datasets pooled)")
    ax.set_ylabel("mean |learned - predicted| retention\n(fraction, avg over 2 layers)")
    ax2 = ax.twinx()
    ax2.plot(range(len(settings)), [r["a1_lt_a2"] for r in settings], "kD:", ms=5,
             label="fraction of runs with a1 < a2 (right axis)")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("fraction of runs with a1 < a2")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left")
    ax.set_ylim(0, max(0.05, ax.get_ylim()[1] * 1.25))
    ax.set_title("Prediction error of learned retention, by width ratio (bars: 95% t-interval)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


CONDITION_COLORS = {"paper": ("#9ecae1", "#3182bd", "#08519c"),
                    "official": ("#fdae6b", "#e6550d", "#a63603")}


def plot_retention_conditions(doc: dict):
    """Position of the learned counts between the paper's optimum (0) and the sharp one (1),
    per setting (dataset, widths, budget) and condition (recipe x lambda scale): the seed
    mean with the seed min-max as error bar."""
    _style()
    runs = [r for r in doc["runs"] if position(r) is not None]

    def cond(r):
        return r.get("recipe", "paper"), r.get("lambda_scale", 1.0)

    conditions = sorted({cond(r) for r in runs}, key=lambda c: (c[0] != "paper", c[1]))
    settings = sorted({(r["dataset"], tuple(r["widths"]), r["budget"]) for r in runs},
                      key=lambda s: (s[0], s[1][0] / s[1][1]))
    fig, ax = plt.subplots(figsize=(max(FIGSIZE[0], 1.1 * len(settings)), 4.8))
    ax.axhspan(0, 1, color="#dddddd", alpha=0.5, lw=0, label="between the two optima")
    ax.axhline(0, color=COLORS["paper"], ls="--", lw=1.4, label="paper (Thm 2, boxed) optimum")
    ax.axhline(1, color=COLORS["sharp"], lw=1.4, label="sharp-bound optimum")
    width = 0.8 / max(len(conditions), 1)
    for k, (recipe, scale) in enumerate(conditions):
        scales = sorted({c[1] for c in conditions if c[0] == recipe})
        shade = CONDITION_COLORS.get(recipe, ("k",) * 3)[min(scales.index(scale), 2)]
        xs, means, lo, hi = [], [], [], []
        for i, setting in enumerate(settings):
            ts = [position(r) for r in runs if cond(r) == (recipe, scale)
                  and (r["dataset"], tuple(r["widths"]), r["budget"]) == setting]
            if ts:
                m = sum(ts) / len(ts)
                xs.append(i + (k - (len(conditions) - 1) / 2) * width)
                means.append(m)
                lo.append(m - min(ts))
                hi.append(max(ts) - m)
        ax.errorbar(xs, means, yerr=[lo, hi], fmt="os^"[min(scales.index(scale), 2)], color=shade,
                    ms=4, capsize=2, lw=1, label=f"{recipe} recipe, lambda x{scale:g}")
    ax.set_xticks(range(len(settings)),
                  [f"{ds}\n({d1}, {d2})\nB={b}" for ds, (d1, d2), b in settings])
    ax.set_ylabel("position of learned (x, y) on the line\npaper optimum (0) -> sharp optimum (1)")
    ax.set_title("Where SNL's learned allocation lies between the two optima, by recipe and "
                 "initial lambda\n(seed mean, error bar: seed min-max; lambda x the sweep's 1e-4)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- capacity

BOUND_STYLES = (("theorem1", "Theorem 1 (all kept; pruned: widths x, y)", "#8c564b", "-"),
                ("corollary1", "Corollary 1 (linearized)", COLORS["paper"], "--"),
                ("corollary2", "Corollary 2 (pruned)", "#ff7f0e", "-."),
                ("sharp", "sharp bound (x+1)(y+1)+1", COLORS["sharp"], "-"))


def plot_capacity(doc: dict):
    """Largest N of collinear alternating points: bounds, exact witnesses, trained fits."""
    _style()
    runs = doc["runs"]
    kinds = [k for k in ("linearized", "pruned") if any(r["kind"] == k for r in runs)]
    fig, axes = plt.subplots(1, len(kinds), figsize=FIGSIZE, sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        mine = sorted((r for r in runs if r["kind"] == kind), key=lambda r: (r["sharp"], r["x"]))
        xs = range(len(mine))
        for key, label, color, style in BOUND_STYLES:
            ax.plot(xs, [r[key] for r in mine], style, color=color, lw=1.3, label=label)
        ax.plot(xs, [r["witness"] for r in mine], "k^", ms=6, label="witness network (exact fit)")
        ax.plot(xs, [r["trained"] for r in mine], "o", color=COLORS["digits"], ms=5,
                label=f"gradient training (best of {mine[0]['restarts']} restarts)")
        ax.set_xticks(list(xs), [f"{r['x']},{r['y']}" for r in mine], rotation=90)
        d1, d2 = mine[0]["widths"]
        title = (f"linearized: widths ({d1}, {d2}), x, y ReLUs kept" if kind == "linearized"
                 else "pruned to widths (x, y), all ReLU")
        ax.set_title(title)
        ax.set_xlabel("kept ReLUs x, y (layer 1, layer 2)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("largest N of alternating collinear points (points)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.19, 1, 1))
    return fig


# ----------------------------------------------------------------------------- distribution

def plot_distribution(doc: dict):
    """ReLUs per layer before and after SNL (the paper's Figure 4), one panel per budget."""
    _style()
    runs = sorted(doc["runs"], key=lambda r: r["budget"])
    budgets = sorted({r["budget"] for r in runs})
    fig, axes = plt.subplots(1, len(budgets), figsize=(max(FIGSIZE[0], 2.4 * len(budgets)), 4.5),
                             sharey=True, squeeze=False)
    for ax, b in zip(axes[0], budgets):
        mine = [r for r in runs if r["budget"] == b]
        layers = [s["name"] for s in mine[0]["per_layer"]]
        total = [s["total"] for s in mine[0]["per_layer"]]
        kept = [sum(r["per_layer"][i]["kept"] for r in mine) / len(mine) for i in range(len(layers))]
        xs = range(1, len(layers) + 1)
        ax.bar([x - 0.2 for x in xs], total, 0.4, color="#1f77b4", label="before SNL")
        ax.bar([x + 0.2 for x in xs], kept, 0.4, color="#ff7f0e", label="after SNL")
        for x, t, k in zip(xs, total, kept):
            ax.text(x + 0.2, max(k, 1) * 1.15, f"{100 * k / t:.0f}%", ha="center", fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xlabel("ReLU layer (input side first)")
        ax.set_title(f"budget {b:,} ReLUs (kept {sum(kept):,.0f})")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("ReLUs per layer (count, log scale)")
    axes[0][0].legend(loc="upper right")
    model = runs[0].get("model", "")
    fig.suptitle(f"Per-layer ReLU counts before and after pixel-wise SNL\n({model} on "
                 f"{runs[0].get('dataset', '')}; % = fraction of the layer kept)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- pareto

PARETO_LABELS = {"pixel": "SNL, pixel-wise", "channel": "SNL, channel-wise",
                 "l1-prune": "l1 structured pruning (channels / neurons)"}


def plot_pareto(doc: dict):
    """Test accuracy against the ReLU count each method reached (seed mean and range)."""
    _style()
    runs = doc["runs"]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for method in ("pixel", "channel", "l1-prune"):
        by_budget = defaultdict(list)
        for r in runs:
            if r["method"] == method:
                by_budget[r["budget"]].append(r)
        if not by_budget:
            continue
        pts = []
        for b, rs in sorted(by_budget.items()):
            acc = [100 * r["test_accuracy"] for r in rs]
            pts.append((sum(r["relu_count"] for r in rs) / len(rs), sum(acc) / len(acc),
                        min(acc), max(acc)))
        xs, ys, lo, hi = zip(*pts)
        ax.errorbar(xs, ys, yerr=[[y - a for y, a in zip(ys, lo)], [b - y for y, b in zip(ys, hi)]],
                    fmt="o-", color=COLORS[method], capsize=2, label=PARETO_LABELS[method])
    teacher = [100 * r["teacher_test_accuracy"] for r in runs]
    total = runs[0]["relu_total"]
    ax.axhline(sum(teacher) / len(teacher), color="k", ls=":", lw=1,
               label=f"pretrained, all {total:,} ReLUs")
    ax.set_xscale("log")
    ax.set_xlabel("ReLUs kept per image (count, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy vs ReLU count, {runs[0].get('model', '')} on {runs[0].get('dataset', '')}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- allocation

ALLOCATION_STYLES = {"learned": ("SNL's own (learned)", "k", "o-"),
                     "paper": ("paper (Thm 2, boxed)", COLORS["paper"], "s--"),
                     "sharp": ("sharp bound (water-filling)", COLORS["sharp"], "^-"),
                     "uniform": ("uniform fraction", "#ff7f0e", "D:")}


def plot_allocation(doc: dict):
    """Score against budget per allocation (seed mean, min-max bars): test accuracy on digits
    (top), memorized fraction of random labels (bottom); one column per width setting, with
    the budgets where Theorem 2's closed form is feasible shaded."""
    _style()
    runs = doc["runs"]
    widths = sorted({tuple(r["widths"]) for r in runs}, key=lambda w: (len(w), w[0] / w[-1]))
    datasets = [d for d in ("digits", "random") if any(r["dataset"] == d for r in runs)]
    fig, axes = plt.subplots(len(datasets), len(widths), squeeze=False, sharey="row",
                             figsize=(max(FIGSIZE[0], 2.5 * len(widths)), 2.7 * len(datasets) + 1))
    for row, ds in enumerate(datasets):
        for col, w in enumerate(widths):
            mine = [r for r in runs if r["dataset"] == ds and tuple(r["widths"]) == w]
            _allocation_panel(axes[row][col], mine, w)
            if row == 0:
                ratio = f"d1/d2 = {w[0] // w[1]}" if len(w) == 2 else "three layers"
                axes[row][col].set_title(f"widths {', '.join(map(str, w))} ({ratio})")
            if row == len(datasets) - 1:
                axes[row][col].set_xlabel("ReLU budget")
        axes[row][0].set_ylabel("digits: test accuracy" if ds == "digits"
                                else "random labels: fraction memorized")
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, frameon=False)
    fig.suptitle("Same pretraining, search and finetuning; only which ReLUs are kept differs")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def _allocation_panel(ax, runs: list, widths: tuple) -> None:
    """One panel: each allocation's seed mean and range against budget."""
    if not runs:
        ax.set_visible(False)
        return
    if len(widths) == 2:  # Theorem 2's closed form is feasible for d2 - 1 <= B <= ...
        d1, d2 = widths
        ax.axvspan(d2 - 1, min(3 * d2 - 1, 2 * d1 - d2 + 1), color="#dddddd", alpha=0.6,
                   label="Theorem 2 closed form feasible")
    names = [a for a in ALLOCATION_STYLES if a in runs[0]["allocations"]]
    budgets = sorted({r["budget"] for r in runs})
    span = max(budgets) - min(budgets) or 1
    for k, name in enumerate(names):
        label, color, fmt = ALLOCATION_STYLES[name]
        scores = [[allocation_score(r, name) for r in runs if r["budget"] == b] for b in budgets]
        means = [sum(s) / len(s) for s in scores]
        shift = (k - (len(names) - 1) / 2) * 0.012 * span
        ax.errorbar([b + shift for b in budgets], means, fmt=fmt, color=color, ms=4, capsize=2,
                    lw=1, yerr=[[m - min(s) for m, s in zip(means, scores)],
                                [max(s) - m for m, s in zip(means, scores)]], label=label)
    teacher = [r["teacher_train_accuracy" if r["dataset"] == "random" else "teacher_test_accuracy"]
               for r in runs]
    ax.axhline(sum(teacher) / len(teacher), color="#7f7f7f", ls=":", lw=1,
               label="pretrained, every ReLU kept")
    ax.grid(alpha=0.3)


# ----------------------------------------------------------------------------- private inference

PRIVATE_MODELS = {"mlp": ("MLP", "o", "#1f77b4"), "convnet": ("ConvNet", "s", "#ff7f0e")}


def _private_series(rows, model: str, mode: str, key):
    mine = sorted((r for r in rows if r["model"] == model and r["mode"] == mode), key=lambda r: r["kept"])
    return [r["kept"] for r in mine], [key(r) for r in mine]


def plot_private(doc: dict):
    """Measured two-party online latency, bytes and rounds of SNL-trained networks against
    their kept ReLUs, next to the cost model and the DELPHI estimate; and, on random masks,
    how latency follows the number of ReLU layers that keep anything."""
    _style()
    rows = doc["networks"]
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    (ax_t, ax_b), (ax_r, ax_l) = axes
    for model, (label, marker, color) in PRIVATE_MODELS.items():
        if not any(r["model"] == model for r in rows):
            continue
        for mode, fill in (("secret", color), ("public", "none")):
            xs, ys = _private_series(rows, model, mode, lambda r: r["seconds"])  # median of repeats
            ax_t.plot(xs, ys, marker, mfc=fill, color=color, ls="-", lw=0.8, label=f"{label}, {mode} weights")
            xs, pred = _private_series(rows, model, mode, lambda r: r["predicted"]["localhost"]["seconds"])
            ax_t.plot(xs, pred, "x", color=color, ms=5)
            xs, ys = _private_series(rows, model, mode, lambda r: r["bytes"])
            ax_b.plot(xs, ys, marker, mfc=fill, color=color, ls="-", lw=0.8, label=f"{label}, {mode}")
            xs, ys = _private_series(rows, model, mode, lambda r: r["rounds"])
            ax_r.plot(xs, ys, marker, mfc=fill, color=color, ls="-", lw=0.8, label=f"{label}, {mode}")
        xs, ys = _private_series(rows, model, "secret", lambda r: r["delphi_seconds"])
        ax_t.plot(xs, ys, ":", color=color, lw=1.5, label=f"{label}, DELPHI estimate")
    kept = sorted({r["kept"] for r in rows})
    ax_b.plot(kept, [464 * k for k in kept], "k--", lw=1, label="464 bytes x kept ReLUs")
    ax_t.plot([], [], "kx", label="cost model (localhost)")
    for ax, ylabel in ((ax_t, "online latency, batch 1 (s, median)"),
                       (ax_b, "bytes per party (log scale)"), (ax_r, "communication rounds")):
        ax.set_xscale("log")
        ax.set_xlabel("kept ReLUs per image (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    ax_b.set_yscale("log")
    top = max(max(r["seconds"], r["predicted"]["localhost"]["seconds"]) for r in rows)
    ax_t.set_ylim(0, 1.9 * top)  # room for the legend above the data
    ax_t.legend(fontsize=6.5, loc="upper left", ncol=2, columnspacing=0.8)
    ax_b.legend(fontsize=6.5, loc="lower right")
    ax_t.set_title("latency of SNL-trained networks")
    ax_b.set_title("traffic: linear layers dominate with secret weights")
    ax_r.set_title("rounds: 9 per ReLU layer keeping any ReLU")
    _plot_layer_term(ax_l, doc.get("fit", []))
    fig.suptitle(f"Measured private inference ({doc['conditions']['engine']})\nMLP: digits 64-256-64-10; "
                 "ConvNet: digits, width 16; SNL-trained, pixel-wise; bytes and rounds per party", fontsize=9)
    fig.tight_layout()
    return fig


def _plot_layer_term(ax, fit_rows) -> None:
    """Random-mask digits MLPs, batch 1, public weights: latency against kept ReLUs, coloured
    by the number of ReLU layers keeping any."""
    mine = [r for r in fit_rows if r["label"].startswith("mlp") and r["batch"] == 1 and r["mode"] == "public"]
    colors = {0: "#7f7f7f", 1: "#2ca02c", 2: "#d62728"}
    for layers in sorted({r["relu_layers"] for r in mine}):
        pts = sorted((r["kept"], r["seconds"]) for r in mine if r["relu_layers"] == layers)
        ax.plot([max(k, 0.5) for k, _ in pts], [s for _, s in pts], "o", color=colors.get(layers, "k"),
                label=f"{layers} ReLU layer{'s' if layers != 1 else ''} keeping any")
    ax.set_xscale("log")
    ax.set_xlabel("kept ReLUs (log scale; 0 drawn at 0.5)")
    ax.set_ylabel("online latency, batch 1 (s, median)")
    ax.set_title("random masks, MLP, public weights:\ntime follows non-empty layers, not ReLUs")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")


# ----------------------------------------------------------------------------- latency

LATENCY_STYLES = {"relu-snl": ("SNL, ReLU budget", "#1f77b4", "o"),
                  "latency-snl": ("SNL, latency budget (+ group penalty)", "#d62728", "s"),
                  "whole-layer": ("whole-layer linearization", "#7f7f7f", "^")}
LATENCY_COLUMNS = (("measured", "measured, localhost (2-party CrypTen)"),
                   ("lan", "cost model, LAN (0.3 ms, 1 Gbit/s)"),
                   ("wan", "cost model, WAN (80 ms, 100 Mbit/s)"))
LATENCY_MODELS = {"mlp": "MLP, widths", "convnet": "ConvNet, width"}


def plot_latency(doc: dict):
    """Test accuracy against private-inference latency (batch 1, secret weights) per model
    (rows) and network (columns: measured on localhost, cost model on LAN and WAN): each
    method's points (seed mean, min-max bars) and its Pareto front; the pretrained network
    (every ReLU kept) is whole-layer linearization's first point."""
    _style()
    models = [m for m in LATENCY_MODELS if m in doc["by_model"]] + \
        [m for m in doc["by_model"] if m not in LATENCY_MODELS]
    widths = {r["model"]: ",".join(map(str, r["widths"])) for r in doc["runs"]}
    fig, axes = plt.subplots(len(models), len(LATENCY_COLUMNS), squeeze=False,
                             figsize=(10, 3.2 * len(models) + 0.8))
    for row, model in enumerate(models):
        entry = doc["by_model"][model]
        for col, (net, title) in enumerate(LATENCY_COLUMNS):
            ax, info = axes[row][col], entry["networks"][net]
            for method, (label, color, marker) in LATENCY_STYLES.items():
                mine = [c for c in info["configs"] if c["method"] == method]
                if not mine:
                    continue
                xs = [1000 * c["latency"] for c in mine]
                ys = [100 * c["accuracy"] for c in mine]
                err = [[y - 100 * c["accuracy_min"] for y, c in zip(ys, mine)],
                       [100 * c["accuracy_max"] - y for y, c in zip(ys, mine)]]
                ax.errorbar(xs, ys, yerr=err, fmt=marker, color=color, ms=4, capsize=2, lw=1,
                            mfc="none" if method == "whole-layer" else color, label=label)
                front = info["fronts"][method]
                ax.step([1000 * c for c, _ in front], [100 * a for _, a in front], where="post",
                        color=color, lw=1, alpha=0.7)
            ax.axhline(100 * entry["teacher_test_accuracy"], color="k", ls=":", lw=0.8,
                       label="pretrained, every ReLU kept")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(title)
            if row == len(models) - 1:
                ax.set_xlabel("latency per inference, batch 1 (ms)")
            if col == 0:
                ax.set_ylabel(f"{LATENCY_MODELS.get(model, model)} {widths.get(model, '')}\n"
                              "test accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
    fig.suptitle("Accuracy against private-inference latency (digits; two parties, secret weights, "
                 "online phase)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


# ----------------------------------------------------------------------------- all

FIGURES = (("retention", "retention", plot_retention),
           ("retention", "retention_error", plot_error_by_ratio),
           ("retention_recipes", "retention_recipes", plot_retention_conditions),
           ("capacity", "capacity", plot_capacity),
           ("distribution", "distribution", plot_distribution),
           ("pareto", "pareto", plot_pareto),
           ("allocation", "allocation", plot_allocation),
           ("private", "private", plot_private),
           ("latency", "latency", plot_latency))


def render_all(data_dir="figures/data", out_dir="figures", formats=("png", "pdf"),
               docs: dict | None = None) -> list[Path]:
    """Draw every figure whose results file exists in ``data_dir``; return the files written.

    ``docs`` (experiment -> document, from :func:`figures.results.read_results`) skips the
    reading when the caller has already read the files.

    Raises:
        ResultsError: a results file is not JSON or lacks what its plot needs.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    docs = read_results(data_dir) if docs is None else docs
    figures = []  # every plot first: a results file that fails leaves no figure written
    try:
        for experiment, name, plot in FIGURES:
            if experiment in docs:
                figures.append((name, _plot(plot, docs[experiment], data_dir / f"{experiment}.json")))
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, fig in figures:
            for fmt in formats:
                path = out_dir / f"{name}.{fmt}"
                fig.savefig(path, dpi=DPI, metadata={"CreationDate": None} if fmt == "pdf" else None)
                written.append(path)
    finally:
        for _, fig in figures:
            plt.close(fig)
    return written


def _plot(plot, doc: dict, source: Path):
    """``plot(doc)``; a document the plot cannot use is a ResultsError naming its file."""
    try:
        return plot(doc)
    except (ArithmeticError, AttributeError, ValueError, KeyError, TypeError, IndexError) as exc:
        maker = ("benchmarks/private.py" if source.stem == "private"
                 else f"python -m snl_train.experiments {source.stem}")
        raise ResultsError(f"{source} is not a results file of {maker} "
                           f"({type(exc).__name__}: {exc})") from exc
