"""Bringing your own model to ``python -m snl_train``: factories with their own arguments, an
image-shaped synthetic set, the ReLU family in result.json, and one-line refusals."""
import json
import re

import pytest
import torch
import torch.nn as nn

from snl_train.__main__ import main
from snl_train.data import DataError, load_dataset, random_images
from snl_train.models import build_model

RUN = ["--dataset", "random", "--input-shape", "3,8,8", "--classes", "3", "--pretrain-epochs", "1",
       "--search-epochs", "1", "--finetune-epochs", "1", "--batch-size", "16", "--threads", "1",
       "--quiet"]


def gelu_net(num_classes=3):
    """A model with parameters but no ReLU-family activation (factory for the CLI test)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8), nn.GELU(), nn.Linear(8, num_classes))


def zoo_style(**kwargs):
    """A model-zoo factory: everything through **kwargs, passed on to the model."""
    from snl_train.replicas import mobilenet_v2_like

    return mobilenet_v2_like(width=4, **kwargs)


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_relu6_model_from_a_zoo_style_factory_on_random_images(tmp_path, capsys):
    """**kwargs factories get num_classes only (in_shape would reach the model class and
    fail); the ReLU6 sites are gated and result.json gives their comparison cost."""
    code, out, err = run(capsys, *RUN, "--model", "test_any_model:zoo_style",
                         "--budget-fraction", "0.2", "--out", str(tmp_path))
    assert (code, out, err) == (0, "", "")
    result = json.loads((tmp_path / "result.json").read_text())
    family = result["activation_families"]["relu6"]
    assert family["comparisons_per_element"] == 2 and family["sites"] == 8
    assert family["kept"] == result["relu_count"] <= result["relu_budget"]
    assert family["kept_comparisons"] == 2 * result["relu_count"]
    assert {layer["family"] for layer in result["per_layer"]} == {"relu6"}
    assert result["gating"]["mechanism"] == "fx" and result["training_only_sites"] == []
    assert result["config"]["input_shape"] == [3, 8, 8] and result["config"]["classes"] == 3


def test_model_args_reach_the_factory_and_are_recorded(tmp_path, capsys):
    code, _, err = run(capsys, *RUN, "--model", "snl_train.replicas:aux_head_net",
                       "--model-args", '{"width": 2, "aux_weight": 0.5}', "--budget", "40",
                       "--out", str(tmp_path))
    assert (code, err) == (0, "")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["config"]["model_args"] == {"width": 2, "aux_weight": 0.5}
    assert result["relu_total"] == 2 * 64 + 4 * 16  # width 2: stem 2x8x8, body 4x4x4
    assert result["training_only_sites"] == [{"name": "aux.3", "family": "relu", "total": 16}]
    assert result["gating"]["mechanism"] == "runtime"


@pytest.mark.parametrize("argv, message", [
    (["--model", "test_any_model:gelu_net", "--budget", "1"],
     "Sequential has no ReLU, ReLU6, Hardtanh or LeakyReLU that runs at inference.*GELU x1"),
    (["--model", "mlp", "--model-args", '{"a": 1}', "--budget", "1"], "model arguments are for"),
    (["--model", "test_any_model:gelu_net", "--model-args", "[1]", "--budget", "1"],
     "expected a JSON object"),
    (["--model", "test_any_model:gelu_net", "--model-args", '{"depth": 3}', "--budget", "1"],
     r"gelu_net\(num_classes=3, depth=3\) failed: TypeError"),
    (["--dataset", "digits", "--input-shape", "3,8,8", "--budget", "1"], "apply to --dataset random"),
    (["--classes", "1", "--budget", "1"], r"--classes: must be in \[2, "),
])
def test_bad_models_and_options_get_one_line_and_exit_2(tmp_path, capsys, argv, message):
    """Refused before any training (later options override RUN's)."""
    code, out, err = run(capsys, *RUN, *argv, "--out", str(tmp_path / "run"))
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("python -m snl_train: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "result.json").exists()


def test_factories_get_only_the_arguments_they_accept():
    seen = {}

    def named(num_classes, in_shape, extra=0):
        seen["named"] = (num_classes, in_shape, extra)
        return nn.Linear(1, 1)

    def var_keyword(**kwargs):
        seen["kwargs"] = kwargs
        return nn.Linear(1, 1)

    from snl_train.models import _call_factory

    options = {"num_classes": 5, "in_shape": (1, 2), "widths": (3,)}
    _call_factory(named, "m:named", options, {"extra": 7})
    _call_factory(var_keyword, "m:kw", options, {"model_name": "r18", "num_classes": 9})
    assert seen == {"named": (5, (1, 2), 7), "kwargs": {"num_classes": 9, "model_name": "r18"}}
    with pytest.raises(ValueError, match="returned int"):
        _call_factory(lambda: 3, "m:int", options, {})
    assert build_model("test_any_model:gelu_net", 4, (3, 8, 8))(torch.zeros(1, 3, 8, 8)).shape == (1, 4)


def test_random_images_are_image_shaped_and_reproducible():
    a, b = random_images((3, 4, 5), 7, n=20, seed=3), load_dataset("random", seed=3, shape=(3, 4, 5),
                                                                   num_classes=7, n=20)
    assert a.in_shape == (3, 4, 5) and a.num_classes == 7 and len(a.train) == 20
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert set(a.train.tensors[1].tolist()) <= set(range(7)) and a.train is a.test
    with pytest.raises(DataError, match="at least 2 classes"):
        random_images((3, 4), 1)
    with pytest.raises(DataError, match="positive sizes"):
        random_images((3, 0, 4))
