"""Tests for snl_train.speed and the trainer's speed options (--amp, --compile,
--channels-last, on-device data): tiny runs against the fp32 eager run, gates compiled
without graph breaks, the fp16 scaler across a resume, and every refused combination.

Tolerance: a bf16, compiled or channels-last run reaches its budget and ends within 0.03 test
accuracy (11 of 360 digits) of the fp32 eager run with the same seed.
"""
import copy
import json

import pytest
import torch

from snl_train.__main__ import main
from snl_train.checkpoint import load_checkpoint
from snl_train.config import RunConfig
from snl_train.data import AugmentedImages, DataBundle, load_dataset
from snl_train.gates import add_gates, binarize_gates, freeze_gates, gate_parameters, gate_sites
from snl_train.models import SmallConvNet, build_model, resnet18
from snl_train.speed import CompiledForBatch, Precision, check_options, compile_problem
from snl_train.trainer import Trainer

TOLERANCE = 0.03
DIGITS = load_dataset("digits", seed=0)


def digits_config(model="mlp", **speed) -> RunConfig:
    cfg = RunConfig(model=model, widths=(32, 16), dataset="digits", budget=12, threads=1, **speed)
    cfg.pretrain.epochs, cfg.pretrain.batch_size, cfg.pretrain.milestones = 4, 64, ()
    cfg.search.max_epochs, cfg.search.batch_size, cfg.search.lam, cfg.search.lr = 30, 64, 0.01, 0.01
    cfg.finetune.epochs, cfg.finetune.batch_size = 2, 64
    return cfg


def digits_trainer(cfg, out_dir=None, factory=None):
    factory = factory or (lambda: build_model(cfg.model, 10, (1, 8, 8), cfg.widths))
    return Trainer(cfg, factory, DIGITS, out_dir=out_dir)


@pytest.fixture(scope="module")
def eager_digits():
    """The fp32 eager reference run (MLP on digits), shared by the comparisons below."""
    return digits_trainer(digits_config()).run()


def assert_close_to_reference(result, reference):
    assert result["budget_reached_by_search"] and result["relu_count"] <= result["relu_budget"]
    assert abs(result["test_accuracy"] - reference["test_accuracy"]) <= TOLERANCE


# ------------------------------------------------------------------ mixed precision

def test_bf16_run_reaches_the_budget_within_tolerance_and_keeps_gates_fp32(eager_digits):
    """bf16 autocasts the layers' outputs, keeps every gate slope fp32, and ends near fp32."""
    dtypes = set()

    def factory():
        net = build_model("mlp", 10, (1, 8, 8), (32, 16))
        net.features[1].register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
        return net

    trainer = digits_trainer(digits_config(amp="bf16"), factory=factory)
    result = trainer.run()
    assert torch.bfloat16 in dtypes
    assert all(c.dtype == torch.float32 for c in gate_parameters(trainer.model))
    assert result["relu_count"] == sum(layer["kept"] for layer in result["per_layer"])
    assert_close_to_reference(result, eager_digits)


