"""Tests for ``python -m snl_train``: outputs of a tiny run, resume, and one clean error line
with exit code 2 for every kind of bad input (exit code 1 for a NaN loss)."""
import json
import subprocess
import sys

import pytest
import torch

from snl_train.__main__ import main
from snl_train.checkpoint import load_checkpoint

TINY = ["--dataset", "random", "--widths", "8,4", "--pretrain-epochs", "2",
        "--search-epochs", "4", "--finetune-epochs", "1", "--lambda", "0.05", "--lr", "0.05",
        "--threads", "1", "--quiet"]


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_tiny_run_writes_result_metrics_and_checkpoint(tmp_path, capsys):
    code, out, err = run(capsys, *TINY, "--budget", "5", "--out", str(tmp_path))
    assert (code, out, err) == (0, "", "")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["relu_budget"] == 5 and result["relu_count"] <= 5 and result["relu_total"] == 12
    assert result["relu_count"] == sum(layer["kept"] for layer in result["per_layer"])
    assert [layer["total"] for layer in result["per_layer"]] == [8, 4]
    assert result["online_latency_s"] >= result["relu_count"] * 0.021 / 1000
    assert result["config"]["widths"] == [8, 4] and result["config"]["search"]["lam"] == 0.05
    a1, a2 = result["learned_alpha"]
    assert (a1 * 8, a2 * 4) == tuple(layer["kept"] for layer in result["per_layer"])
    sharp = result["predicted"]["sharp"]
    assert sharp["retained"] == ["5/2", "5/2"] and sorted(sharp["integer_retained"]) == [[2, 3], [3, 2]]
    assert result["predicted"]["paper"]["alpha_float"][0] == pytest.approx(
        eval_fraction(result["predicted"]["paper"]["alpha"][0]))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines][:2] == ["pretrain", "pretrain"]
    assert set(lines[0]) == {"stage", "epoch", "loss", "train_accuracy", "test_accuracy",
                             "relu_count", "lambda"}
    assert all(r["lambda"] is not None for r in lines if r["stage"] == "search")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["stage"] == "done"


def eval_fraction(text):
    num, _, den = text.partition("/")
    return int(num) / int(den or 1)


def test_budget_fraction_and_progress_lines(tmp_path, capsys):
    argv = [a for a in TINY if a != "--quiet"]
    code, out, _ = run(capsys, *argv, "--budget-fraction", "0.25", "--out", str(tmp_path))
    assert code == 0
    assert json.loads((tmp_path / "result.json").read_text())["relu_budget"] == 3
    assert "budget 3" in out and "result: " in out and "wrote " in out


def test_resume_continues_an_interrupted_run_to_the_same_result(tmp_path, capsys, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run(capsys, *TINY, "--budget", "5", "--out", str(full))[0] == 0
    from snl_train import trainer as trainer_module

    original = trainer_module.Trainer._end_epoch

    def end_epoch_then_stop(self, record):
        original(self, record)
        if self.stage == "search" and self.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_end_epoch", end_epoch_then_stop)
    code, _, err = run(capsys, *TINY, "--budget", "5", "--out", str(cut))
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(trainer_module.Trainer, "_end_epoch", original)
    assert run(capsys, *TINY, "--budget", "5", "--out", str(cut), "--resume")[0] == 0
    drop = ("latency", "online_latency_s")
    a, b = (json.loads((d / "result.json").read_text()) for d in (full, cut))
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert (full / "metrics.jsonl").read_text() == (cut / "metrics.jsonl").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--model", "nosuchnet", "--budget", "3"], "unknown model"),
    (["--dataset", "mnist", "--budget", "3"], "invalid choice: 'mnist'"),
    (["--budget", "-1"], "must be >= 0"),
    (["--budget", "13"], "exceeds the model's 12 ReLUs"),
    (["--budget-fraction", "1.5"], "must be in [0, 1]"),
    ([], "exactly one of --budget"),
    (["--widths", "8,0", "--budget", "3"], "positive integers"),
    (["--widths", "8,x", "--budget", "3"], "positive integers"),
    (["--device", "cuda:0", "--budget", "3"] if not torch.cuda.is_available()
     else ["--device", "tpu", "--budget", "3"], "device"),
    (["--exclude", "features.4", "--budget", "3"], "excluded sites alone keep 4"),
])
def test_bad_input_gives_one_error_line_and_exit_2(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, *TINY, *argv, "--out", str(tmp_path))
    assert code == 2
    assert err.startswith("python -m snl_train: error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err and not (tmp_path / "result.json").exists()


def test_missing_data_directory(tmp_path, capsys):
    code, _, err = run(capsys, *TINY, "--dataset", "cifar10", "--data-dir", str(tmp_path),
                       "--budget", "3", "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1 and "cifar-10-batches-py" in err


def test_corrupt_missing_and_incompatible_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, *TINY, "--budget", "3", "--out", str(out), "--resume")
    assert code == 2 and "no checkpoint" in err
    assert run(capsys, *TINY, "--budget", "3", "--out", str(out))[0] == 0
    code, _, err = run(capsys, *TINY, "--widths", "8,5", "--budget", "3", "--out", str(out), "--resume")
    assert code == 2 and "widths" in err and err.count("\n") == 1
    code, _, err = run(capsys, *TINY, "--granularity", "channel", "--budget", "3",
                       "--out", str(out), "--resume")
    assert code == 2 and "granularity" in err
    (out / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    code, _, err = run(capsys, *TINY, "--budget", "3", "--out", str(out), "--resume")
    assert code == 2 and "corrupt checkpoint" in err and err.count("\n") == 1
    torch.save({"format": "something else"}, out / "checkpoint.pt")
    code, _, err = run(capsys, *TINY, "--budget", "3", "--out", str(out), "--resume")
    assert code == 2 and "not an snl_train checkpoint" in err


def test_nan_loss_exits_1_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    code, _, err = run(capsys, *TINY, "--budget", "3", "--pretrain-lr", "1e30", "--out", str(tmp_path))
    assert code == 1 and "loss is nan" in err and "last good checkpoint" in err
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["stage"] == "pretrain"
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "result.json").exists()


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snl_train", "--budget", "3", "--widths", "0",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("python -m snl_train: error: argument --widths: expected comma-separated "
                           "positive integers below 2^31, got '0' (see --help)\n")
