"""Edge cases of snl_train.trainer that a wrong trainer could otherwise pass: ``exclude``
(the budget minus the excluded sites' ReLUs, excluded sites keep all theirs), the loss of each
stage (the L1 penalty on |c|, the distillation term written out independently), and the
budget's boundaries (fraction 0, budget == total, above total). Tiny MLPs, no epochs where
none are needed."""
import json
import re
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Subset, TensorDataset

from capacity.allocation import Site, allocate
from snl_train.accounting import SiteCount
from snl_train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snl_train.config import RunConfig
from snl_train.data import load_dataset
from snl_train.gates import add_gates, gate_parameters, gate_sites
from snl_train.models import build_model
from snl_train.speed import precision_warning
from snl_train.trainer import (_DEFAULTS, STAGES, AllocationError, BudgetError, NonFiniteLoss, Trainer,
                               _config_differences, _flat_defaults, _option_name, _shown,
                               allocation_sites, batches, binarize_within_budget, evaluate, kd_loss,
                               plan_allocation, resolve_budget, retention_report)

WIDTHS = (12, 6)  # two ReLU sites: 12 + 6 ReLUs
TOTAL = sum(WIDTHS)


def config(budget=None, fraction=None, epochs=(0, 0, 0), **search) -> RunConfig:
    cfg = RunConfig(model="mlp", widths=WIDTHS, dataset="random", budget=budget,
                    budget_fraction=fraction, threads=1)
    cfg.pretrain.epochs, cfg.search.max_epochs, cfg.finetune.epochs = epochs
    cfg.pretrain.batch_size = cfg.search.batch_size = cfg.finetune.batch_size = 32
    for key, value in search.items():
        setattr(cfg.search, key, value)
    return cfg


def trainer(cfg) -> Trainer:
    data = load_dataset("random", n=32, dim=8, num_classes=3, seed=cfg.seed)
    return Trainer(cfg, lambda: build_model("mlp", data.num_classes, data.in_shape, cfg.widths), data)


def site_names(result):
    return [layer["name"] for layer in result["per_layer"]]


# ----------------------------------------------------------------------------- exclude

def test_excluded_site_keeps_all_its_relus_and_the_rest_gets_the_budget_minus_them():
    """Budget 9 with the 6-wide site excluded: it keeps its 6, the gated site at most 3.

    With no search epoch every gate is still at c = 1, so binarization keeps exactly as many
    of the 12 gated ReLUs as fit: 9 - 6 = 3 (the whole budget, 9, would give 12 + 6 = 15)."""
    probe = trainer(config(budget=TOTAL)).run()
    first, second = site_names(probe)
    result = trainer(config(budget=9, exclude=(second,))).run()
    assert [(layer["name"], layer["total"], layer["kept"]) for layer in result["per_layer"]] == [
        (first, 12, 3), (second, 6, 6)]
    assert result["relu_count"] == 9 == result["relu_budget"]


def test_excluded_sites_may_fill_the_budget_but_not_exceed_it():
    """Excluded ReLUs equal to the budget leave nothing to the gates; one more is refused."""
    _, second = site_names(trainer(config(budget=TOTAL)).run())
    result = trainer(config(budget=6, exclude=(second,))).run()
    assert [layer["kept"] for layer in result["per_layer"]] == [0, 6]
    with pytest.raises(BudgetError, match="excluded sites alone keep 6 ReLUs, more than the budget 5"):
        trainer(config(budget=5, exclude=(second,))).run()


