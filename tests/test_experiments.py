"""snl_train.experiments: the quick sweeps end to end, the pieces checked by hand."""
import csv
import json
from fractions import Fraction

import pytest

from capacity.optimum import paper_optimum, sharp_optimum
from snl_train import experiments as ex


def test_retention_quick_end_to_end(tmp_path):
    doc = ex.experiment("retention", quick=True, seeds=1)
    runs = doc["runs"]
    assert len(runs) == 2 and {tuple(r["widths"]) for r in runs} == {(8, 4), (16, 4)}
    for r in runs:
        d1, d2 = r["widths"]
        x, y = r["learned_retained"]
        assert x + y <= r["budget"] == 6
        assert r["learned_alpha"] == [x / d1, y / d2]
        paper, sharp = paper_optimum(d1, d2, 6), sharp_optimum((d1, d2), 6)
        assert r["predicted"]["paper"] == pytest.approx([float(a) for a in paper.alpha])
        assert r["predicted"]["sharp"] == pytest.approx([float(a) for a in sharp.alpha])
        assert 0 <= r["test_accuracy"] <= 1
    overall = doc["summary"][-1]
    assert overall["setting"] == "overall" and overall["n"] == 2
    path = ex.save(doc, tmp_path / "retention.json")
    assert json.loads(path.read_text())["runs"] == runs
    rows = list(csv.DictReader(open(tmp_path / "retention.csv")))
    assert len(rows) == 2 and float(rows[0]["a1"]) == runs[0]["learned_alpha"][0]


def test_capacity_record_bounds_by_hand():
    spec = {"experiment": "capacity", "widths": [2, 1], "x": 1, "y": 1, "kind": "linearized",
            "restarts": 2, "steps": 200}
    r = ex.run_capacity(spec)
    # Thm 1: 2*2*1 + 1 + 2; Cor 1: a1 (1 + a2) d1 d2 + a2 d2 + 2; Cor 2: 2 x y + y + 2 (x = y = 1)
    assert (r["theorem1"], r["corollary1"], r["corollary2"], r["sharp"]) == (7, 5, 5, 5)
    assert 2 <= r["trained"] <= r["witness"] <= r["sharp"]
    pruned = ex.run_capacity({**spec, "kind": "pruned"})
    assert pruned["theorem1"] == 5  # Theorem 1 on widths (1, 1)
    assert pruned["witness"] == 4   # an all-ReLU width-1 layer 1 reaches only y + 2 pieces


def test_capacity_corollary2_is_exact_fraction_value():
    from capacity.bounds import corollary2_counts
    assert corollary2_counts(1, 1, 2, 1) == Fraction(5)


def test_fits_alternating_respects_the_bound_and_fits_easy_sets():
    # a linear network (no ReLU kept) cannot separate 3 alternating points
    assert not ex.fits_alternating(2, 2, 0, 0, 3, restarts=4, steps=100)
    assert ex.fits_alternating(3, 2, 3, 2, 3, restarts=8, steps=1500)
    assert ex.trained_capacity(2, 2, 0, 0, restarts=2, steps=100, limit=6) == 2


def test_l1_keep_drops_smallest_until_budget_and_keeps_one_per_layer():
    scores = [(0.1, "a", 0, 10), (2.0, "a", 1, 10), (0.5, "b", 0, 3), (0.2, "b", 1, 3),
              (3.0, "b", 2, 3)]
    keep = ex._l1_keep(scores, budget=17)   # total 29: drop a0 (19), b1 (16)
    assert [k for k, v in keep.items() if not v] == [("a", 0), ("b", 1)]
    keep = ex._l1_keep(scores, budget=0)    # infeasible: one channel per layer survives
    assert {k for k, v in keep.items() if v} == {("a", 1), ("b", 2)}


def test_l1_prune_run_meets_budget_with_whole_channels():
    spec = ex.pareto_specs(quick=True, seeds=1)[-1]
    assert spec["method"] == "l1-prune"
    r = ex.run_pareto({**spec, "budget": 150})
    assert r["relu_count"] <= 150
    sizes = {"features.2": 64, "features.5": 16, "classifier.1": 1}  # ReLUs per channel
    for layer in r["per_layer"]:
        assert layer["kept"] % sizes[layer["name"]] == 0 and layer["kept"] > 0


def test_cli_bad_input_exit_code_2(tmp_path, capsys):
    assert ex.main(["retention", "--seeds", "0", "--out", str(tmp_path / "r.json")]) == 2
    assert "--seeds: must be in [1, 1000], got '0'" in capsys.readouterr().err
    assert ex.main(["distribution", "--budgets", "1,x", "--out", str(tmp_path / "d.json")]) == 2


