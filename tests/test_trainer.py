"""Tests for snl_train.trainer: Algorithm 1's schedule, the budget guarantee, KD, resume,
determinism and NaN handling, on tiny MLPs / conv nets and synthetic data."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snl_train.accounting import relu_counts
from snl_train.checkpoint import CheckpointError, load_checkpoint
from snl_train.config import RunConfig
from snl_train.data import load_dataset
from snl_train.gates import add_gates, gate_sites
from snl_train.models import build_model
from snl_train.trainer import (BudgetError, NonFiniteLoss, Trainer, binarize_within_budget,
                               kd_loss, lr_at, next_lambda, resolve_budget)


def tiny_config(**kw) -> RunConfig:
    cfg = RunConfig(model="mlp", widths=(12, 6), dataset="random", budget=kw.pop("budget", 5),
                    threads=1)
    cfg.pretrain.epochs, cfg.pretrain.batch_size, cfg.pretrain.milestones = 3, 32, (2,)
    cfg.search.max_epochs, cfg.search.batch_size = kw.pop("search_epochs", 6), 32
    cfg.search.lam, cfg.search.lr = kw.pop("lam", 0.05), kw.pop("lr", 0.05)
    cfg.finetune.epochs, cfg.finetune.batch_size = 2, 32
    for key, value in kw.items():
        setattr(cfg.search, key, value)
    return cfg


def make_trainer(cfg, out_dir=None):
    data = load_dataset("random", n=64, dim=8, num_classes=3, seed=cfg.seed)
    factory = lambda: build_model("mlp", data.num_classes, data.in_shape, cfg.widths)  # noqa: E731
    return Trainer(cfg, factory, data, out_dir=out_dir)


def read_metrics(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(result):
    return {k: v for k, v in result.items() if k not in ("latency", "online_latency_s")}


# ------------------------------------------------------------------ schedule and losses

@pytest.mark.parametrize("count, previous, grows", [(10, 10, True), (11, 10, True), (9, 10, False)])
def test_lambda_grows_exactly_when_the_count_did_not_decrease(count, previous, grows):
    assert next_lambda(2.0, count, previous, 1.5) == (3.0 if grows else 2.0)


def test_resolve_budget_absolute_relative_and_bounds():
    assert resolve_budget(320, budget=60) == 60
    assert resolve_budget(320, fraction=0.1) == 32
    assert resolve_budget(7, fraction=0.5) == 3  # floor: never above the fraction
    for kwargs in ({"budget": -1}, {"budget": 321}, {"fraction": 1.5}, {}, {"budget": 1, "fraction": 0.1}):
        with pytest.raises(BudgetError):
            resolve_budget(320, **kwargs)


def test_lr_steps_down_at_milestones():
    assert [lr_at(0.1, (80, 120), 0.1, e) for e in (0, 79, 80, 119, 120)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001])


def test_kd_loss_equal_weights_and_t_squared_scaling():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    ce = F.cross_entropy(s, y)
    assert kd_loss(s, s, y, 4.0, 0.5).item() == pytest.approx(0.5 * ce.item(), rel=1e-6)
    p_t = F.softmax(t / 4, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 4, 1))).sum(1).mean()
    expected = 0.5 * ce + 0.5 * 16 * kl
    assert kd_loss(s, t, y, 4.0, 0.5).item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------ budget after binarization

def test_binarization_keeps_the_largest_gates_within_budget():
    net = add_gates(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU()),
                    example_input=torch.zeros(1, 3))
    (_, g1), (_, g2) = gate_sites(net)
    with torch.no_grad():
        g1.c.copy_(torch.tensor([0.9, 0.005, 0.5, 0.7]))
        g2.c.copy_(torch.tensor([0.7, 0.8, -0.3]))
    counts = binarize_within_budget(net, 3, 0.01, torch.zeros(1, 3))
    assert sum(s.kept for s in counts) == 3
    # 0.9 and 0.8 kept, then the tie at 0.7 goes to the earlier site
    assert g1.c.tolist() == [1, 0, 0, 1] and g2.c.tolist() == [0, 1, 0]
    counts = binarize_within_budget(net, 10, 0.01, torch.zeros(1, 3))  # binary c stays put
    assert [s.kept for s in counts] == [2, 1]


def test_channel_gates_respect_the_budget_in_relus_not_channels():
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    x = torch.zeros(1, 1, 4, 4)
    add_gates(net, granularity="channel", example_input=x)
    with torch.no_grad():
        gate_sites(net)[0][1].c.copy_(torch.tensor([0.5, 0.9, 0.7]).view(3, 1, 1))
    counts = binarize_within_budget(net, 40, 0.01, x)  # 16 ReLUs per channel: 2 channels fit
    assert counts[0].kept == 32
    assert gate_sites(net)[0][1].c.flatten().tolist() == [0, 1, 1]


def test_budget_holds_when_the_search_hits_its_epoch_limit(tmp_path):
    cfg = tiny_config(budget=2, search_epochs=1, lam=1e-5, lr=1e-4)
    result = make_trainer(cfg, tmp_path).run()
    assert result["budget_reached_by_search"] is False
    assert result["relu_count_before"] > 2 >= result["relu_count"]
    assert result["relu_count"] == sum(layer["kept"] for layer in result["per_layer"])
    gates = [v for k, v in load_checkpoint(tmp_path / "checkpoint.pt")["model"].items()
             if k.startswith("snl_gates.")]
    assert len(gates) == 2 and all(set(g.flatten().tolist()) <= {0.0, 1.0} for g in gates)
    assert sum(int(g.sum()) for g in gates) == result["relu_count"]


def test_search_reaches_budget_and_lambda_grows_when_count_stalls(tmp_path):
    cfg = tiny_config(budget=6, search_epochs=60, lam=1e-4, kappa=1.5, lr=0.02)
    result = make_trainer(cfg, tmp_path).run()
    search = [r for r in read_metrics(tmp_path) if r["stage"] == "search"]
    assert result["budget_reached_by_search"] and search[-1]["relu_count"] <= 6 < search[-2]["relu_count"]
    previous, grew = 18, 0  # all 12 + 6 ReLUs kept before the search
    for now, after in zip(search, search[1:]):
        stalled = now["relu_count"] >= previous
        assert after["lambda"] == pytest.approx(now["lambda"] * (1.5 if stalled else 1.0))
        grew += stalled
        previous = now["relu_count"]
    assert grew >= 1
    assert result["relu_count"] <= 6 and result["relu_count_before"] == search[-1]["relu_count"]
    assert {"paper", "sharp"} <= set(result["predicted"])
    assert result["learned_alpha"] == [result["per_layer"][0]["kept"] / 12, result["per_layer"][1]["kept"] / 6]


# ------------------------------------------------------------------ determinism, resume, NaN

def test_same_seed_same_run_other_seed_other_run(tmp_path):
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = tiny_config()
        cfg.seed = seed
        runs.append((without_timing(make_trainer(cfg, tmp_path / name).run()), read_metrics(tmp_path / name)))
    assert runs[0] == runs[1]
    assert runs[0][1] != runs[2][1]


@pytest.mark.parametrize("stage, epoch", [("search", 2), ("pretrain", 1), ("finetune", 1)])
def test_resume_after_interruption_gives_the_uninterrupted_result(tmp_path, stage, epoch):
    cfg = tiny_config()
    expected = without_timing(make_trainer(cfg, tmp_path / "full").run())

    def interrupt(trainer):
        if trainer.stage == stage and trainer.epoch == epoch:
            raise KeyboardInterrupt

    trainer = make_trainer(tiny_config(), tmp_path / "cut")
    trainer.add_callback("on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert not (tmp_path / "cut" / "result.json").exists()
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert (state["stage"], state["epoch"]) == (stage, epoch)
    resumed = without_timing(make_trainer(tiny_config(), tmp_path / "cut").run(resume=True))
    assert resumed == expected
    assert read_metrics(tmp_path / "cut") == read_metrics(tmp_path / "full")


def test_resume_rejects_an_incompatible_checkpoint(tmp_path):
    make_trainer(tiny_config(), tmp_path).run()
    other = tiny_config()
    other.widths = (10, 6)
    with pytest.raises(CheckpointError, match="widths"):
        make_trainer(other, tmp_path).run(resume=True)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        make_trainer(tiny_config(), tmp_path).run(resume=True)


class Poisonable(nn.Module):
    """An MLP whose output turns NaN once ``poisoned`` is set."""

    def __init__(self):
        super().__init__()
        self.net = build_model("mlp", 3, (8,), (6,))
        self.poisoned = False

    def forward(self, x):
        out = self.net(x)
        return out * math.nan if self.poisoned else out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config()
    data = load_dataset("random", n=64, dim=8, num_classes=3)
    trainer = Trainer(cfg, Poisonable, data, out_dir=tmp_path)

    def poison(t):
        if t.stage == "pretrain" and t.epoch == 2:
            t.model.poisoned = True

    trainer.add_callback("on_epoch_end", poison)
    with pytest.raises(NonFiniteLoss, match="pretrain epoch 3"):
        trainer.run()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["stage"], state["epoch"]) == ("pretrain", 2)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(read_metrics(tmp_path)) == 2


# ------------------------------------------------------------------ variants

def test_from_scratch_starts_the_search_from_a_fresh_init(tmp_path):
    seen = {}

    def grab(t):  # after the first search step (Adam lr 0.05 moves a weight by <= ~0.05)
        if t.stage == "search" and "student" not in seen:
            seen["teacher"] = [p.clone() for p in t.teacher.parameters() if p.dim() == 2]
            seen["student"] = [p.clone() for p in t.model.parameters() if p.dim() == 2]

    for scratch in (False, True):
        seen.clear()
        cfg = tiny_config(from_scratch=scratch)
        cfg.search.max_epochs = cfg.finetune.epochs = 1
        trainer = make_trainer(cfg)
        trainer.add_callback("on_batch_end", grab)
        trainer.run()
        close = all(torch.allclose(a, b, atol=0.06) for a, b in zip(seen["teacher"], seen["student"]))
        assert close != scratch


def test_zero_variant_and_channel_granularity_run_end_to_end(tmp_path):
    cfg = tiny_config(variant="zero", budget=4)
    cfg.model, cfg.budget = "convnet", 40
    data = load_dataset("digits")
    factory = lambda: build_model("convnet", 10, data.in_shape, (2,))  # noqa: E731
    cfg.search.granularity = "channel"
    cfg.search.max_epochs = 2
    cfg.pretrain.epochs = cfg.finetune.epochs = 1
    cfg.pretrain.batch_size = cfg.search.batch_size = cfg.finetune.batch_size = 512
    result = Trainer(cfg, factory, data).run()
    assert result["relu_count"] <= 40
    totals = relu_counts(factory(), data.train[0][0].unsqueeze(0))
    assert [layer["total"] for layer in result["per_layer"]] == [s.total for s in totals]
    assert "learned_alpha" not in result
