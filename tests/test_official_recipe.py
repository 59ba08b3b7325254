"""The ``official`` recipe (snl_train.recipes): parity with a transcription of the public
code's search loop, its lambda rule, loss, finetuning schedule and selection, resume, CLI."""
import copy
import dataclasses
import doctest
import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from snl_train import recipes
from snl_train import trainer as trainer_module
from snl_train.__main__ import main
from snl_train.checkpoint import CheckpointError, load_checkpoint
from snl_train.config import RunConfig, official_defaults
from snl_train.data import load_dataset
from snl_train.gates import add_gates, gate_parameters, gate_sites
from snl_train.models import build_model
from snl_train.recipes import (cosine_lr, official_kd_loss, official_next_lambda, split_dataset,
                               validation_indices)
from snl_train.trainer import Trainer, kd_loss, next_lambda

# ------------------------------------------------------------------ the public code, transcribed


def public_search(net, teacher, epoch_batches, alpha, threshold, budget, lr, temperature=4.0):
    """The search loop of the public code (``snl_finetune_unstructured.py`` with
    ``utils.mask_train_kd_unstructured``), transcribed from its description in issue 18.

    Adam on every parameter; per batch ``CE + KD + alpha * sum ||c||_1`` with KD =
    ``KL(softmax(t/T) || log_softmax(s/T)) * T^2``; after each epoch the count of gates above
    the threshold; ``alpha *= 1.1`` when that count is not below the lowest count so far (which
    starts at the total) and the epoch index is >= 5; stop once the count is within the budget.
    The public code's gate parameters are named ``alpha``; here they are the gates' ``c``.
    Returns the alpha each epoch trained with and the count after each epoch.
    """
    gates = {id(p) for p in gate_parameters(net)}

    def relu_counting():
        return sum(int((p.data > threshold).sum()) for p in net.parameters() if id(p) in gates)

    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    total = relu_counting()
    lowest_relu_count, alphas, counts = total, [], []
    for epoch, batches in enumerate(epoch_batches):
        net.train()
        teacher.eval()
        for inputs, targets in batches:
            reg_loss = 0
            for p in net.parameters():
                if id(p) in gates:
                    reg_loss += torch.norm(p, p=1)
            outputs = net(inputs)
            outputs_t = teacher(inputs)
            kd = F.kl_div(F.log_softmax(outputs / temperature, dim=1),
                          F.softmax(outputs_t / temperature, dim=1),
                          reduction="batchmean") * temperature * temperature
            loss = F.cross_entropy(outputs, targets) + kd + alpha * reg_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        relu_count = relu_counting()
        alphas.append(alpha)
        counts.append(relu_count)
        if relu_count < lowest_relu_count:
            lowest_relu_count = relu_count
        elif relu_count >= lowest_relu_count and epoch >= 5:
            alpha *= 1.1
        if relu_count <= budget:
            break
    return alphas, counts


def digits_subset(n: int = 512):
    """Digits with the first ``n`` training images (fewer steps per epoch, same task)."""
    data = load_dataset("digits", seed=0)
    return dataclasses.replace(data, train=TensorDataset(*(t[:n] for t in data.train.tensors)))


def test_official_search_agrees_exactly_with_the_public_loop(monkeypatch):
    """Same pretrained weights and batches: lambdas, counts, final gates and weights are equal."""
    cfg = official_defaults(RunConfig(model="mlp", widths=(16, 8), dataset="digits", budget=4,
                                      threads=1))
    cfg.pretrain.epochs, cfg.pretrain.batch_size, cfg.pretrain.milestones = 3, 64, ()
    cfg.search.max_epochs, cfg.search.lam, cfg.search.lr = 40, 0.01, 0.03
    cfg.finetune.epochs = 1
    data = digits_subset()
    trainer = Trainer(cfg, lambda: build_model("mlp", 10, data.in_shape, cfg.widths), data)
    recorded, records, seen = [], [], {}
    real_batches = trainer_module.batches

    def recording(dataset, batch_size, shuffle, generator=None, num_workers=0):
        out = real_batches(dataset, batch_size, shuffle, generator, num_workers)
        if shuffle and trainer.stage == "search":
            out = list(out)
            recorded.append(out)
        return out

    def stage_end(t):
        if t.stage == "pretrain":
            seen["pretrained"] = copy.deepcopy(t.model)
        elif t.stage == "search":
            seen["searched"] = {k: v.clone() for k, v in t.model.state_dict().items()}

    monkeypatch.setattr(trainer_module, "batches", recording)
    trainer.add_callback("on_epoch_end", lambda t: records.append(t.last_record)
                         if t.stage == "search" else None)
    trainer.add_callback("on_stage_end", stage_end)
    result = trainer.run()

    teacher, net = copy.deepcopy(seen["pretrained"]), copy.deepcopy(seen["pretrained"])
    add_gates(net, example_input=trainer.example_input)
    alphas, counts = public_search(net, teacher, recorded, cfg.search.lam, cfg.search.epsilon,
                                   cfg.budget, cfg.search.lr)
    assert alphas == [r["lambda"] for r in records]
    assert counts == [r["relu_count"] for r in records]
    mine = net.state_dict()
    assert mine.keys() == seen["searched"].keys()
    assert all(torch.equal(mine[k], seen["searched"][k]) for k in mine)  # gates and weights
    final = [gate.c for _, gate in gate_sites(trainer.model)]
    assert all(torch.equal(f, (p.detach() > cfg.search.epsilon).float())
               for f, p in zip(final, gate_parameters(net)))
    assert result["budget_reached_by_search"] and len(counts) < cfg.search.max_epochs
    # the run exercises what tells the two rules apart, so a wrong rule could not agree:
    total = sum(cfg.widths)
    lowest = [min([total] + counts[:k]) for k in range(len(counts))]
    assert counts[4] >= lowest[4] and counts[5] >= lowest[5]  # warm-up ends exactly at index 5
    assert alphas[-1] > alphas[0]
    paper, previous = [cfg.search.lam], total  # Algorithm 1's rule on the same counts
    for c in counts[:-1]:
        paper.append(next_lambda(paper[-1], c, previous, cfg.search.kappa))
        previous = c
    assert paper != alphas


