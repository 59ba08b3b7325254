"""Fixed allocations in the trainer (``--allocation``), the allocation experiment and its figure."""
import json

import matplotlib
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

matplotlib.use("Agg")

from capacity.allocation import Site, allocate  # noqa: E402
from figures import plots  # noqa: E402
from snl_train import experiments as ex  # noqa: E402
from snl_train.__main__ import main  # noqa: E402
from snl_train.config import RunConfig  # noqa: E402
from snl_train.data import DataBundle, load_dataset  # noqa: E402
from snl_train.gates import add_gates, gate_sites  # noqa: E402
from snl_train.models import build_model  # noqa: E402
from snl_train.trainer import AllocationError, Trainer, allocation_sites, binarize_to_quotas  # noqa: E402


# ------------------------------------------------------------------ binarization to quotas

def test_binarize_to_quotas_keeps_the_highest_ranked_units_per_site():
    net = add_gates(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU()),
                    example_input=torch.zeros(1, 3))
    (n1, g1), (n2, g2) = gate_sites(net)
    with torch.no_grad():
        g1.c.copy_(torch.tensor([0.9, 0.005, 0.5, 0.5]))
        g2.c.copy_(torch.tensor([0.7, 0.8, -0.3]))
    counts = binarize_to_quotas(net, {n1: 3, n2: 1}, 0.01, torch.zeros(1, 3))
    assert [s.kept for s in counts] == [3, 1]
    # 0.9, then the tie at 0.5 goes to both (3 wanted); below epsilon never needed here
    assert g1.c.tolist() == [1, 0, 1, 1] and g2.c.tolist() == [0, 1, 0]
    counts = binarize_to_quotas(net, {n1: 2}, 0.01, torch.zeros(1, 3))  # a missing site keeps 0
    assert g1.c.tolist() == [1, 0, 1, 0] and [s.kept for s in counts] == [2, 0]
    counts = binarize_to_quotas(net, {n1: 4, n2: 3}, 0.01, torch.zeros(1, 3))  # even c <= epsilon
    assert [s.kept for s in counts] == [4, 3]


def test_binarize_to_quotas_channel_units_and_bad_quotas():
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    x = torch.zeros(1, 1, 4, 4)
    add_gates(net, granularity="channel", example_input=x)
    (name, gate), = gate_sites(net)
    with torch.no_grad():
        gate.c.copy_(torch.tensor([0.5, 0.9, 0.7]).view(3, 1, 1))
    assert binarize_to_quotas(net, {name: 32}, 0.01, x)[0].kept == 32
    assert gate.c.flatten().tolist() == [0, 1, 1]
    assert allocation_sites(net, x) == [Site(name, 48, 16, 2)]
    for bad in (8, 64):
        with pytest.raises(ValueError, match="not a multiple of 16 in 0..48"):
            binarize_to_quotas(net, {name: bad}, 0.01, x)


def test_allocation_sites_take_p_from_the_gated_activation():
    """ReLU and LeakyReLU sites have p = 2, ReLU6 and Hardtanh sites p = 3."""
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU6(),
                        nn.Linear(4, 4), nn.LeakyReLU(0.1), nn.Linear(4, 4), nn.Hardtanh(), nn.Linear(4, 2))
    add_gates(net, example_input=torch.zeros(1, 3))
    assert [s.pieces for s in allocation_sites(net, torch.zeros(1, 3))] == [2, 3, 2, 3]


# ------------------------------------------------------------------ the trainer, per kind

def tiny(model="mlp", widths=(8, 4), budget=5, allocation="learned", granularity="pixel"):
    cfg = RunConfig(model=model, widths=widths, dataset="random", budget=budget, threads=1,
                    allocation=allocation)
    cfg.pretrain.epochs, cfg.pretrain.batch_size, cfg.pretrain.milestones = 1, 32, ()
    cfg.search.max_epochs, cfg.search.batch_size, cfg.search.lam = 1, 32, 0.05
    cfg.search.granularity = granularity
    cfg.finetune.epochs, cfg.finetune.batch_size = 1, 32
    return cfg