def test_binarization_within_a_roomy_budget_drops_a_slope_exactly_at_epsilon():
    """Room for every ReLU, yet c == epsilon is not kept: kept means c > epsilon."""
    x = torch.zeros(1, 2)
    net = add_gates(torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU()), example_input=x)
    gate = gate_sites(net)[0][1]
    above = torch.nextafter(torch.tensor(0.25), torch.tensor(1.0)).item()
    with torch.no_grad():
        gate.c.copy_(torch.tensor([0.25, above, 0.125, 2.0]))
    (site,) = binarize_within_budget(net, 4, 0.25, x)
    assert site.kept == 2 and gate.c.tolist() == [0.0, 1.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- loss terms

def _in_stage(stage: str, **search) -> Trainer:
    """A trainer moved to ``stage`` (no epochs run): a teacher and, from search on, gates."""
    t = trainer(config(budget=TOTAL, epochs=(0, 1, 1), **search))
    t._start()
    for _ in range(STAGES.index(stage)):  # bounded: a trainer that never gets there fails, not hangs
        t._advance()
    assert t.stage == stage
    return t


def _batch(t: Trainer):
    torch.manual_seed(1)
    x, y = t.data.train.tensors[0][:8], t.data.train.tensors[1][:8]
    return torch.randn(8, 3), x, y


def _set_gates(t: Trainer, fill) -> list:
    values = []
    with torch.no_grad():
        for _, gate in gate_sites(t.model):
            gate.c.copy_(fill(gate.c))
            values.append(gate.c.clone())
    return values


def test_the_search_penalty_is_lambda_times_the_sum_of_absolute_slopes():
    """A negative c is penalized as much as a positive one; the penalty is lam * sum |c|."""
    t = _in_stage("search", lam=0.25)
    logits, x, y = _batch(t)
    _set_gates(t, torch.zeros_like)
    base = t._loss(logits, x, y).item()
    values = _set_gates(t, lambda c: -torch.linspace(0.5, 1.5, c.numel()).view_as(c))
    negative = t._loss(logits, x, y).item()
    l1 = sum(float(v.abs().sum()) for v in values)
    assert negative - base == pytest.approx(0.25 * l1, rel=1e-5)
    _set_gates(t, torch.neg)
    assert t._loss(logits, x, y).item() == pytest.approx(negative, rel=1e-6)


def _distillation(logits, teacher, y, temperature, weight):
    """(1 - w) CE + w T^2 KL(teacher_T || student_T), written out from the definitions."""
    p = torch.softmax(teacher / temperature, dim=1)
    log_q = torch.log_softmax(logits / temperature, dim=1)
    kl = (p * (torch.log(p) - log_q)).sum(dim=1).mean()
    ce = -torch.log_softmax(logits, dim=1).gather(1, y[:, None]).mean()
    return (1 - weight) * ce + weight * temperature ** 2 * kl


@pytest.mark.parametrize("stage", ["search", "finetune"])
def test_search_and_finetune_losses_distil_from_the_pretrained_teacher(stage):
    """With every c = 0 (no penalty) the loss is the distillation term of the stage's config."""
    t = _in_stage("search", temperature=3.0, kd_weight=0.25)
    t.config.finetune.temperature, t.config.finetune.kd_weight = 2.0, 0.75
    if stage == "finetune":
        t._advance()
    logits, x, y = _batch(t)
    _set_gates(t, torch.zeros_like)
    with torch.no_grad():
        teacher = t.teacher(x)
    assert not torch.allclose(teacher, logits)
    s = getattr(t.config, stage)
    expected = _distillation(logits, teacher, y, s.temperature, s.kd_weight)
    assert t._loss(logits, x, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_finetune_has_no_penalty_and_pretraining_is_plain_cross_entropy():
    t = _in_stage("finetune", lam=10.0)
    logits, x, y = _batch(t)
    _set_gates(t, torch.zeros_like)
    without = t._loss(logits, x, y).item()
    _set_gates(t, torch.ones_like)
    assert t._loss(logits, x, y).item() == pytest.approx(without, rel=1e-6)
    p = trainer(config(budget=TOTAL))
    p._start()
    assert p._loss(logits, x, y).item() == pytest.approx(F.nll_loss(
        torch.log_softmax(logits, 1), y).item(), rel=1e-6)


# ----------------------------------------------------------------------------- budget bounds

def test_budget_boundaries_resolve_exactly():
    assert resolve_budget(18, fraction=0) == 0
    assert resolve_budget(18, fraction=1) == 18
    assert resolve_budget(18, budget=18) == 18 and resolve_budget(18, budget=0) == 0
    assert resolve_budget(0, budget=0) == 0
    with pytest.raises(BudgetError, match="ReLU budget 19 exceeds the model's 18 ReLUs"):
        resolve_budget(18, budget=19)
    with pytest.raises(BudgetError, match=r"budget fraction must be in \[0, 1\], got -0.1"):
        resolve_budget(18, fraction=-0.1)
    with pytest.raises(BudgetError, match=r"budget fraction must be in \[0, 1\], got 1.5"):
        resolve_budget(18, fraction=1.5)


def test_a_run_at_fraction_zero_keeps_nothing_and_at_the_total_keeps_everything():
    zero = trainer(config(fraction=0.0)).run()
    assert zero["relu_budget"] == 0 == zero["relu_count"]
    assert [layer["kept"] for layer in zero["per_layer"]] == [0, 0]
    # latency at 0 kept ReLUs: the plaintext time alone
    assert zero["latency"]["relu_count"] == 0 and zero["latency"]["relu_seconds"] == 0
    assert zero["online_latency_s"] == zero["latency"]["plaintext_seconds"] > 0
    full = trainer(config(budget=TOTAL, epochs=(0, 3, 0))).run()
    # the count before the search already meets the budget: no search epoch runs
    assert full["budget_reached_by_search"] is True and full["relu_count_before"] == TOTAL
    assert full["relu_count"] == TOTAL == full["relu_total"]
    assert full["latency"]["relu_count"] == TOTAL


def test_a_budget_above_the_total_is_refused_before_training():
    with pytest.raises(BudgetError, match=f"ReLU budget {TOTAL + 1} exceeds the model's {TOTAL} ReLUs"):
        trainer(config(budget=TOTAL + 1)).run()


# ----------------------------------------------------------------------------- fixed allocations

def _logged(cfg, out_dir=None):
    """A trainer whose log lines are collected in ``trainer.lines``."""
    data = load_dataset("random", n=32, dim=8, num_classes=3, seed=cfg.seed)
    lines = []
    t = Trainer(cfg, lambda: build_model("mlp", data.num_classes, data.in_shape, cfg.widths), data,
                out_dir=out_dir, log=lines.append)
    t.lines = lines
    return t


@pytest.mark.parametrize("kind", ["uniform", "sharp", "paper"])
def test_a_fixed_allocation_keeps_capacitys_counts_per_site_and_says_so(kind):
    """Budget 9 over sites of 12 and 6 ReLUs: each site keeps what capacity.allocation gives."""
    cfg = config(budget=9)
    cfg.allocation = kind
    t = _logged(cfg)
    result = t.run()
    first, second = site_names(result)
    plan = allocate(kind, [Site(first, 12, 1, 2), Site(second, 6, 1, 2)], 9)
    k1, k2 = plan.counts
    assert [layer["kept"] for layer in result["per_layer"]] == [k1, k2]
    assert result["allocation"] == {"allocation": kind, "kind": plan.kind,
                                    "quotas": {first: k1, second: k2}, "total": plan.total,
                                    "budget": 9, "ties": plan.ties, "rule": plan.rule}
    assert f"allocation {kind}: keeps {plan.total} ReLUs as {first} {k1}, {second} {k2}" in t.lines


def test_an_allocation_shares_only_what_the_excluded_sites_leave(tmp_path):
    """Budget 9 with the 6-wide site excluded: a counts file may give the gated site 3, not 4."""
    _, second = site_names(trainer(config(budget=TOTAL)).run())
    first = "features.2"
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({first: 3}))
    bad.write_text(json.dumps({first: 4}))
    cfg = config(budget=9, exclude=(second,))
    cfg.allocation = str(good)
    result = trainer(cfg).run()
    assert [layer["kept"] for layer in result["per_layer"]] == [3, 6]
    assert result["allocation"]["quotas"] == {first: 3} and result["allocation"]["budget"] == 3
    cfg.allocation = str(bad)
    with pytest.raises(AllocationError):
        trainer(cfg).run()


def test_the_paper_allocation_needs_a_two_layer_mlp():
    cfg = config(budget=3)
    cfg.widths, cfg.allocation = (8,), "paper"
    with pytest.raises(AllocationError, match=r"^--allocation paper needs a two-hidden-layer MLP \(--model "
                       r"mlp --widths D1,D2\); this run has --model mlp with widths 8$"):
        trainer(cfg).run()


def test_an_unreadable_allocation_file_is_named_with_the_reason(tmp_path):
    sites = [Site("a", 4, 1, 2)]
    binary = tmp_path / "counts.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    for path, reason in ((tmp_path / "missing.json", "No such file or directory"),
                         (tmp_path, "Is a directory"), (binary, "not a text file")):
        with pytest.raises(AllocationError, match=re.escape(
                f"--allocation {path} is neither learned, paper, sharp, uniform nor a readable "
                f"JSON file ({reason})")):
            plan_allocation(str(path), sites, 2)
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"a": 3}))
    with pytest.raises(AllocationError, match="^allocation keeps 3 ReLUs in all, more than the budget 2$"):
        plan_allocation(str(counts), sites, 2)  # capacity's error, as the trainer's own
    assert plan_allocation(str(counts), sites, 3).counts == (3,)
    assert plan_allocation("uniform", sites, 2).counts == (2,)