# ------------------------------------------------------------------ the pieces


@pytest.mark.parametrize("count, lowest, epoch, expected", [
    (9, 10, 7, (1.0, 9)),     # a new lowest: lambda stays
    (10, 10, 5, (2.0, 10)),   # not below the lowest, from epoch index 5: lambda grows
    (12, 10, 4, (1.0, 10)),   # before epoch index 5 it never grows
    (12, 10, 6, (2.0, 10)),
])
def test_official_lambda_rule(count, lowest, epoch, expected):
    assert official_next_lambda(1.0, count, lowest, epoch, 2.0) == expected


def test_official_rule_differs_from_the_paper_rule_after_a_rebound():
    """15 after 20 is a decrease (paper: keep lambda) but not a new lowest (official: grow)."""
    assert next_lambda(1.0, 15, 20, 2.0) == 1.0
    assert official_next_lambda(1.0, 15, 12, 8, 2.0) == (2.0, 12)


def test_official_loss_is_ce_plus_t_squared_kl_at_weight_one():
    torch.manual_seed(1)
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    p_t = F.softmax(t / 4, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 4, 1))).sum(1).mean()
    expected = F.cross_entropy(s, y) + 16 * kl
    assert official_kd_loss(s, t, y, 4.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert official_kd_loss(s, t, y, 4.0).item() == pytest.approx(2 * kd_loss(s, t, y, 4.0, 0.5).item(),
                                                                  rel=1e-6)


def test_recipes_docstring_examples():
    failures, tried = doctest.testmod(recipes)
    assert tried > 0 and failures == 0


def test_cosine_lr_equals_torch_cosine_annealing():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 7)
    for epoch in range(7):
        assert cosine_lr(0.3, epoch, 7) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-15)
        opt.step()
        sched.step()


def test_validation_split_is_seeded_disjoint_and_keeps_order():
    held = validation_indices(50, 0.2, seed=3)
    assert held.tolist() == validation_indices(50, 0.2, seed=3).tolist() == sorted(held.tolist())
    assert len(held) == 10 and held.tolist() != validation_indices(50, 0.2, seed=4).tolist()
    data = TensorDataset(torch.arange(50.0).view(50, 1), torch.arange(50))
    train, val = split_dataset(data, held)
    assert val.tensors[1].tolist() == held.tolist()
    assert train.tensors[1].tolist() == [i for i in range(50) if i not in set(held.tolist())]
    assert len(validation_indices(50, 0.0, 0)) == 0 and len(validation_indices(5, 0.01, 0)) == 1
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="validation fraction"):
            validation_indices(50, bad, 0)
    with pytest.raises(ValueError, match="no training data"):
        validation_indices(2, 0.9, 0)


# ------------------------------------------------------------------ whole runs


def tiny_official(lam: float = 0.05) -> RunConfig:
    cfg = official_defaults(RunConfig(model="mlp", widths=(12, 6), dataset="random", budget=5,
                                      threads=1, validation_fraction=0.25))
    cfg.pretrain.epochs, cfg.pretrain.batch_size, cfg.pretrain.milestones = 3, 32, (2,)
    cfg.search.max_epochs, cfg.search.batch_size, cfg.search.lam, cfg.search.lr = 12, 16, lam, 0.05
    cfg.finetune.epochs, cfg.finetune.batch_size, cfg.finetune.lr = 4, 16, 0.2
    return cfg


