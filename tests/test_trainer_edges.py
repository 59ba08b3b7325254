"""Edge cases of snl_train.trainer that a wrong trainer could otherwise pass: ``exclude``
(the budget minus the excluded sites' ReLUs, excluded sites keep all theirs), the loss of each
stage (the L1 penalty on |c|, the distillation term written out independently), and the
budget's boundaries (fraction 0, budget == total, above total). Tiny MLPs, no epochs where
none are needed."""
import pytest
import torch
import torch.nn.functional as F

from snl_train.config import RunConfig
from snl_train.data import load_dataset
from snl_train.gates import add_gates, gate_sites
from snl_train.models import build_model
from snl_train.trainer import BudgetError, Trainer, binarize_within_budget, resolve_budget

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
    while t.stage != stage:
        t._advance()
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
