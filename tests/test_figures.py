"""figures: every plot renders from tiny hand-made results files, with the right data."""
import json

import matplotlib
import pytest

matplotlib.use("Agg")

from capacity.optimum import paper_optimum, sharp_optimum  # noqa: E402
from figures import plots  # noqa: E402
from figures.__main__ import main  # noqa: E402


def retention_run(dataset, widths, budget, seed, a):
    return {"dataset": dataset, "widths": list(widths), "budget": budget, "seed": seed,
            "learned_alpha": list(a), "predicted": {
                "paper": [float(v) for v in paper_optimum(*widths, budget).alpha],
                "sharp": [float(v) for v in sharp_optimum(widths, budget).alpha]}}


RETENTION = {"experiment": "retention", "runs": [
    retention_run("digits", (8, 4), 6, 0, (0.25, 0.75)),
    retention_run("digits", (8, 4), 6, 1, (0.5, 0.5)),
    retention_run("random", (8, 4), 3, 0, (0.25, 0.25)),
    retention_run("random", (16, 4), 6, 0, (0.125, 1.0)),
    retention_run("random", (16, 4), 6, 1, (0.25, 0.5))]}


def capacity_run(x, y, kind):
    return {"widths": [2, 2], "x": x, "y": y, "kind": kind, "restarts": 2, "theorem1": 14,
            "corollary1": 9, "corollary2": 8, "sharp": (x + 1) * (y + 1) + 1,
            "witness": (x + 1) * (y + 1), "trained": 3}


CAPACITY = {"experiment": "capacity",
            "runs": [capacity_run(x, y, k) for x in (1, 2) for y in (1, 2) for k in ("linearized", "pruned")]}

LAYERS = [("features.2", 256), ("features.5", 128), ("classifier.1", 64)]
DISTRIBUTION = {"experiment": "distribution", "runs": [
    {"model": "convnet", "dataset": "digits", "budget": b, "seed": 0, "method": "pixel",
     "per_layer": [{"name": n, "total": t, "kept": k} for (n, t), k in zip(LAYERS, kept)]}
    for b, kept in ((30, (5, 10, 15)), (100, (20, 30, 50)))]}

PARETO = {"experiment": "pareto", "runs": [
    {"model": "convnet", "dataset": "digits", "method": m, "budget": b, "seed": 0,
     "relu_count": b, "relu_total": 448, "test_accuracy": acc, "teacher_test_accuracy": 0.95}
    for m, accs in (("pixel", (0.8, 0.9)), ("channel", (0.6, 0.85)), ("l1-prune", (0.5, 0.7)))
    for b, acc in zip((30, 100), accs)]}


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for doc in (RETENTION, CAPACITY, DISTRIBUTION, PARETO):
        (d / f"{doc['experiment']}.json").write_text(json.dumps(doc))
    return d


def test_render_all_writes_every_png_and_pdf(data_dir, tmp_path):
    out = tmp_path / "out"
    written = plots.render_all(data_dir, out)
    names = {"retention", "retention_error", "capacity", "distribution", "pareto"}
    assert {p.name for p in written} == {f"{n}.{f}" for n in names for f in ("png", "pdf")}
    for p in written:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF")
    from matplotlib.image import imread
    h, w = imread(out / "pareto.png").shape[:2]
    assert (w, h) == (7 * plots.DPI, int(4.5 * plots.DPI))


def test_render_all_skips_missing_results(tmp_path, data_dir):
    (data_dir / "capacity.json").unlink()
    written = {p.name for p in plots.render_all(data_dir, tmp_path / "o", formats=("png",))}
    assert "capacity.png" not in written and "pareto.png" in written


def test_retention_plot_draws_the_predicted_optima():
    fig = plots.plot_retention(RETENTION)
    axes = fig.axes
    assert len(axes) == 4  # a1 and a2 rows x two widths
    (paper, sharp) = [line for line in axes[0].get_lines() if line.get_label().endswith("optimum")]
    budgets = list(paper.get_xdata())
    assert list(paper.get_ydata()) == pytest.approx(
        [float(paper_optimum(8, 4, b).alpha[0]) for b in budgets])
    a2_sharp = [line for line in axes[2].get_lines() if "sharp" in line.get_label()][0]
    assert list(a2_sharp.get_ydata()) == pytest.approx(
        [float(sharp_optimum((8, 4), b).alpha[1]) for b in budgets])
    grid = fig.axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (2, 2)
    assert all(ax.get_xlabel() for ax in axes[2:])  # bottom row: budget axis
    assert all(ax.get_ylabel() for ax in axes[::2])  # left column: retention