def images(n=32):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))
    return DataBundle(ds, ds, 3, (1, 8, 8), "random")


def train(cfg, data=None, out_dir=None):
    data = data or load_dataset("random", n=48, dim=8, num_classes=3, seed=0)
    factory = lambda: build_model(cfg.model, data.num_classes, data.in_shape, cfg.widths)  # noqa: E731
    return Trainer(cfg, factory, data, out_dir=out_dir).run()


MLP_SITES = [Site("features.2", 8, 1, 2), Site("features.4", 4, 1, 2)]
# SmallConvNet(width 2) on 8x8: conv 2 x 8x8, conv 4 x 4x4, linear 64; channel-wise units 64, 16, 1
CONV_SITES = [Site("features.2", 128, 64, 2), Site("features.5", 64, 16, 2), Site("classifier.1", 64, 1, 2)]


@pytest.mark.parametrize("model, widths, granularity, sites, budget, allocation", [
    ("mlp", (8, 4), "pixel", MLP_SITES, 5, "sharp"),
    ("mlp", (8, 4), "pixel", MLP_SITES, 5, "uniform"),
    ("mlp", (8, 4), "pixel", MLP_SITES, 3, "paper"),
    ("mlp", (8, 4), "pixel", MLP_SITES, 5, {"features.4": 4}),
    ("convnet", (2,), "channel", CONV_SITES, 90, "sharp"),
    ("convnet", (2,), "channel", CONV_SITES, 90, "uniform"),
    ("convnet", (2,), "channel", CONV_SITES, 90, {"features.2": 64, "features.5": 16, "classifier.1": 3}),
    ("convnet", (2,), "pixel", [Site(s.name, s.total, 1, 2) for s in CONV_SITES], 90, "uniform"),
])
def test_kept_counts_equal_the_quotas_and_the_result_records_them(
        tmp_path, model, widths, granularity, sites, budget, allocation):
    """Per-site kept counts after binarization are the allocation's quotas; total <= budget."""
    if isinstance(allocation, dict):
        (tmp_path / "a.json").write_text(json.dumps(allocation))
        expected = [allocation.get(s.name, 0) for s in sites]
        allocation = str(tmp_path / "a.json")
    else:
        expected = list(allocate(allocation, sites, budget).counts)
    cfg = tiny(model, widths, budget, allocation, granularity)
    result = train(cfg, images() if model == "convnet" else None, tmp_path / "run")
    assert [layer["kept"] for layer in result["per_layer"]] == expected
    assert result["relu_count"] == sum(expected) <= budget
    report = json.loads((tmp_path / "run" / "result.json").read_text())["allocation"]
    assert report["allocation"] == allocation and report["quotas"] == dict(
        zip([s.name for s in sites], expected))
    assert report["total"] == sum(expected)


def test_computed_totals_spend_the_budget_when_units_allow():
    # pixel-wise units of 1: every computed kind spends the budget exactly
    for kind in ("sharp", "uniform", "paper"):
        assert allocate(kind, MLP_SITES, 7).total == 7
    # channel-wise maps of 64 and 16 ReLUs: 90 is out of reach, 80 = 64 + 16 is the most
    assert allocate("sharp", CONV_SITES, 90).total == 90  # the linear layer's units fill it up
    assert allocate("sharp", CONV_SITES[:2], 90).total == allocate("uniform", CONV_SITES[:2], 90).total == 80