def test_allocation_sites_name_totals_units_and_pieces():
    """A channel gate over 2 x 3 x 3 maps: 18 ReLUs in units of 9; ReLU6: 3 linear pieces."""
    x = torch.zeros(1, 1, 3, 3)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.ReLU6(), torch.nn.Flatten(),
                              torch.nn.Linear(18, 5), torch.nn.ReLU())
    add_gates(net, granularity="channel", example_input=x)
    assert allocation_sites(net, x) == [Site("1", 18, 9, 3), Site("4", 5, 1, 2)]


# ----------------------------------------------------------------------------- latency budgets

def _latency_cost():
    """The cost model of the tiny MLP on the LAN (per kept ReLU, per active site, linear part)."""
    from snl_train.latency import latency_plan

    return latency_plan(build_model("mlp", 3, (8,), WIDTHS), torch.zeros(1, 8), 1.0, "lan").cost


def _latency_config(seconds, epochs=(0, 1, 0), **search) -> RunConfig:
    cfg = config(epochs=epochs, **search)
    cfg.latency_budget, cfg.network = seconds, "lan"
    return cfg


def test_a_latency_budget_for_three_relus_at_one_site_is_kept_and_reported():
    """T = linear + rho + 3 beta (and a hair): one site with 3 ReLUs fits, a fourth or a second
    site does not. The search's one epoch cannot get there; binarization does."""
    from capacity.latency import latency_sharp_optimum

    cost = _latency_cost()
    exact = cost.linear + cost.per_layer + 3 * cost.per_relu
    seconds = float(exact) * (1 + 1e-12)
    t = _logged(_latency_config(seconds, lam=1e-6))
    result = t.run()
    assert result["relu_budget"] == 3 and result["relu_count"] == 3
    assert sorted(layer["kept"] for layer in result["per_layer"]) == [0, 3]
    lat = result["latency_budget"]
    assert lat["estimated_seconds"] == pytest.approx(float(exact), rel=1e-12)
    assert lat["within_budget"] and lat["reached_by_search"] is False and lat["group_penalty"] == 1.0
    first, second = site_names(result)
    opt = latency_sharp_optimum([12, 6], Fraction(repr(seconds)), cost)  # nothing excluded
    assert lat["predicted_sharp"] == {"integer_retained": list(max(opt.integer_retained)),
                                      "integer_ties": opt.integer_ties,
                                      "active_sites": [[first, second][i] for i in opt.always_active]}
    everything = float(cost.linear + 2 * cost.per_layer + 18 * cost.per_relu)
    assert (f"search: budget NOT reached after 1 epochs: estimated {everything:.4f} s on lan "
            f"(budget {seconds:.4f} s), 18 ReLUs in 2 of 2 sites") in t.lines
    assert (f"binarized: estimated {float(exact):.4f} s on lan (budget {seconds:.4f} s), "
            f"3 ReLUs in 1 of 2 sites") in t.lines
    assert any(line.endswith(f"budget 3 (the most a network within the latency budget of {seconds:g} "
                             f"s keeps)") for line in t.lines)