def test_fp16_scaler_state_is_checkpointed_and_resumed(tmp_path, monkeypatch):
    """An interrupted fp16 run resumes with its loss scale and ends as the uninterrupted one.

    fp16 is refused on a CPU; the check is lifted here to exercise the scaler (CPU autocast
    and GradScaler exist, they are just not faster than fp32).
    """
    monkeypatch.setattr("snl_train.trainer.check_options", lambda *args: None)
    cfg = digits_config(amp="fp16")
    cfg.pretrain.epochs, cfg.search.max_epochs = 2, 3

    def trainer_for(out_dir):
        trainer = digits_trainer(cfg, out_dir)
        # A scale that overflows at first and grows every other step: it changes all the
        # time, so a resume that lost it would skip other steps than the uninterrupted run.
        trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24, growth_interval=2)
        return trainer

    expected = trainer_for(tmp_path / "full").run()

    def interrupt(trainer):
        if trainer.stage == "search" and trainer.epoch == 2:
            raise KeyboardInterrupt

    trainer = trainer_for(tmp_path / "cut")
    trainer.add_callback("on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    scaler = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["scaler"]
    assert scaler["scale"] != 2.0 ** 24 and scaler["growth_interval"] == 2
    resumed = trainer_for(tmp_path / "cut").run(resume=True)
    drop = ("latency", "online_latency_s")
    assert ({k: v for k, v in resumed.items() if k not in drop}
            == {k: v for k, v in expected.items() if k not in drop})


def test_precision_off_is_plain_fp32_and_rejects_unknown_modes():
    precision = Precision("off", torch.device("cpu"))
    with precision.autocast():
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32
    assert precision.scaler is None and precision.state_dict() is None
    with pytest.raises(ValueError, match="amp must be one of"):
        Precision("fp8", torch.device("cpu"))


# ------------------------------------------------------------------ torch.compile

def _compiled_pair(trainer, out: dict) -> None:
    """At the end of pretraining: plain and gated (c = 1) copies, compiled, forward + backward."""
    if trainer.stage != "pretrain":
        return
    x = DIGITS.test.tensors[0][:64]  # a full batch: the compiled path of CompiledForBatch
    for name, net in (("plain", copy.deepcopy(trainer.model)),
                      ("gated", add_gates(copy.deepcopy(trainer.model), example_input=x[:1]))):
        net.train()
        logits = CompiledForBatch(net)(x)
        logits.square().sum().backward()
        out[name] = (logits.detach(), {k: p.grad for k, p in net.named_parameters()
                                       if not k.startswith("snl_gates")})


def test_compiled_run_matches_eager_and_gates_compile_without_graph_breaks(tmp_path, eager_digits):
    """One inductor-compiled run checks everything compiled, sharing its compiled graphs.

    - every stage's graph (plain, gated with learnable c, gated with frozen c) compiles
      without a graph break;
    - the gated model at c = 1 computes what the plain one computes, both compiled;
    - the run reaches its budget within tolerance of the eager run;
    - checkpoints hold the model's own keys (no compiled-wrapper prefixes), weights-only.
    """
    from torch._dynamo.utils import counters

    counters.clear()
    pair = {}
    trainer = digits_trainer(digits_config(compile=True), tmp_path)
    trainer.add_callback("on_stage_end", lambda t: _compiled_pair(t, pair))
    result = trainer.run()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 3
    (plain, plain_grads), (gated, gated_grads) = pair["plain"], pair["gated"]
    assert torch.allclose(plain, gated, atol=1e-6, rtol=0)
    assert plain_grads.keys() == gated_grads.keys()
    assert all(torch.allclose(plain_grads[k], gated_grads[k], atol=1e-5) for k in plain_grads)
    assert_close_to_reference(result, eager_digits)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert set(state["model"]) == set(trainer.model.state_dict())
    assert not any("_orig_mod" in key for key in state["model"])


@pytest.mark.parametrize("frozen", [False, True], ids=["search", "finetune"])
def test_gated_cifar_resnet18_is_captured_as_one_graph(frozen):
    """dynamo captures the channels-last gated ResNet-18 whole, learnable or frozen gates.

    The cheap "eager" backend checks graph capture (fullgraph: a graph break raises) without
    code generation; inductor itself is exercised on the MLP above.
    """
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    model = add_gates(resnet18(10).to(memory_format=torch.channels_last), example_input=x)
    if frozen:
        for _, gate in gate_sites(model):
            gate.c.data.uniform_(0, 1)
        freeze_gates(binarize_gates(model, 0.5))
    reference = copy.deepcopy(model)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    out, expected = compiled(x), reference(x)
    out.square().sum().backward()
    expected.square().sum().backward()
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5)
    for name in ("fc", "conv1", "layer4.1.conv2"):
        grad, expected_grad = (net.get_submodule(name).weight.grad for net in (model, reference))
        assert torch.allclose(grad, expected_grad, rtol=1e-4, atol=1e-4 * expected_grad.abs().max())


@pytest.mark.parametrize("granularity, variant", [("channel", "linearize"), ("pixel", "zero")])
def test_other_gate_kinds_are_captured_as_one_graph(granularity, variant):
    x = torch.randn(4, 1, 8, 8)
    model = add_gates(SmallConvNet(), granularity=granularity, variant=variant, example_input=x)
    out = torch.compile(model, backend="eager", fullgraph=True)(x)
    out.sum().backward()
    assert all(c.grad is not None for c in gate_parameters(model))


def test_compiled_gates_keep_the_activation_dtype_under_bf16():
    """Compiled as eagerly: a bf16 activation through an fp32 slope stays bf16; c's grad is fp32."""
    x = torch.randn(4, 1, 8, 8)
    model = add_gates(build_model("mlp", 10, (1, 8, 8), (12,)), example_input=x)
    dtypes = []
    gate_sites(model)[0][1].register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compiled(x).float().sum().backward()
        model(x)
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert gate_parameters(model)[0].grad.dtype == torch.float32


