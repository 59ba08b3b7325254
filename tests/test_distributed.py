"""Tests for snl_train.distributed: torchrun's environment, per-rank batches, the collectives on
a one-process gloo group (which must reproduce the single-process run exactly), and real
two-process gloo runs of ``python -m snl_train`` under torchrun: identical replicas, the
budget, one writer, and a run killed mid-search that resumes to the uninterrupted result."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from snl_train.__main__ import main
from snl_train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snl_train.config import RunConfig
from snl_train.data import load_dataset
from snl_train.distributed import (DistContext, ReplicaMismatch, backend_for, env_ranks,
                                   local_batch_size, setup, state_digest)
from snl_train.models import build_model
from snl_train.trainer import Trainer, batches

CPU = torch.device("cpu")


# ------------------------------------------------------------------ environment, batches

@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}, None),  # torchrun with one process
    ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}, (3, 4, 1)),
])
def test_env_ranks_reads_torchrun_variables(env, expected):
    assert env_ranks(env) == expected
    if expected is None:
        assert setup("cpu", env) is None and not dist.is_initialized()


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}])
def test_env_ranks_rejects_a_malformed_environment(env):
    with pytest.raises(ValueError, match="RANK|WORLD_SIZE"):
        env_ranks(env)


def test_backend_and_local_batch():
    assert backend_for(torch.device("cpu")) == "gloo" and backend_for(torch.device("cuda", 1)) == "nccl"
    assert [local_batch_size(64, w) for w in (1, 2, 3, 128)] == [64, 32, 22, 1]


@pytest.mark.parametrize("n", [256, 250])
def test_ranks_split_each_global_batch_of_the_single_process_shuffle(n):
    """Step i of rank 0 and rank 1 together hold the samples of a single process's step i."""
    data = torch.utils.data.TensorDataset(torch.arange(n), torch.zeros(n, dtype=torch.long))
    single = [set(x.tolist()) for x, _ in batches(data, 64, True, torch.Generator().manual_seed(7))]
    ranks = [DistContext(r, 2, r, "gloo", CPU).batches(data, 64, seed=7) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for i, (a, b) in enumerate(zip(*ranks)):
        assert len(a[0]) == len(b[0]) <= 32
        union = set(a[0].tolist()) | set(b[0].tolist())
        assert union == single[i] or (n % 2 and i == len(single) - 1 and single[i] <= union)


def test_evaluation_shards_cover_the_test_set_once():
    data = torch.utils.data.TensorDataset(torch.arange(11), torch.zeros(11))
    shards = [DistContext(r, 3, r, "gloo", CPU).shard(data).tensors[0].tolist() for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


def test_state_digest_sees_every_value_and_name():
    a = {"w": torch.zeros(3), "c": torch.ones(2)}
    assert state_digest(a) == state_digest({"c": torch.ones(2), "w": torch.zeros(3)})
    assert state_digest(a) != state_digest({"w": torch.tensor([0.0, 0.0, 1e-30]), "c": torch.ones(2)})
    assert state_digest(a) != state_digest({"v": torch.zeros(3), "c": torch.ones(2)})
    bn = build_model("convnet", 10, (1, 8, 8), (4,)).state_dict()  # 0-dim integer buffers too
    assert state_digest(bn) == state_digest({k: v.clone() for k, v in bn.items()})


def test_only_rank_0_prints_a_user_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert main(["--budget", "-1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["--budget", "-1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ------------------------------------------------------------------ a one-process gloo group

@pytest.fixture
def gloo_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield DistContext(0, 1, 0, "gloo", CPU)
    dist.destroy_process_group()


def tiny_config() -> RunConfig:
    cfg = RunConfig(model="mlp", widths=(12, 6), dataset="random", budget=5, threads=1)
    cfg.pretrain.epochs, cfg.pretrain.batch_size, cfg.pretrain.milestones = 2, 16, (1,)
    cfg.search.max_epochs, cfg.search.batch_size, cfg.search.lam, cfg.search.lr = 6, 16, 0.05, 0.05
    cfg.finetune.epochs, cfg.finetune.batch_size = 2, 16
    return cfg


def run_tiny(out_dir, ctx=None, resume=False, stop_at=None):
    data = load_dataset("random", n=64, dim=8, num_classes=3)
    factory = lambda: build_model("mlp", 3, data.in_shape, (12, 6))  # noqa: E731
    trainer = Trainer(tiny_config(), factory, data, out_dir=out_dir, dist=ctx)

    def interrupt(t):
        if (t.stage, t.epoch) == stop_at:
            raise KeyboardInterrupt

    trainer.add_callback("on_epoch_end", interrupt)
    return trainer.run(resume=resume)


def comparable(result):
    return {k: v for k, v in result.items() if k not in ("latency", "online_latency_s", "distributed")}


def test_the_distributed_path_on_one_rank_reproduces_the_single_process_run(tmp_path, gloo_group):
    single = run_tiny(tmp_path / "single")
    ranked = run_tiny(tmp_path / "ranked", gloo_group)
    assert comparable(ranked) == comparable(single)
    assert ranked["distributed"]["replicas_identical"] and "distributed" not in single
    assert ((tmp_path / "ranked" / "metrics.jsonl").read_text()
            == (tmp_path / "single" / "metrics.jsonl").read_text())
    state = load_checkpoint(tmp_path / "ranked" / "checkpoint.pt")
    assert state["world_size"] == 1 and len(state["rng_ranks"]) == 1
    assert ranked["distributed"]["state_digests"] == [state_digest(state["model"])]


def test_an_interrupted_distributed_run_resumes_to_the_uninterrupted_result(tmp_path, gloo_group):
    expected = run_tiny(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run_tiny(tmp_path / "cut", gloo_group, stop_at=("search", 2))
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    resumed = run_tiny(tmp_path / "cut", gloo_group, resume=True)
    assert comparable(resumed) == comparable(expected)
    assert ((tmp_path / "cut" / "metrics.jsonl").read_text()
            == (tmp_path / "full" / "metrics.jsonl").read_text())


class WithSpare(torch.nn.Module):
    """A model with a parameter its forward never uses."""

    def __init__(self):
        super().__init__()
        self.used, self.spare = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.used(x)


def test_wrap_finds_unused_parameters_only_when_there_are_some(gloo_group):
    x = torch.randn(5, 4)
    plain = gloo_group.wrap(torch.nn.Linear(4, 3), x[:1])
    spare = gloo_group.wrap(WithSpare(), x[:1])
    assert not plain.find_unused_parameters and spare.find_unused_parameters
    assert all(p.grad is None for p in spare.parameters())  # the probe leaves no gradient
    for _ in range(2):  # a second step fails if DDP waits for the spare's gradient
        spare(x).sum().backward()
    assert spare.module.spare.weight.grad is None and spare.module.used.weight.grad is not None


def test_a_batchnorm_convnet_on_one_rank_matches_the_single_process_run(tmp_path, gloo_group):
    data = load_dataset("digits")
    cfg = tiny_config()
    cfg.model, cfg.dataset, cfg.budget, cfg.search.max_epochs, cfg.finetune.epochs = "convnet", "digits", 100, 2, 1
    cfg.pretrain.batch_size = cfg.search.batch_size = cfg.finetune.batch_size = 256
    factory = lambda: build_model("convnet", 10, data.in_shape, (2,))  # noqa: E731
    single = Trainer(cfg, factory, data).run()
    ranked = Trainer(cfg, factory, data, dist=gloo_group).run()
    assert comparable(ranked) == comparable(single) and ranked["distributed"]["replicas_identical"]


def test_collectives_agree_check_and_broadcast_checkpoints(tmp_path, gloo_group):
    assert gloo_group.all_sum([1, 2.5]) == [1.0, 2.5]
    assert gloo_group.agreed_int(7, "x") == 7
    save_checkpoint({"format": "snl_train/checkpoint-v1", "stage": "search", "epoch": 3,
                     "config": {}, "model": {}, "rng": {}}, tmp_path / "c.pt")
    assert gloo_group.load_checkpoint(tmp_path / "c.pt")["epoch"] == 3
    with pytest.raises(CheckpointError, match="no checkpoint"):
        gloo_group.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        gloo_group.load_checkpoint(tmp_path / "bad.pt")
    assert issubclass(ReplicaMismatch, RuntimeError)


# ------------------------------------------------------------------ two processes under torchrun

KILLER = '''
import os
import signal

from snl_train.models import build_model


def make(num_classes, in_shape, widths):
    """The digits MLP; rank 0 kills itself (SIGKILL) at training forward number KILL_AT.

    A forward pre-hook, not forward code: add_gates rewrites the forward with torch.fx.
    """
    model = build_model("mlp", num_classes, in_shape, widths)
    calls = [0]

    def count(module, inputs):
        if module.training and os.environ.get("RANK") == "0" and os.environ.get("KILL_AT"):
            calls[0] += 1
            if calls[0] == int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)

    model.register_forward_pre_hook(count)
    return model
'''

# digits (1437 training images), global batch 128: 12 steps per epoch, 64 per rank per step
ARGS = ["--model", "killer:make", "--dataset", "digits", "--widths", "16,8", "--budget", "8",
        "--pretrain-epochs", "1", "--search-epochs", "6", "--finetune-epochs", "1",
        "--lambda", "0.02", "--lr", "0.03", "--batch-size", "128"]
STEPS = 12


def torchrun(tmp_path, out, *extra, kill_at=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    env.pop("KILL_AT", None)
    if kill_at is not None:
        env["KILL_AT"] = str(kill_at)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "snl_train", *ARGS, "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240,
                          start_new_session=True)


def test_two_gloo_processes_resume_after_a_kill_agree_and_hold_the_budget(tmp_path):
    (tmp_path / "killer.py").write_text(textwrap.dedent(KILLER))
    out = tmp_path / "run"
    # rank 0 dies (SIGKILL) at step 5 of search epoch 2; the checkpoint holds search epoch 1
    killed = torchrun(tmp_path, out, kill_at=2 * STEPS + 5)
    assert killed.returncode != 0 and not (out / "result.json").exists()
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["stage"], state["epoch"], state["world_size"]) == ("search", 1, 2)
    assert len(state["rng_ranks"]) == 2
    assert killed.stdout.count("distributed: 2 processes") == 1  # one log: rank 0's

    proc = torchrun(tmp_path, out, "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("resumed from") == 1 and proc.stdout.count("result: ") == 1
    result = json.loads((out / "result.json").read_text())
    report = result["distributed"]
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    assert report["replicas_identical"] and len(set(report["state_digests"])) == 1
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["stage"] == "done"
    assert report["state_digests"][0] == state_digest(state["model"])  # what rank 0 saved
    gates = [v for k, v in state["model"].items() if "snl_gates" in k]
    assert gates and all(set(g.flatten().tolist()) <= {0.0, 1.0} for g in gates)
    assert result["relu_count"] == sum(int(g.sum()) for g in gates) <= result["relu_budget"] == 8
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stages = [(r["stage"], r["epoch"]) for r in metrics]  # one writer: each epoch once, in order
    for stage in ("pretrain", "search", "finetune"):
        epochs = [e for s, e in stages if s == stage]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs
    assert stages[:3] == [("pretrain", 1), ("search", 1), ("search", 2)]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "result.json"]