def test_a_latency_budget_run_resumed_mid_search_gives_the_uninterrupted_result(tmp_path):
    """The budget a latency run searches for is derived again on resume, not lost or changed."""
    cost = _latency_cost()
    seconds = float(cost.linear + cost.per_layer + 3 * cost.per_relu) * (1 + 1e-12)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("latency", "online_latency_s")}  # noqa: E731
    expected = strip(_logged(_latency_config(seconds, epochs=(1, 3, 1), lam=1e-6), tmp_path / "full").run())

    def interrupt(trainer):
        if trainer.stage == "search" and trainer.epoch == 1:
            raise KeyboardInterrupt

    cut = _logged(_latency_config(seconds, epochs=(1, 3, 1), lam=1e-6), tmp_path / "cut")
    cut.add_callback("on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    resumed = _logged(_latency_config(seconds, epochs=(1, 3, 1), lam=1e-6), tmp_path / "cut")
    result = strip(resumed.run(resume=True))
    assert resumed.budget == 3 and result["relu_budget"] == 3 and result["relu_count"] == 3
    assert result == expected


def test_a_latency_budget_that_everything_fits_is_reached_before_any_search_epoch():
    cost = _latency_cost()
    seconds = float(cost.linear + 2 * cost.per_layer + 18 * cost.per_relu) * (1 + 1e-9)
    t = _logged(_latency_config(seconds, epochs=(0, 3, 0)))
    result = t.run()
    assert result["latency_budget"]["reached_by_search"] is True and result["relu_count"] == TOTAL
    assert any(line.startswith("search: budget reached after 0 epochs: estimated") for line in t.lines)


def test_a_latency_budget_below_the_linear_layers_is_a_budget_error():
    cost = _latency_cost()
    with pytest.raises(BudgetError, match="is below the cost of the linear layers alone"):
        trainer(_latency_config(float(cost.linear) / 2)).run()


def test_the_search_penalty_under_a_latency_budget_is_the_group_penalty():
    """lam (sum |c| + w sum_s ||c_s|| / sqrt(n_s)) N / (N + w S), with w = scale * rho / beta."""
    cost = _latency_cost()
    cfg = _latency_config(float(cost.linear + 2 * cost.per_layer + 18 * cost.per_relu), lam=0.5)
    cfg.group_penalty = 0.25
    t = trainer(cfg)
    t._start()
    t._advance()
    logits, x, y = _batch(t)
    _set_gates(t, torch.zeros_like)
    base = t._loss(logits, x, y).item()
    values = _set_gates(t, lambda c: torch.linspace(-1.0, 0.5, c.numel()).view_as(c))
    w = 0.25 * float(cost.per_layer / cost.per_relu)
    n, s = sum(v.numel() for v in values), len(values)
    l1 = sum(float(v.abs().sum()) for v in values)
    group = sum(float(v.norm()) / v.numel() ** 0.5 for v in values)
    expected = 0.5 * (l1 + w * group) * n / (n + w * s)
    assert t._loss(logits, x, y).item() - base == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- the official recipe

def _official(fraction, seed=3):
    """Four official finetuning epochs (no search needed: budget = total) on 32 samples."""
    cfg = config(budget=TOTAL, epochs=(0, 0, 4))
    cfg.recipe, cfg.validation_fraction, cfg.seed, cfg.finetune.lr = "official", fraction, seed, 0.3
    return _logged(cfg)


def _first_best(values):
    return values.index(max(values))


def test_official_finetuning_keeps_the_first_best_validation_epoch_and_reports_both_choices(tmp_path):
    """Seed 3 peaks on validation at an early epoch and on test at another: the final weights
    are the validation pick's (scored again here on the held-out samples), the report names both."""
    t = _official(0.25)
    t.out_dir = tmp_path
    result = t.run()
    fine = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val, test = [r["validation_accuracy"] for r in fine], [r["test_accuracy"] for r in fine]
    chosen, by_test = _first_best(val), _first_best(test)
    assert chosen + 1 < len(fine) and chosen != by_test  # this seed's picks differ from the last epoch
    assert len(t.validation) == 8 and len(t.data.train) == 24
    assert evaluate(t.model, t.validation, "cpu") == val[chosen]
    assert result["test_accuracy"] == test[chosen] == evaluate(t.model, t.data.test, "cpu")
    assert result["finetune_selection"] == {
        "selected_on": "validation split", "validation_fraction": 0.25, "validation_size": 8,
        "train_size": 24, "epoch": chosen + 1, "validation_accuracy": val[chosen]}
    selected = result["test_selected"]
    assert (selected["epoch"], selected["test_accuracy"]) == (by_test + 1, test[by_test])
    assert selected["note"].startswith("best finetuning epoch chosen ON THE TEST SET")
    assert result["recipe"] == "official"
    assert "official recipe: 8 of 32 training samples held out to choose the best finetuning epoch" in t.lines
    assert (f"finetune: keeping epoch {chosen + 1}, the best validation accuracy ({val[chosen]:.4f} "
            f"on 8 held-out samples)") in t.lines


def test_official_finetuning_without_a_validation_split_keeps_the_last_epoch():
    t = _official(0.0)
    result = t.run()
    assert t.validation is None and len(t.data.train) == 32
    assert result["finetune_selection"] == {
        "selected_on": "last epoch", "validation_fraction": 0.0, "validation_size": 0,
        "train_size": 32, "epoch": 4, "validation_accuracy": None}
    assert result["test_selected"]["epoch"] in range(1, 5)
    assert not any("keeping epoch" in line or "held out" in line for line in t.lines)


def test_official_lambda_compares_with_the_lowest_count_so_far():
    """Before the first count the lowest is the total; lambda grows from epoch index 5 on."""
    t = _official(0.0)
    t.config.search.kappa, t.total, t.lam = 2.0, 18, 1.0
    t.epoch = 5
    assert t._next_lambda(18) == 2.0 and t.lowest_count == 18
    assert t._next_lambda(17) == 1.0 and t.lowest_count == 17
    t.epoch = 4
    assert t._next_lambda(17) == 1.0 and t.lowest_count == 17
    t.config.recipe = "paper"
    t.prev_count = 10
    assert t._next_lambda(10) == 2.0 and t._next_lambda(9) == 1.0


def test_an_unknown_recipe_is_refused_when_the_trainer_is_made():
    cfg = config(budget=TOTAL)
    cfg.recipe = "fancy"
    with pytest.raises(ValueError, match="^unknown recipe 'fancy'; expected one of paper, official$"):
        trainer(cfg)


# ----------------------------------------------------------------------------- resuming

def test_a_checkpoints_recipe_and_validation_split_must_match_this_run():
    """Checked again on the state itself (a checkpoint whose config was edited by hand)."""
    paper, official = trainer(config(budget=TOTAL)), _official(0.25)
    paper._restore_recipe({"config": {}, "recipe": None})  # written before recipes: paper
    for t, saved, mine in ((official, "paper", "official"), (paper, "official", "paper")):
        state = {"config": {"recipe": saved} if saved == "official" else {}}
        with pytest.raises(CheckpointError, match=f"^checkpoint is for --recipe {saved}, this run has "
                                                  f"--recipe {mine}$"):
            t._restore_recipe(state)
    held_out = official.validation_indices
    for other in (None, held_out[:-1], held_out + 1):
        with pytest.raises(CheckpointError, match="^checkpoint was made with another validation split"):
            official._restore_recipe({"config": {"recipe": "official"},
                                      "recipe": {"validation_indices": other}})
    best = {"test": {"epoch": 2, "accuracy": 0.5}}
    official._restore_recipe({"config": {"recipe": "official"}, "recipe": {
        "validation_indices": held_out.clone(), "lowest_count": 7, "best": best}})
    assert official.lowest_count == 7 and official.best == best
    official._restore_recipe({"config": {"recipe": "official"},
                              "recipe": {"validation_indices": held_out.clone(), "best": None}})
    assert official.lowest_count is None and official.best == {}


def test_a_checkpoints_allocation_must_match_and_its_quotas_are_kept():
    cfg = config(budget=9)
    cfg.allocation = "uniform"
    t = trainer(cfg)
    t._start()
    with pytest.raises(CheckpointError, match="^checkpoint is for --allocation learned, this run has "
                                              "--allocation uniform$"):
        t._restore_allocation({"config": {}})
    kept = {"allocation": "uniform", "quotas": {"features.2": 1}}
    t._restore_allocation({"config": {"allocation": "uniform"}, "allocation": kept})
    assert t.allocation is kept
    t._restore_allocation({"config": {"allocation": "uniform"}, "allocation": None})  # planned again
    assert sum(t.allocation["quotas"].values()) == 9


def test_resume_names_the_option_that_differs():
    t = trainer(config(budget=TOTAL))
    saved = t.config.to_dict()
    t._check_same_run(saved, "run/checkpoint.pt")
    saved["search"]["lam"], saved["budget"] = 0.5, None
    with pytest.raises(CheckpointError, match=r"^run/checkpoint\.pt was written with --budget \(not given\), "
                       r"this run has 18: resume with the same value, or start over with --overwrite$"):
        t._check_same_run(saved, "run/checkpoint.pt")
    saved["budget"] = TOTAL
    with pytest.raises(CheckpointError, match="^p was written with --lambda 0.5, this run has 1e-05: "):
        t._check_same_run(saved, "p")
    for bad in (None, {"nope": 1}):
        with pytest.raises(CheckpointError, match="^corrupt or incompatible checkpoint p: its config: "):
            t._check_same_run(bad, "p")


def test_config_differences_skip_free_entries_and_new_defaults_and_walk_nested_ones():
    saved = {"budget": 5, "device": "cpu", "gone": 1, "search": {"lam": 1, "kappa": 2}}
    mine = {"budget": 6, "device": "cuda", "network": "localhost", "recipe": "official",
            "search": {"lam": 1, "kappa": 3, "epsilon": 0.01, "lr": 0.5}}
    assert list(_config_differences(saved, mine)) == [
        ("budget", 5, 6), ("recipe", None, "official"), ("search.kappa", 2, 3),
        ("search.lr", None, 0.5), ("gone", 1, None)]
    assert list(_config_differences({"search": 1}, {"search": {"lam": 1}})) == [("search", 1, {"lam": 1})]


def test_flat_defaults_option_names_and_shown_values():
    assert _flat_defaults({"a": 1, "b": {"c": 2, "d": {"e": None}}}) == {"a": 1, "b.c": 2, "b.d.e": None}
    assert _flat_defaults({"a": 1}, "p.") == {"p.a": 1}
    assert _DEFAULTS["search.lam"] == 1e-5 and _DEFAULTS["budget"] is None
    assert [_option_name(k) for k in ("search.lam", "budget_fraction", "search.momentum", "widths",
                                      "latency_per_1000")] == [
        "--lambda", "--budget-fraction", "config entry search.momentum", "--widths",
        "config entry latency_per_1000"]
    assert [_shown(v) for v in (None, (12, 6), [], ["a"], 0.5, "x")] == [
        "(not given)", "12,6", '""', "a", "0.5", "x"]


# ----------------------------------------------------------------------------- gating mechanism

def test_runtime_gating_is_recognised_only_on_a_gated_model():
    """A model with an instance-level forward is gated at run time, a plain MLP by torch.fx."""
    def instance_forward():
        model = build_model("mlp", 3, (8,), WIDTHS)
        model.forward = model.forward
        return model

    for factory, runtime in ((lambda: build_model("mlp", 3, (8,), WIDTHS), False), (instance_forward, True)):
        t = Trainer(config(budget=TOTAL), factory, load_dataset("random", n=32, dim=8, num_classes=3))
        t._start()
        assert t._runtime_gated() is False  # pretraining: no gates yet
        t._advance()
        assert t._runtime_gated() is runtime and t.mechanism[0] == ("runtime" if runtime else "fx")


# ----------------------------------------------------------------------------- one rank of torchrun

@pytest.fixture
def one_rank(tmp_path):
    import torch.distributed as dist

    from snl_train.distributed import DistContext

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield DistContext(0, 1, 0, "gloo", torch.device("cpu"))
    dist.destroy_process_group()


def test_one_distributed_rank_reports_its_replica_and_stops_on_a_nan_loss(one_rank):
    from snl_train.distributed import state_digest

    data = load_dataset("random", n=32, dim=8, num_classes=3)
    t = Trainer(config(budget=TOTAL, epochs=(1, 0, 0)), lambda: build_model("mlp", 3, (8,), WIDTHS),
                data, dist=one_rank)
    result = t.run()
    assert result["distributed"] == {"world_size": 1, "backend": "gloo", "replicas_identical": True,
                                     "state_digests": [state_digest(t.model.state_dict())]}

    class NaN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = build_model("mlp", 3, (8,), WIDTHS)

        def forward(self, x):
            return self.net(x) * float("nan")

    with pytest.raises(NonFiniteLoss, match="^loss is nan in pretrain epoch 1$"):
        Trainer(config(budget=TOTAL, epochs=(1, 0, 0)), NaN, data, dist=one_rank).run()
    official = config(budget=TOTAL, epochs=(0, 0, 2))
    official.recipe, official.validation_fraction = "official", 0.25
    t = Trainer(official, lambda: build_model("mlp", 3, (8,), WIDTHS), data, dist=one_rank)
    chosen = t.run()["finetune_selection"]
    assert chosen["validation_accuracy"] == evaluate(t.model, t.validation, "cpu")


# ----------------------------------------------------------------------------- more of the same, by survivor

def test_kd_loss_defaults_are_t_4_and_equal_weights():
    torch.manual_seed(2)
    s, t, y = torch.randn(6, 3), torch.randn(6, 3), torch.randint(0, 3, (6,))
    assert kd_loss(s, t, y).item() == pytest.approx(_distillation(s, t, y, 4.0, 0.5).item(), rel=1e-5)


def test_a_file_allocation_under_a_latency_budget_is_priced_by_the_cost_model(tmp_path):
    """Linear + rho + 3 beta: 3 ReLUs at the first site fit, 3 more at the second do not."""
    from snl_train.latency import latency_plan

    x = torch.zeros(1, 8)
    net = add_gates(build_model("mlp", 3, (8,), WIDTHS), example_input=x)
    cost = _latency_cost()
    plan = latency_plan(net, x, float(cost.linear + cost.per_layer + 3 * cost.per_relu) * (1 + 1e-12), "lan")
    sites = allocation_sites(net, x)
    one, both = tmp_path / "one.json", tmp_path / "both.json"
    one.write_text(json.dumps({"features.2": 3}))
    both.write_text(json.dumps({"features.2": 3, "features.4": 3}))
    assert plan_allocation(str(one), sites, 0, latency=plan).counts == (3, 0)
    with pytest.raises(AllocationError, match="over the latency budget"):
        plan_allocation(str(both), sites, 0, latency=plan)
    assert plan_allocation("uniform", sites, 0, latency=plan).counts == (0, 0)  # two sites cost 2 rho
    assert plan_allocation("sharp", sites, 0, latency=plan).total == 3


def test_resuming_a_finished_run_returns_its_result_with_frozen_gates(tmp_path):
    first = trainer(config(budget=9))
    first.out_dir = tmp_path
    expected = first.run()
    data = load_dataset("random", n=32, dim=8, num_classes=3)
    lines = []
    again = Trainer(config(budget=9), lambda: build_model("mlp", 3, (8,), WIDTHS), data, out_dir=tmp_path,
                    log=lines.append)
    result = again.run(resume=True)
    assert result["per_layer"] == expected["per_layer"] and result["relu_count"] == 9
    assert not any(p.requires_grad for p in gate_parameters(again.model))
    assert lines == [f"resumed from {tmp_path / 'checkpoint.pt'}: done after epoch 0"]


class _NoInt:
    """A checkpoint entry whose conversion fails with a blank message."""

    def __int__(self):
        raise ValueError("\n")


def test_a_checkpoint_that_fails_to_load_is_named_with_the_first_line_of_the_reason(tmp_path):
    t = trainer(config(budget=TOTAL))
    cfg = t.config.to_dict()
    where = "checkpoint"  # no out_dir: the message names no directory
    for state, reason in (({"config": cfg, "stage": "nowhere"}, "unknown stage 'nowhere'"),
                          ({"config": cfg, "stage": "search"}, "KeyError: 'epoch'"),
                          ({"config": cfg, "stage": "search", "epoch": _NoInt()}, "ValueError: ")):
        with pytest.raises(CheckpointError, match=f"^corrupt or incompatible checkpoint {where}: "
                                                  f"{re.escape(reason)}$"):
            t._restore(state)
    t.out_dir = tmp_path
    path = re.escape(str(tmp_path / "checkpoint.pt"))
    with pytest.raises(CheckpointError, match=f"^corrupt or incompatible checkpoint {path}: unknown stage"):
        t._restore({"config": cfg, "stage": "nowhere"})
    cfg["budget"] = 5
    with pytest.raises(CheckpointError, match=f"^{path} was written with --budget 5, this run has 18"):
        t._restore({"config": cfg, "stage": "search"})
    cfg["budget"] = TOTAL
    model = build_model("mlp", 3, (8,), (10, 6)).state_dict()
    with pytest.raises(CheckpointError, match=f"^corrupt or incompatible checkpoint {path}: its model "
                                              f"does not fit this model: Error\\(s\\) in loading state_dict"):
        t._restore({"config": cfg, "stage": "pretrain", "epoch": 0, "model": model})


def test_the_recipe_state_a_checkpoint_keeps_restores_the_lowest_count_and_best_epochs():
    t = _official(0.25)
    t.lowest_count, t.best = 7, {"test": {"epoch": 1, "accuracy": 0.25}}
    other = _official(0.25)
    other._restore_recipe({"config": {"recipe": "official"}, "recipe": t._recipe_state()})
    assert (other.lowest_count, other.best) == (7, t.best)


def test_retention_report_puts_the_learned_counts_next_to_both_optima():
    """d = (12, 6), B = 9, worked by hand. Paper (Theorem 2): a1 = (B + d2 - 1) / (2 d1) = 7/12,
    a2 = (B - d2 + 1) / (2 d2) = 1/3, i.e. 7 and 2 ReLUs; x (d2 + y) + y + 2 = 60 at y = 2, the
    integer optimum too. Sharp: (x + 1)(y + 1) + 1 with x + y = 9 peaks at 4.5 each (125/4);
    in integers 4 + 5 either way round, 31."""
    counts = [SiteCount("a", 12, 3), SiteCount("b", 6, 2)]
    report = retention_report(counts, 9)
    assert report == {
        "learned_alpha": [3 / 12, 2 / 6], "learned_retained": [3, 2],
        "predicted": {
            "paper": {"alpha": ["7/12", "1/3"], "alpha_float": [7 / 12, 1 / 3],
                      "retained": ["7", "2"], "retained_float": [7.0, 2.0],
                      "integer_retained": [[7, 2]], "integer_value": 60, "value": "60",
                      "interior": True, "active": "interior"},
            "sharp": {"alpha": ["3/8", "3/4"], "alpha_float": [0.375, 0.75],
                      "retained": ["9/2", "9/2"], "retained_float": [4.5, 4.5],
                      "integer_retained": [[4, 5], [5, 4]], "integer_value": 31, "value": "125/4"}}}
    over = retention_report(counts, 20)["predicted"]
    assert over == {name: {"error": "budget 20 exceeds the 18 neurons of the network"}
                    for name in ("paper", "sharp")}


def test_result_json_of_a_run_without_epochs():
    """No epoch at all: every field that does not depend on training, and the opening log line."""
    t = _logged(config(budget=TOTAL))
    result = t.run()
    first, second = site_names(result)
    assert {k: result[k] for k in ("relu_budget", "relu_count", "relu_count_before", "relu_total",
                                   "budget_reached_by_search", "unsupported_activations",
                                   "training_only_sites", "final_lambda", "recipe", "allocation")} == {
        "relu_budget": TOTAL, "relu_count": TOTAL, "relu_count_before": TOTAL, "relu_total": TOTAL,
        "budget_reached_by_search": True, "unsupported_activations": {}, "training_only_sites": [],
        "final_lambda": 1e-5, "recipe": "paper",
        "allocation": {"allocation": "learned", "kind": "learned", "quotas": None}}
    assert result["per_layer"] == [{"name": first, "family": "relu", "total": 12, "kept": 12},
                                   {"name": second, "family": "relu", "total": 6, "kept": 6}]
    assert result["gating"] == {"mechanism": "fx", "reason": ""}  # traced: nothing to explain
    assert result["config"] == t.config.to_dict() and result["learned_retained"] == [12, 6]
    assert result["online_latency_s"] == result["latency"]["total_seconds"]
    assert t.lines[0] == "random: 32 train / 32 test; mlp with 18 ReLUs, budget 18"


def test_each_stage_builds_its_optimizer_from_its_own_config():
    cfg = config(budget=TOTAL)
    cfg.pretrain.lr, cfg.pretrain.momentum, cfg.pretrain.weight_decay = 0.3, 0.7, 0.01
    cfg.search.lr, cfg.search.weight_decay = 0.02, 0.003
    cfg.finetune.lr, cfg.finetune.momentum, cfg.finetune.weight_decay = 0.04, 0.6, 0.002
    t = trainer(cfg)
    t._start()
    (group,) = t.optimizer.param_groups
    assert isinstance(t.optimizer, torch.optim.SGD) and len(group["params"]) == 6
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.3, 0.7, 0.01)
    t._advance()
    weights, gates = t.optimizer.param_groups
    assert isinstance(t.optimizer, torch.optim.Adam)
    assert [id(p) for p in gates["params"]] == [id(p) for p in gate_parameters(t.model)]
    assert len(weights["params"]) == 6 and (weights["lr"], weights["weight_decay"]) == (0.02, 0.003)
    assert (gates["lr"], gates["weight_decay"]) == (0.02, 0.0)
    t._advance()
    (group,) = t.optimizer.param_groups
    assert isinstance(t.optimizer, torch.optim.SGD) and len(group["params"]) == 6
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.04, 0.6, 0.002)
    t._advance()
    assert t.stage == "done" and t.optimizer is None and t.train_module is t.model