def make(cfg, out_dir=None):
    data = load_dataset("random", n=96, dim=8, num_classes=3, seed=cfg.seed)
    return Trainer(cfg, lambda: build_model("mlp", 3, data.in_shape, cfg.widths), data,
                   out_dir=out_dir)


def metrics(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_official_finetuning_cosine_lr_and_selection_on_validation(tmp_path):
    trainer = make(tiny_official(), tmp_path)
    lrs = []
    trainer.add_callback("on_batch_end", lambda t: lrs.append((t.epoch, t.optimizer.param_groups[0]["lr"]))
                         if t.stage == "finetune" else None)
    result = trainer.run()
    assert {e: lr for e, lr in lrs} == {e: cosine_lr(0.2, e, 4) for e in range(4)}
    assert trainer.optimizer is None and len(trainer.data.train) == 72  # 24 of 96 held out
    fine = [r for r in metrics(tmp_path) if r["stage"] == "finetune"]
    val = [r["validation_accuracy"] for r in fine]
    chosen = val.index(max(val))  # first best epoch, as the public code keeps it
    sel = result["finetune_selection"]
    assert (sel["epoch"], sel["validation_accuracy"], sel["validation_size"]) == (chosen + 1, max(val), 24)
    assert chosen + 1 != len(fine)  # this seed's best epoch is not the last one
    assert result["test_accuracy"] == fine[chosen]["test_accuracy"]
    tests = [r["test_accuracy"] for r in fine]
    assert result["test_selected"]["epoch"] == tests.index(max(tests)) + 1
    assert result["test_selected"]["test_accuracy"] == max(tests)
    assert "TEST SET" in result["test_selected"]["note"] and result["recipe"] == "official"
    assert result["config"]["recipe"] == "official"


def test_paper_recipe_keeps_all_training_data_and_the_last_epoch(tmp_path):
    cfg = tiny_official()
    cfg.recipe = "paper"
    trainer = make(cfg, tmp_path)
    result = trainer.run()
    assert len(trainer.data.train) == 96 and trainer.validation is None
    assert result["recipe"] == "paper" and "test_selected" not in result
    fine = [r for r in metrics(tmp_path) if r["stage"] == "finetune"]
    assert "validation_accuracy" not in fine[0] and result["test_accuracy"] == fine[-1]["test_accuracy"]


# lambda 0.01: the search runs to its limit and lambda grows from epoch index 7 on;
# lambda 0.05: the best validation epoch is the first one, before the interruption
@pytest.mark.parametrize("stage, epoch, lam", [("search", 7, 0.01), ("finetune", 2, 0.05)])
def test_official_resume_equals_the_uninterrupted_run(tmp_path, stage, epoch, lam):
    expected = make(tiny_official(lam), tmp_path / "full").run()

    def interrupt(t):
        if t.stage == stage and t.epoch == epoch:
            raise KeyboardInterrupt

    trainer = make(tiny_official(lam), tmp_path / "cut")
    trainer.add_callback("on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")  # weights_only=True
    assert state["recipe"]["validation_indices"].tolist() == trainer.validation_indices.tolist()
    if stage == "finetune":
        assert state["recipe"]["best"]["validation"]["epoch"] == 1
    else:
        assert state["recipe"]["lowest_count"] is not None
    resumed = make(tiny_official(lam), tmp_path / "cut").run(resume=True)
    timing = ("latency", "online_latency_s")
    assert {k: v for k, v in resumed.items() if k not in timing} == \
        {k: v for k, v in expected.items() if k not in timing}
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    other = tiny_official(lam)
    other.recipe = "paper"
    with pytest.raises(CheckpointError, match="recipe official"):
        make(other, tmp_path / "cut").run(resume=True)


def test_cli_official_recipe(tmp_path, capsys):
    argv = ["--dataset", "random", "--widths", "8,4", "--pretrain-epochs", "2", "--search-epochs",
            "4", "--finetune-epochs", "2", "--lambda", "0.05", "--lr", "0.05", "--threads", "1",
            "--budget", "5", "--recipe", "official", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "held out" in out and "selected on the test set instead" in out
    result = json.loads((tmp_path / "result.json").read_text())
    config = result["config"]
    assert result["recipe"] == config["recipe"] == "official"
    assert (config["search"]["weight_decay"], config["finetune"]["weight_decay"]) == (0.0, 5e-4)
    assert config["search"]["batch_size"] == config["finetune"]["batch_size"] == 128
    assert config["validation_fraction"] == 0.1
    assert main(argv[:-2] + ["--validation-fraction", "1", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