def test_cli_capacity_quick_in_two_processes(tmp_path):
    out = tmp_path / "capacity.json"
    assert ex.main(["capacity", "--quick", "--seeds", "2", "--jobs", "2", "--no-progress",
                    "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["experiment"] == "capacity" and len(doc["runs"]) == 4
    assert [(r["x"], r["kind"]) for r in doc["runs"]] == [
        (1, "linearized"), (1, "pruned"), (2, "linearized"), (2, "pruned")]


def test_default_sweeps_are_valid_and_span_both_regions():
    """Every default run has a budget the model can meet, and the retention sweep has
    budgets where the paper's closed form is feasible and where it is not, per dataset."""
    from capacity.optimum import closed_form_feasible

    specs = ex.retention_specs()
    assert all(0 <= s["budget"] < sum(s["widths"]) for s in specs)
    for ds in ("digits", "random"):
        feasible = {closed_form_feasible(*s["widths"], s["budget"]) for s in specs if s["dataset"] == ds}
        assert feasible == {True, False}
    ratios = {s["widths"][0] // s["widths"][1] for s in specs}
    assert ratios == {1, 2, 4, 8}
    for spec in ex.capacity_specs():
        assert 1 <= spec["x"] <= spec["widths"][0] and 1 <= spec["y"] <= spec["widths"][1]


def test_distribution_runs_resnet18_on_local_cifar100(tmp_path):
    """The Figure 4 sweep for the paper's ResNet-18 reads CIFAR-100 from --data-dir and
    reports per-layer counts of the 491,520 ReLUs within the budget (tiny files, 1 epoch)."""
    import pickle

    import numpy as np

    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 8), ("test", 4)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": [int(v) for v in rng.integers(0, 100, n)]}
        (root / name).write_bytes(pickle.dumps(batch))
    specs = ex.distribution_specs(model="resnet18", dataset="cifar100", data_dir=str(tmp_path),
                                  budgets=(5000,))
    assert len(specs) == 1 and specs[0]["epochs"] is None  # the paper's schedule by default
    spec = {**specs[0], "epochs": {"pretrain": 1, "search": 1, "finetune": 1}}
    result = ex.run_snl(spec)
    assert result["relu_total"] == 491520 == sum(s["total"] for s in result["per_layer"])
    assert result["relu_count"] == sum(s["kept"] for s in result["per_layer"]) <= 5000
    assert len(result["per_layer"]) == 16  # 8 BasicBlocks x 2 ReLU sites, none after the stem


def test_retention_specs_cross_recipes_and_lambda_scales():
    specs = ex.retention_specs(recipes=("paper", "official"), lambda_scales=(0.1, 1, 10),
                               grid="robustness")
    assert len(specs) == 2 * 3 * 2 * len(ex.ROBUSTNESS_SETTINGS) * 3
    assert {s["lam"] for s in specs} == {1e-5, 1e-4, 1e-3}
    assert {(s["recipe"], s["lambda_scale"]) for s in specs} == {
        (r, k) for r in ("paper", "official") for k in (0.1, 1, 10)}
    for spec in specs:  # the two optima differ at every robustness setting
        w, b = spec["widths"], spec["budget"]
        assert paper_optimum(*w, b).retained != sharp_optimum(w, b).retained
    default = ex.retention_specs()
    assert len(default) == 102 and {(s["recipe"], s["lam"]) for s in default} == {("paper", 1e-4)}
    with pytest.raises(ValueError, match="grid"):
        ex.retention_specs(grid="some")


def test_official_retention_run_uses_the_official_recipe():
    spec = ex.retention_specs(quick=True, seeds=1, recipes=("official",), lambda_scales=(10,))[0]
    cfg = ex._run_config(spec)
    assert (cfg.recipe, cfg.search.lam, cfg.search.batch_size, cfg.search.weight_decay) == (
        "official", 1e-3, 128, 0.0)
    assert (cfg.search.max_epochs, cfg.finetune.epochs) == (25, 1)  # the sweep's epochs
    record = ex.run_retention(spec)
    assert (record["recipe"], record["lam"]) == ("official", 1e-3)
    assert 0 <= record["test_selected_accuracy"] <= 1


def retention_record(recipe, scale, seed, learned, dataset="digits"):
    return {"dataset": dataset, "widths": [16, 16], "budget": 8, "seed": seed, "recipe": recipe,
            "lambda_scale": scale, "lam": 1e-4 * scale, "budget_reached_by_search": seed != 2,
            "learned_retained": list(learned), "learned_alpha": [v / 16 for v in learned],
            "predicted_retained": {"paper": [8, 0], "sharp": [4, 4]},
            "predicted": {"paper": [0.5, 0.0], "sharp": [0.25, 0.25]}}


def test_condition_table_positions_and_paired_differences_by_hand():
    """Positions 0.5 / 0.25 / 0 (baseline) against 1 / 0.5 / 0.5: paired differences 0.5,
    0.25, 0.5."""
    runs = [retention_record("paper", 1.0, s, x) for s, x in enumerate(((6, 2), (7, 1), (8, 0)))]
    runs += [retention_record("official", 10.0, s, x) for s, x in enumerate(((4, 4), (6, 2), (6, 2)))]
    rows = ex.condition_table(runs)
    assert [(r["recipe"], r["lambda_scale"]) for r in rows] == [("paper", 1.0), ("official", 10.0)]
    base, other = rows
    assert base["position"]["mean"] == pytest.approx(0.25) and "position_vs_baseline" not in base
    assert other["position"]["mean"] == pytest.approx(2 / 3)
    assert other["position"]["between"] == 1.0 and base["budget_reached"] == pytest.approx(2 / 3)
    diff = other["position_vs_baseline"]
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(1.25 / 3)
    assert diff["low"] < diff["mean"] < diff["high"]
    assert set(other["by_dataset"]) == {"digits"}


def test_cli_bad_recipe_or_lambda_scale(tmp_path, capsys):
    for argv in (["--recipe", "paper,typo"], ["--lambda-scale", "0"], ["--lambda-scale", "1,x"]):
        assert ex.main(["retention", *argv, "--out", str(tmp_path / "r.json")]) == 2
        assert capsys.readouterr().err.startswith("python -m snl_train.experiments: error: --")