def test_compiled_for_batch_compiles_one_size_and_runs_the_others_eagerly():
    from torch._dynamo.utils import counters

    counters.clear()
    net = torch.nn.Linear(3, 2)
    wrapper = CompiledForBatch(net, backend="eager")
    for n in (4, 3, 4, 1):
        assert torch.allclose(wrapper(torch.ones(n, 3)), net(torch.ones(n, 3)))
    assert wrapper.batch_size == 4 and counters["stats"]["unique_graphs"] == 1
    assert list(wrapper.parameters()) == list(net.parameters())  # listed once


# ------------------------------------------------------------------ layout and data

def test_channels_last_is_a_layout_not_a_different_run():
    """A channels-last ConvNet trains in NHWC (model and teacher) to the contiguous run's result."""
    runs = {}
    for layout in (False, True):
        cfg = digits_config("convnet", channels_last=layout)
        cfg.widths, cfg.budget = (4,), 300
        cfg.pretrain.epochs, cfg.search.max_epochs, cfg.finetune.epochs = 2, 2, 1
        trainer = digits_trainer(cfg)
        runs[layout] = trainer.run()
    for net in (trainer.model, trainer.teacher):
        assert net.features[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert runs[True]["relu_count"] == runs[False]["relu_count"] <= 300
    assert abs(runs[True]["test_accuracy"] - runs[False]["test_accuracy"]) <= TOLERANCE


def test_on_device_tensor_data_gives_the_host_run_exactly():
    """Digits and the synthetic sets: the same permutation, so the same batches and result."""
    data = load_dataset("random", n=96, dim=8, num_classes=3)
    results = []
    for device_data in (True, False):
        cfg = digits_config(device_data=device_data)
        cfg.widths, cfg.budget = (12, 6), 5
        cfg.pretrain.epochs, cfg.search.max_epochs, cfg.finetune.epochs = 2, 3, 1
        result = Trainer(cfg, lambda: build_model("mlp", 3, (8,), (12, 6)), data).run()
        results.append({k: v for k, v in result.items()  # configs differ in device_data only
                        if k not in ("latency", "online_latency_s", "config")})
    assert results[0] == results[1]


def test_on_device_augmented_images_train_end_to_end():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (48, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 3, (48,))
    data = DataBundle(AugmentedImages(images, labels, (0.5,) * 3, (0.25,) * 3, True),
                      AugmentedImages(images[:16], labels[:16], (0.5,) * 3, (0.25,) * 3, False),
                      3, (3, 8, 8), "tiny-images")
    cfg = digits_config("convnet", channels_last=True)
    cfg.widths, cfg.budget = (4,), 40
    cfg.pretrain.epochs, cfg.search.max_epochs, cfg.finetune.epochs = 1, 2, 1
    result = Trainer(cfg, lambda: SmallConvNet(3, 3, width=4), data).run()
    assert result["relu_count"] <= 40 and 0 <= result["test_accuracy"] <= 1


# ------------------------------------------------------------------ refused combinations

def run_cli(capsys, *argv):
    code = main(["--dataset", "random", "--widths", "8,4", "--pretrain-epochs", "1",
                 "--search-epochs", "1", "--finetune-epochs", "1", "--threads", "1", "--quiet",
                 "--budget", "5", *argv])
    captured = capsys.readouterr()
    return code, captured.err


def test_fp16_on_cpu_is_refused_with_one_line(tmp_path, capsys):
    code, err = run_cli(capsys, "--amp", "fp16", "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("python -m snl_train: error: --amp fp16 needs a CUDA device") and "--amp bf16" in err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_unknown_amp_mode_is_refused(tmp_path, capsys):
    code, err = run_cli(capsys, "--amp", "fp8", "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "invalid choice: 'fp8'" in err


def test_compile_without_a_cpp_compiler_is_refused_with_one_line(tmp_path, capsys):
    import torch._inductor.config as inductor_config

    # torch's own config patch, not monkeypatch: after monkeypatch's undo, a later test in
    # this module read cpp.cxx as missing ("torch._inductor.config.cpp.cxx does not exist")
    with inductor_config.patch({"cpp.cxx": (None, "no-such-compiler++")}):
        code, err = run_cli(capsys, "--compile", "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "needs a C++ compiler" in err and "no-such-compiler++" in err


def test_compile_refusals_on_gpus_and_unsupported_pythons(monkeypatch):
    import importlib.util

    import torch._dynamo

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "triton" else real_find_spec(name, *a))
    assert "needs Triton" in compile_problem(torch.device("cuda"))
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    assert "does not support this Python" in compile_problem(torch.device("cpu"))


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ValueError, match="no bf16 support; use --amp fp16"):
        check_options("bf16", False, torch.device("cuda"))
    check_options("bf16", False, torch.device("cpu"))  # the CPU emulates what it lacks


def test_trainer_api_refuses_fp16_on_cpu_before_training(tmp_path):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        digits_trainer(digits_config(amp="fp16"), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_speed_options_reach_the_config(tmp_path, capsys):
    code, _ = run_cli(capsys, "--amp", "bf16", "--channels-last", "--host-data", "--out", str(tmp_path))
    assert code == 0
    config = json.loads((tmp_path / "result.json").read_text())["config"]
    assert (config["amp"], config["compile"], config["channels_last"], config["device_data"]) == (
        "bf16", False, True, False)


def test_compile_with_a_model_gated_at_run_time_runs_its_gated_stages_eagerly(tmp_path, capsys):
    """torch.compile cannot run the run-time gating interceptor (its call-site keys come from
    Python frames): --compile on such a model says so once and trains the gated stages
    eagerly instead of failing after pretraining."""
    code = main(["--model", "snl_train.replicas:aux_head_net", "--model-args", '{"width": 2}',
                 "--dataset", "random", "--input-shape", "3,8,8", "--classes", "3",
                 "--pretrain-epochs", "0", "--search-epochs", "1", "--finetune-epochs", "1",
                 "--batch-size", "16", "--threads", "1", "--budget", "40", "--compile",
                 "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.count("warning: --compile: this model is gated at run time") == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["gating"]["mechanism"] == "runtime" and result["config"]["compile"]
    assert result["relu_count"] <= result["relu_budget"]


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(tmp_path):
    """bf16 runs on any CPU, but without avx512_bf16 / amx_bf16 it is emulated and slow: the
    trainer says so; with either flag, on a GPU, or where the flags cannot be read, it does not."""
    from snl_train.speed import cpu_has_native_bf16, precision_warning

    plain, native, amx = tmp_path / "avx2", tmp_path / "avx512", tmp_path / "amx"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    native.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    amx.write_text("flags\t\t: fpu avx2 amx_tile amx_bf16\n")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cpu_has_native_bf16(str(plain)) is False
    assert cpu_has_native_bf16(str(native)) is True and cpu_has_native_bf16(str(amx)) is True
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is None
    assert "emulated" in precision_warning("bf16", cpu, str(plain))
    assert precision_warning("bf16", cpu, str(native)) is None
    assert precision_warning("bf16", cpu, str(tmp_path / "missing")) is None
    assert precision_warning("off", cpu, str(plain)) is None
    assert precision_warning("bf16", cuda, str(plain)) is None


@pytest.mark.parametrize("activation", [torch.nn.ReLU6(), torch.nn.Hardtanh(-0.5, 0.75),
                                        torch.nn.LeakyReLU(0.2)], ids=["relu6", "hardtanh", "leaky"])
def test_three_piece_and_leaky_gates_train_under_bf16_autocast(activation):
    """Gates of the other ReLU-family activations interpolate with torch.lerp, which needs one
    dtype: under bf16 autocast their slopes (fp32) meet bf16 activations. Forward and backward
    run, c's gradient stays fp32 and is close to the fp32 one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), activation, torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2))
    x = torch.randn(8, 3, 8, 8)
    add_gates(model, example_input=x[:1])
    (_, gate), = gate_sites(model)
    with torch.no_grad():
        gate.c.uniform_(0.2, 0.9)
    grads = {}
    for amp in ("off", "bf16"):
        model.zero_grad()
        with Precision(amp, torch.device("cpu")).autocast():
            out = model(x).float()
        out.square().sum().backward()
        grads[amp] = gate.c.grad.clone()
    assert grads["bf16"].dtype == torch.float32 and gate.c.dtype == torch.float32
    scale = grads["off"].abs().max()
    assert scale > 0 and (grads["bf16"] - grads["off"]).abs().max() <= 0.05 * scale
