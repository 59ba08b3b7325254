"""Tests for benchmarks/gpu.py without a GPU: the one-line refusal, and the whole script's logic
on the CPU (``--cpu-check``) with a small ConvNet standing in for ResNet-18."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from snl_train.models import SmallConvNet

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def small(gpu, monkeypatch):
    """A 4-channel ConvNet instead of the ResNet, so that tracing it takes a moment."""
    monkeypatch.setattr(gpu, "build_resnet", lambda settings: SmallConvNet(3, settings.classes, width=4))
    return gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_one_line_and_exit_2(gpu, tmp_path, capsys):
    assert gpu.main(["--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no CUDA device") and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_cpu_check_measures_every_configuration_and_writes_one_json(small, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert small.main(["--cpu-check", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    keys = {(r["variant"], r["mode"], r["precision"]) for r in report["steps"]}
    assert keys == {(v, m, p) for v in small.VARIANTS for m in small.MODES for p in small.PRECISIONS}
    for row in report["steps"]:
        assert row["best_ms"] <= row["median_ms"] and row["images_per_s"] > 0
        assert row["x_plain"] == pytest.approx(1.0) if row["variant"] == "plain" else row["x_plain"] > 0
    assert [r["setup"] for r in report["search"]] == list(small.SEARCH_SETUPS)[:2]
    assert all(r["epochs"] == 2 and r["epochs_per_s"] > 0 for r in report["search"])
    assert report["skipped"] == ["search: compile bf16 channels-last, device data"]
    table = capsys.readouterr().out
    assert "gated   compiled  bf16" in table and f"wrote {out}" in table


def test_compiled_configurations_are_skipped_past_the_time_limit(small, tmp_path):
    settings = small.cpu_check_settings()
    settings.minutes, settings.steps = 0.0, 1
    skipped = []
    rows = small.measure_steps(settings, small.Clock(settings.minutes), skipped)
    assert {r["mode"] for r in rows} == {"eager"} and len(rows) == 6
    assert len(skipped) == 6 and all("/compiled/" in s for s in skipped)