def test_error_plot_bars_are_the_mean_errors():
    fig = plots.plot_error_by_ratio(RETENTION)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    # ratio 2 runs: |learned - paper| averaged over layers and runs, by hand
    ratio2 = [r for r in RETENTION["runs"] if r["widths"] == [8, 4]]
    by_hand = sum(sum(abs(a - p) for a, p in zip(r["learned_alpha"], r["predicted"]["paper"])) / 2
                  for r in ratio2) / len(ratio2)
    assert heights[0] == pytest.approx(by_hand)
    assert len(heights) == 2 * 3  # two predictions x (ratio 2, ratio 4, all)
    line = fig.axes[1].get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([1 / 3, 1, 3 / 5])  # a1 < a2 in 1 of 3, 2 of 2, 3 of 5 runs


def test_capacity_and_pareto_plot_their_values():
    fig = plots.plot_capacity(CAPACITY)
    sharp = [l for l in fig.axes[0].get_lines() if l.get_label().startswith("sharp")][0]
    assert sorted(sharp.get_ydata()) == [5, 7, 7, 10]
    fig = plots.plot_pareto(PARETO)
    pixel = [c for c in fig.axes[0].containers if c.get_label() == plots.PARETO_LABELS["pixel"]][0]
    assert list(pixel.lines[0].get_ydata()) == pytest.approx([80, 90])
    assert list(pixel.lines[0].get_xdata()) == pytest.approx([30, 100])
    assert fig.axes[0].get_xscale() == "log"


def test_distribution_plot_bars_before_and_after():
    fig = plots.plot_distribution(DISTRIBUTION)
    heights = [p.get_height() for p in fig.axes[1].patches]
    assert heights == [256, 128, 64, 20, 30, 50]


def test_cli(tmp_path, data_dir, capsys):
    assert main(["--data", str(tmp_path / "nowhere")]) == 2
    assert main(["--data", str(data_dir), "--out", str(tmp_path / "f"), "--formats", "png"]) == 0
    assert (tmp_path / "f" / "capacity.png").is_file()


def test_cli_bad_formats_and_results_files(tmp_path, data_dir, capsys):
    """Unknown formats and unreadable results files: one error line, exit code 2."""
    assert main(["--data", str(data_dir), "--out", str(tmp_path / "f"), "--formats", "png,bmpx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bmpx" in err
    (data_dir / "pareto.json").write_text("{bad")
    assert main(["--data", str(data_dir), "--out", str(tmp_path / "f"), "--formats", "png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pareto.json" in err
    (data_dir / "pareto.json").write_text('{"experiment": "pareto", "runs": [{"method": "pixel"}]}')
    assert main(["--data", str(data_dir), "--out", str(tmp_path / "f"), "--formats", "png"]) == 2
    assert "pareto.json" in capsys.readouterr().err


def test_retention_conditions_plot_means_per_condition():
    runs = [{**retention_run("digits", (8, 4), 6, s, (0, 0)), "recipe": recipe,
             "lambda_scale": scale, "learned_retained": learned,
             "predicted_retained": {"paper": [6, 0], "sharp": [3, 3]}}
            for recipe, scale, learned in (("paper", 1.0, [5, 1]), ("official", 0.1, [3, 3]))
            for s in range(2)]
    fig = plots.plot_retention_conditions({"experiment": "retention", "runs": runs})
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["digits\n(8, 4)\nB=6"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[-2:] == ["paper recipe, lambda x1", "official recipe, lambda x0.1"]  # paper first
    means = [line.get_ydata()[0] for line in fig.axes[0].lines
             if line.get_marker() == "o" and len(line.get_ydata()) == 1]
    assert means == pytest.approx([1 / 3, 1.0])  # (5, 1) is a third of the way to (3, 3)


def test_every_figure_reads_a_known_results_file():
    """Each figure's results file is one that read_results reads (else it is never drawn)."""
    from figures.results import EXPERIMENTS

    assert {experiment for experiment, _, _ in plots.FIGURES} <= set(EXPERIMENTS)