def test_progress_bars_go_to_stderr_only_when_asked_and_threads_are_set(capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        trainer(config(budget=TOTAL, epochs=(1, 0, 0))).run()
        assert torch.get_num_threads() == 1 and capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)
    data = load_dataset("random", n=32, dim=8, num_classes=3)
    Trainer(config(budget=TOTAL, epochs=(1, 0, 0)), lambda: build_model("mlp", 3, (8,), WIDTHS), data,
            progress=True).run()
    assert "pretrain 1" in capsys.readouterr().err


def test_batches_slice_tensors_and_leave_other_datasets_to_a_seeded_data_loader():
    """Unshuffled: consecutive slices, the last one short. Shuffled tensors: the permutation
    torch.randperm draws from the generator. Any other dataset: a DataLoader, shuffled by the
    generator (the same seed, the same order) in batches of the size asked for."""
    data = TensorDataset(torch.arange(10.0).view(10, 1), torch.arange(10))
    plain = batches(data, 4, shuffle=False)
    assert isinstance(plain, list) and [b[1].tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5)).tolist()
    sliced = batches(data, 4, True, torch.Generator().manual_seed(5))
    assert [y for _, b in sliced for y in b.tolist()] == order

    def loaded(seed):
        shuffled = batches(Subset(data, range(10)), 4, True, torch.Generator().manual_seed(seed))
        return [b.tolist() for _, b in shuffled]

    first = loaded(5)
    assert first == loaded(5) and [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) != sum(first, [])