def test_a_count_that_is_not_a_whole_number_of_channels_is_refused_before_training(tmp_path):
    (tmp_path / "a.json").write_text('{"features.2": 3}')
    cfg = tiny("convnet", (2,), 90, str(tmp_path / "a.json"), "channel")
    with pytest.raises(AllocationError, match="count 3 is not a multiple of its unit of 64"):
        train(cfg, images(), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ------------------------------------------------------------------ the command line

TINY = ["--dataset", "random", "--widths", "8,4", "--pretrain-epochs", "1", "--search-epochs", "1",
        "--finetune-epochs", "1", "--threads", "1", "--quiet"]


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("allocation, extra, message", [
    ({"features.9": 1}, [], "unknown site 'features.9'"),
    ({"features.2": 9}, [], "exceeds its 8 ReLUs"),
    ({"features.2": 4, "features.4": 2}, [], "6 ReLUs in all, more than the budget 5"),
    ({"features.2": -1}, [], "non-negative integer"),
    ("{not json", [], "is not valid JSON"),
    ("[3, 2]", [], "must hold a JSON object"),
    (None, ["--allocation", "sharpest"], "neither learned, paper, sharp, uniform nor a readable"),
    (None, ["--allocation", "paper", "--widths", "4,4,4"], "two-hidden-layer MLP"),
    (None, ["--allocation", "paper", "--model", "convnet", "--widths", "2", "--dataset", "digits"],
     "two-hidden-layer MLP"),
])
def test_bad_allocations_give_one_line_and_exit_2_before_training(tmp_path, capsys, allocation,
                                                                 extra, message):
    argv = [*TINY, "--budget", "5"]
    if allocation is not None:
        path = tmp_path / "a.json"
        path.write_text(allocation if isinstance(allocation, str) else json.dumps(allocation))
        argv += ["--allocation", str(path)]
    code, out, err = run(capsys, *argv, *extra, "--out", str(tmp_path / "run"))
    assert code == 2 and out == ""
    assert err.startswith("python -m snl_train: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained, nothing written


def test_the_log_says_which_allocation_was_applied(tmp_path, capsys):
    argv = [a for a in TINY if a != "--quiet"]
    code, out, _ = run(capsys, *argv, "--budget", "5", "--allocation", "sharp", "--out", str(tmp_path))
    assert code == 0
    assert "allocation sharp: keeps 5 ReLUs as features.2 3, features.4 2\n" in out
    assert "retained per layer: kept (sharp) [3, 2], paper optimum ['4', '1']" in out


def test_resume_keeps_the_allocation_and_refuses_another(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run(capsys, *TINY, "--budget", "5", "--allocation", "uniform", "--out", out)[0] == 0
    first = json.loads((tmp_path / "run" / "result.json").read_text())
    code, _, err = run(capsys, *TINY, "--budget", "5", "--allocation", "sharp", "--out", out, "--resume")
    assert code == 2 and err.count("\n") == 1
    assert "was written with --allocation uniform, this run has sharp" in err
    assert run(capsys, *TINY, "--budget", "5", "--allocation", "uniform", "--out", out, "--resume")[0] == 0
    again = json.loads((tmp_path / "run" / "result.json").read_text())
    assert again["allocation"] == first["allocation"] and again["per_layer"] == first["per_layer"]


# ------------------------------------------------------------------ the experiment

def test_quick_experiment_end_to_end_and_its_figure(tmp_path):
    out = tmp_path / "allocation.json"
    assert ex.main(["allocation", "--quick", "--jobs", "1", "--no-progress", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    runs = doc["runs"]
    assert {(tuple(r["widths"]), r["seed"]) for r in runs} == {((8, 4), 0), ((8, 4), 1),
                                                             ((6, 4, 4), 0), ((6, 4, 4), 1)}
    for r in runs:
        learned = r["allocations"]["learned"]
        assert list(r["allocations"]) == (["learned", "paper", "sharp", "uniform"]
                                          if len(r["widths"]) == 2 else ["learned", "sharp", "uniform"])
        sites = [Site(f"s{i}", w, 1, 2) for i, w in enumerate(r["widths"])]
        for name, entry in r["allocations"].items():
            assert entry["relu_count"] == sum(entry["kept"]) == learned["relu_count"] <= r["budget"]
            if name != "learned":  # each fixed allocation keeps what it prescribes for that count
                assert tuple(entry["kept"]) == allocate(name, sites, learned["relu_count"]).counts
            assert entry["train_accuracy"] == entry["test_accuracy"]  # random labels: test = train
        assert r["region"] == ex.allocation_region(r["widths"], learned["relu_count"])
    for row in doc["paired"]:
        mine = [r for r in runs if tuple(r["widths"]) == tuple(row["setting"]["widths"])]
        for name, d in row["difference"].items():
            diffs = [r["allocations"][name]["train_accuracy"] - r["allocations"]["learned"]["train_accuracy"]
                     for r in mine]
            assert d["mean"] == pytest.approx(sum(diffs) / len(diffs))
            assert d["low"] <= d["mean"] <= d["high"]
    assert {row["setting"]["region"] for row in doc["paired_by_region"]} == {"inside", "three layers"}
    ax = plots.plot_allocation(doc).axes[0]  # random labels, widths (8, 4)
    mine = [r for r in runs if r["widths"] == [8, 4]]
    for name in ("learned", "paper", "sharp", "uniform"):
        bars = next(c for c in ax.containers if c.get_label() == plots.ALLOCATION_STYLES[name][0])
        mean = sum(r["allocations"][name]["train_accuracy"] for r in mine) / len(mine)
        assert bars.lines[0].get_ydata()[0] == pytest.approx(mean)


def test_a_branch_keeps_its_budget_and_equals_a_separate_run(tmp_path):
    """Sharing pretraining and search changes nothing: a fresh run with that allocation and
    budget gives the same network; a branch keeps the budget it is given, not the nominal one."""
    spec = next(s for s in ex.allocation_specs(quick=True) if s["widths"] == [8, 4] and s["seed"] == 0)
    snapshot = tmp_path / "searched.pt"
    _, learned = ex._allocation_run(spec, "learned", tmp_path / "learned", snapshot, None)
    assert snapshot.exists() and learned["relu_budget"] == 5
    _, branch = ex._allocation_run(spec, "uniform", tmp_path / "uniform", snapshot, learned["relu_count"])
    cfg = ex._run_config(spec)
    cfg.allocation, cfg.budget = "uniform", learned["relu_count"]
    alone = ex._trainer(spec, cfg).run()
    assert alone["per_layer"] == branch["per_layer"] and alone["test_accuracy"] == branch["test_accuracy"]
    _, sharp = ex._allocation_run(spec, "sharp", tmp_path / "sharp", snapshot, 3)
    assert [layer["kept"] for layer in sharp["per_layer"]] == [2, 1]
    assert sharp["relu_budget"] == 3 and sharp["allocation"]["quotas"] == {"features.2": 2, "features.4": 1}


def test_regions_of_the_default_sweep():
    specs = ex.allocation_specs()
    regions = {(tuple(s["widths"]), s["budget"]): ex.allocation_region(s["widths"], s["budget"])
               for s in specs}
    assert regions[(16, 16), 8] == regions[(128, 16), 8] == "below"
    assert regions[(16, 16), 16] == regions[(32, 16), 40] == "inside"
    assert regions[(16, 16), 24] == regions[(64, 16), 56] == "above"
    assert regions[(64, 32, 16), 24] == "three layers"
    assert {len({s["seed"] for s in specs if (tuple(s["widths"]), s["budget"]) == k}) for k in regions} == {3}


def test_paired_table_example_and_verdicts():
    import doctest

    from figures import stats

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(stats.paired_table, "paired_table", globs=vars(stats)):
        runner.run(test)
    assert runner.summarize(verbose=False) == (0, 3)
    rows = [{"k": 1, "scores": {"a": 0.5, "b": 0.7 + d, "c": 0.5 - d}} for d in (0.0, 0.01, 0.02)]
    row = stats.paired_table(rows, ("k",), "a")[0]
    assert row["verdict"] == {"b": "better", "c": "no clear difference"}  # c: -0.01 +- 0.025
    assert row["n"] == 3 and row["mean"]["b"] == pytest.approx(0.71)