def test_speed_options_are_checked_and_applied():
    with pytest.raises(ValueError, match="^--amp fp16 needs a CUDA device"):
        trainer(_amp("fp16"))
    t = _logged(_amp("bf16"))
    warning = precision_warning("bf16", torch.device("cpu"))
    assert t.lines == ([] if warning is None else [warning])
    cfg = config(budget=TOTAL)
    cfg.model, cfg.channels_last = "convnet", True
    data = load_dataset("random", n=8, num_classes=3, shape=(1, 4, 4))
    t = Trainer(cfg, lambda: build_model("convnet", 3, (1, 4, 4), (2,)), data)
    t._start()
    conv = next(m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def _amp(mode):
    cfg = config(budget=TOTAL)
    cfg.amp = mode
    return cfg


def test_compile_warns_about_a_model_gated_at_run_time_and_only_then():
    def instance_forward():
        model = build_model("mlp", 3, (8,), WIDTHS)
        model.forward = model.forward
        return model

    data = load_dataset("random", n=32, dim=8, num_classes=3)
    for compile_, factory, warned in ((True, instance_forward, True), (False, instance_forward, False),
                                      (True, lambda: build_model("mlp", 3, (8,), WIDTHS), False)):
        cfg = config(budget=TOTAL)
        cfg.compile = compile_
        lines = []
        Trainer(cfg, factory, data, log=lines.append)._start()
        expected = ("warning: --compile: this model is gated at run time (torch.fx cannot trace it "
                    "faithfully), which torch.compile cannot run; pretraining is compiled, the search "
                    "and finetuning run eagerly")
        assert (expected in lines) == warned


def test_resuming_a_finished_official_run_keeps_its_split_and_the_planned_allocation(tmp_path):
    out = tmp_path / "a" / "b"  # created with its parents
    cfg = config(budget=9, epochs=(0, 0, 1))
    cfg.recipe, cfg.validation_fraction, cfg.allocation = "official", 0.25, "uniform"
    make = lambda: Trainer(cfg, lambda: build_model("mlp", 3, (8,), WIDTHS),  # noqa: E731
                           load_dataset("random", n=32, dim=8, num_classes=3), out_dir=out)
    expected = make().run()
    state = load_checkpoint(out / "checkpoint.pt")
    state["allocation"]["rule"] = "as planned when the run started"
    save_checkpoint(state, out / "checkpoint.pt")
    resumed = make().run(resume=True)
    assert resumed["finetune_selection"] == expected["finetune_selection"]
    assert resumed["allocation"]["rule"] == "as planned when the run started"


def test_an_epoch_record_is_the_mean_loss_and_accuracy_over_the_training_set(tmp_path):
    """At lr 0 the weights stay put through the epoch, so the record's loss and accuracy are
    those of the model on the whole training set (batches of 8 of 32 samples), computed here."""
    cfg = config(budget=TOTAL, epochs=(1, 0, 0))
    cfg.pretrain.lr, cfg.pretrain.batch_size = 0.0, 8
    t = trainer(cfg)
    t.out_dir = tmp_path
    t.run()
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    x, y = t.data.train.tensors
    with torch.no_grad():
        logits = t.model(x)
    loss = F.cross_entropy(logits, y).item()
    assert record == {"stage": "pretrain", "epoch": 1, "loss": pytest.approx(loss),
                      "train_accuracy": (logits.argmax(1) == y).float().mean().item(),
                      "test_accuracy": evaluate(t.model, t.data.test, "cpu"), "relu_count": TOTAL,
                      "lambda": None}


def test_the_shuffles_do_not_depend_on_the_global_random_state(tmp_path):
    """Each epoch shuffles with its own seeded generator: drawing from torch's global RNG
    between epochs changes nothing."""
    runs = []
    for name, draw in (("plain", False), ("drawn", True)):
        cfg = config(budget=TOTAL, epochs=(2, 0, 0))
        cfg.pretrain.batch_size = 8  # 4 batches: the order matters
        t = trainer(cfg)
        t.out_dir = tmp_path / name
        if draw:
            t.add_callback("on_epoch_end", lambda _: torch.rand(3))
        t.run()
        runs.append((tmp_path / name / "metrics.jsonl").read_text())
    assert runs[0] == runs[1]


def test_official_finetuning_follows_a_cosine_and_pretraining_its_steps():
    """lr per epoch: pretraining 0.1 stepping x0.5 after epoch 1, official finetuning
    0.3 (1 + cos(pi e / 2)) / 2; the validation split is scored only while finetuning."""
    cfg = config(budget=TOTAL, epochs=(2, 0, 2))
    cfg.recipe, cfg.validation_fraction, cfg.finetune.lr = "official", 0.25, 0.3
    cfg.pretrain.lr, cfg.pretrain.milestones, cfg.pretrain.gamma = 0.1, (1,), 0.5
    t = _logged(cfg)
    seen = []
    t.add_callback("on_epoch_end", lambda tr: seen.append(
        (tr.stage, tr.optimizer.param_groups[0]["lr"], "validation_accuracy" in tr.last_record)))
    t.run()
    assert seen == [("pretrain", 0.1, False), ("pretrain", 0.05, False),
                    ("finetune", 0.3, True), ("finetune", pytest.approx(0.15), True)]


def test_the_official_loss_weighs_ce_and_the_scaled_kl_by_one_each():
    t = _in_stage("finetune")
    t.config.recipe = "official"
    logits, x, y = _batch(t)
    with torch.no_grad():
        teacher = t.teacher(x)
    temperature = t.config.finetune.temperature
    ce = _distillation(logits, teacher, y, temperature, 0.0)
    kd = _distillation(logits, teacher, y, temperature, 1.0)
    assert t._loss(logits, x, y).item() == pytest.approx((ce + kd).item(), rel=1e-5)


def test_stage_end_callbacks_see_each_stage_once_before_it_is_left():
    t = trainer(config(budget=TOTAL, epochs=(1, 0, 1)))
    ended = []
    t.add_callback("on_stage_end", lambda tr: ended.append((tr.stage, tr.epoch)))
    t.run()
    assert ended == [("pretrain", 1), ("search", 0), ("finetune", 1)]
