"""Command line: ``python -m snl_train --model mlp --widths 256,64 --dataset digits --budget 60 --out DIR``.

Runs pretraining, the SNL search (Algorithm 1), binarization within the budget and KD
finetuning; writes DIR/metrics.jsonl (one line per epoch), DIR/checkpoint.pt (each epoch,
atomically) and DIR/result.json. Bad input: one ``python -m snl_train: error: ...`` line on
stderr, exit code 2, checked before training where it can be (:mod:`snl_train.preflight`):
a DIR that already holds a run needs ``--resume`` or ``--overwrite``. A NaN loss: a message,
exit code 1, the last good checkpoint kept. Interrupted (Ctrl-C): exit code 130; continue
with the same command plus ``--resume``. A closed stdout does not stop training.

Under ``torchrun --nproc_per_node=N -m snl_train ...`` every stage runs data-parallel
(:mod:`snl_train.distributed`); only rank 0 prints, draws progress bars and writes files.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from capacity.cli import (CommandParser, command, integer, integer_list, number, one_line, shown,
                          report_error, tolerant_printer)

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130
PROG = "python -m snl_train"


def _is_rank0() -> bool:
    """False in torchrun's processes other than rank 0 (they keep quiet; rank 0 speaks)."""
    return os.environ.get("RANK", "0").strip() in ("0", "")


def _error(message: str) -> None:
    if _is_rank0():
        report_error(PROG, message)


def _cpu_limit() -> int:
    return 4 * (os.cpu_count() or 1)


_int_list = integer_list(1, 2**31 - 1, max_items=1000)
_milestones = integer_list(1, empty=True)
_nonneg_int = integer(0)
_positive_int = integer(1)
_epochs = integer(0, 100_000)
_seed = integer(0, 2**32 - 1)
_cpu_count = integer(0, _cpu_limit(), why=f" (4 x the {os.cpu_count() or 1} CPUs)")
_positive_float = number(above=0)
_fraction = number(0, 1)
_epsilon = number(0, below=1)
_kappa = number(1)
_classes = integer(2, 1_000_000)
_holdout = number(0, below=1)
_seconds = number(0)
_group_weight = number(0, 1_000_000)
#: --network's choices (snl_train.latency.NETWORKS, named here to keep torch out of --help).
NETWORKS = ("localhost", "lan", "wan")


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {shown(text)}")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"num_classes\": 10}}', got {shown(text)}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .config import DATASETS

    p = CommandParser(PROG, failure="the loss became NaN or infinite (the last good checkpoint "
                                    "is kept)", description=(
        "Selective Network Linearization (ICML 2022, Algorithm 1): pretrain, learn which ReLUs "
        "to keep within a budget, binarize, finetune with knowledge distillation."),
        epilog="Epoch defaults: digits/random/collinear 30 pretrain (lr x0.1 at 20, 25),\n"
               "at most 300 search, 20 finetune, batch 64; CIFAR 160 (x0.1 at 80, 120), 200,\n"
               "100, batch 256; Tiny-ImageNet 100 pretrain (x0.1 at 50, 75).")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="mlp",
                   help="mlp, convnet, resnet18, resnet34, wrn22_8 or module:callable (default mlp)")
    g.add_argument("--model-args", type=_json_object, default={}, metavar="JSON",
                   help="keyword arguments of a module:callable factory, e.g. "
                        "'{\"model_name\": \"resnet18\"}' for timm:create_model")
    g.add_argument("--widths", type=_int_list, default=(256, 64),
                   help="hidden widths of the MLP, e.g. 256,64 (default; at most 1000 layers)")
    g.add_argument("--dataset", default="digits", choices=DATASETS, help="default digits")
    g.add_argument("--data-dir", help="directory holding cifar-10-batches-py/, cifar-100-python/ "
                                      "or tiny-imagenet-200/")
    g.add_argument("--input-shape", type=_int_list, metavar="SHAPE",
                   help="sample shape of --dataset random, e.g. 3,32,32 (default: 16 features)")
    g.add_argument("--classes", type=_classes, help="classes of --dataset random (default 2)")
    b = p.add_argument_group("budget (give one)")
    b.add_argument("--budget", metavar="N", type=_nonneg_int, help="ReLUs per sample to keep, e.g. 60")
    b.add_argument("--budget-fraction", metavar="F", type=_fraction,
                   help="budget as a fraction of the model's ReLU count, e.g. 0.1")
    b.add_argument("--latency-budget", metavar="SECONDS", type=_seconds,
                   help="instead of a ReLU count: estimated seconds per private inference "
                        "(two-party MPC, batch 1, secret weights) under the cost profile on "
                        "--network; the search stops and binarization keeps within it")
    b.add_argument("--allocation", default="learned", metavar="A",
                   help="ReLUs kept per site: learned (SNL's own, default), paper (Theorem 2 "
                        "boxed; two-hidden-layer MLPs), sharp (water-filling of the sharp bound), "
                        "uniform (the same fraction per site) or FILE.json of {site: count}")
    lat = p.add_argument_group("latency budget (with --latency-budget)")
    lat.add_argument("--network", choices=NETWORKS, default=None,
                     help="the network the cost model prices: localhost (this machine's measured "
                          "loopback, default), lan (0.3 ms, 1 Gbit/s) or wan (80 ms, 100 Mbit/s)")
    lat.add_argument("--cost-profile", metavar="PROFILE", default=None,
                     help="measured MPC cost profile: a name in snl_train/profiles or a JSON file "
                          "(default crypten-2pc)")
    lat.add_argument("--group-penalty", metavar="W", type=_group_weight, default=None,
                     help="weight of the per-site group penalty lambda * W * rho/beta * "
                          "sum_sites ||c_s||_2 / sqrt(n_s), which empties whole sites "
                          "(default 1; 0: the search's sum |c| alone)")
    s = p.add_argument_group("SNL search (Algorithm 1)")
    s.add_argument("--recipe", choices=("paper", "official"), default="paper",
                   help="paper: Algorithm 1 as printed (default); official: the paper's public "
                        "code (lambda rule, CE+KD weights, Adam without weight decay, batch 128, "
                        "cosine finetuning with wd 5e-4, best finetuning epoch on a validation split)")
    s.add_argument("--validation-fraction", metavar="F", type=_holdout, default=0.1,
                   help="official recipe: share of the training data held out to choose the "
                        "best finetuning epoch (default 0.1; 0: keep the last epoch)")
    s.add_argument("--lambda", dest="lam", metavar="LAMBDA", type=_positive_float, default=1e-5,
                   help="initial Lasso coefficient (default 1e-5)")
    s.add_argument("--kappa", type=_kappa, default=1.1,
                   help="lambda *= kappa when the count did not decrease (default 1.1)")
    s.add_argument("--epsilon", type=_epsilon, default=0.01,
                   help="keep a ReLU while c > epsilon, in [0, 1) (0.01)")
    s.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (1e-3)")
    s.add_argument("--search-epochs", metavar="N", type=_epochs,
                   help="maximum search epochs; the search ends early at the budget")
    s.add_argument("--granularity", choices=("pixel", "channel"), default="pixel",
                   help="pixel: one gate per ReLU (default); channel: one per channel (Eq. 6)")
    s.add_argument("--variant", choices=("linearize", "zero"), default="linearize",
                   help="linearize (SNL) or zero (Appendix B, Eq. 7)")
    s.add_argument("--from-scratch", action="store_true",
                   help="search from a random init (Appendix B); the pretrained net stays the teacher")
    s.add_argument("--exclude", default="", metavar="PATTERNS",
                   help="comma-separated gate-site name patterns to keep as plain ReLUs")
    t = p.add_argument_group("pretraining and finetuning")
    t.add_argument("--pretrain-epochs", metavar="N", type=_epochs,
                   help="epochs of plain training before the search (see the defaults below)")
    t.add_argument("--pretrain-lr", type=_positive_float, default=0.1, help="SGD lr (0.1)")
    t.add_argument("--milestones", type=_milestones,
                   help="pretraining epochs after which lr *= 0.1, e.g. 80,120")
    t.add_argument("--finetune-epochs", metavar="N", type=_epochs,
                   help="epochs of KD finetuning after binarization")
    t.add_argument("--finetune-lr", type=_positive_float, default=1e-3, help="SGD lr (1e-3)")
    t.add_argument("--batch-size", type=_positive_int, help="mini-batch size for every stage")
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True,
                   help="run directory for checkpoint.pt, metrics.jsonl and result.json")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from OUT/checkpoint.pt (same options)")
    r.add_argument("--overwrite", action="store_true",
                   help="start over: delete the run already in OUT first")
    r.add_argument("--seed", type=_seed, default=0, help="random seed, 0 .. 2^32-1 (default 0)")
    r.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    r.add_argument("--threads", type=_cpu_count, help="torch CPU threads (0: torch default)")
    r.add_argument("--workers", type=_cpu_count, default=0, help="DataLoader workers for host data (0)")
    r.add_argument("--quiet", action="store_true", help="no progress bars, no log lines")
    r.add_argument("--private", action="store_true",
                   help="at the end, run the network under two-party MPC (CrypTen) and add the "
                        "measured time, bytes and rounds to result.json (python -m snl_train.private)")
    f = p.add_argument_group("speed")
    f.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off",
                   help="mixed precision: bf16 (CPU or GPU) or fp16 (GPU, loss scaling); gates "
                        "and the L1 term stay fp32 (default off)")
    f.add_argument("--compile", action="store_true",
                   help="torch.compile the model for training steps (needs a C++ compiler on "
                        "CPU, Triton on GPU)")
    f.add_argument("--channels-last", action="store_true",
                   help="NHWC memory layout for convolutional models")
    f.add_argument("--host-data", action="store_true",
                   help="serve batches from the host Dataset instead of keeping in-memory "
                        "datasets on the device")
    return p


def config_from_args(args):
    """A :class:`RunConfig` from parsed arguments (dataset-dependent epoch defaults)."""
    from .config import (SMALL_DATASETS, RunConfig, digits_defaults, official_defaults,
                         tiny_imagenet_defaults)

    cfg = RunConfig(model=args.model, widths=args.widths, dataset=args.dataset,
                    data_dir=args.data_dir, budget=args.budget,
                    budget_fraction=args.budget_fraction, seed=args.seed, device=args.device,
                    allocation=args.allocation, num_workers=args.workers, amp=args.amp,
                    compile=args.compile,
                    channels_last=args.channels_last, device_data=not args.host_data,
                    model_args=args.model_args, input_shape=args.input_shape, classes=args.classes)
    if (args.input_shape or args.classes) and args.dataset != "random":
        raise ValueError("--input-shape and --classes apply to --dataset random only")
    if args.dataset in SMALL_DATASETS:
        digits_defaults(cfg)
    elif args.dataset == "tiny-imagenet":
        tiny_imagenet_defaults(cfg)
    if args.recipe == "official":
        official_defaults(cfg)
    cfg.validation_fraction = args.validation_fraction
    cfg.latency_budget = args.latency_budget
    for value, attr in ((args.network, "network"), (args.cost_profile, "cost_profile"),
                        (args.group_penalty, "group_penalty")):
        if value is not None:
            setattr(cfg, attr, value)
    s, p, f = cfg.search, cfg.pretrain, cfg.finetune
    s.lam, s.kappa, s.epsilon, s.lr = args.lam, args.kappa, args.epsilon, args.lr
    s.granularity, s.variant, s.from_scratch = args.granularity, args.variant, args.from_scratch
    s.exclude = tuple(x.strip() for x in args.exclude.split(",") if x.strip())
    p.lr, f.lr = args.pretrain_lr, args.finetune_lr
    for value, obj, attr in ((args.search_epochs, s, "max_epochs"), (args.pretrain_epochs, p, "epochs"),
                             (args.finetune_epochs, f, "epochs"), (args.milestones, p, "milestones"),
                             (args.threads, cfg, "threads")):
        if value is not None:
            setattr(obj, attr, value)
    if args.batch_size is not None:
        if args.batch_size == 0:
            raise ValueError("--batch-size must be >= 1")
        p.batch_size = s.batch_size = f.batch_size = args.batch_size
    return cfg


def _synthetic(cfg) -> dict:
    """``load_dataset`` options of the random set from ``--input-shape`` / ``--classes``."""
    options = {} if cfg.input_shape is None else {"shape": cfg.input_shape}
    return options if cfg.classes is None else {**options, "num_classes": cfg.classes}


@command(PROG, speaks=_is_rank0)
def main(argv=None) -> int:
    """Entry point; returns the exit code (0 ok, 1 NaN loss, 2 bad input, 130 interrupted)."""
    from .preflight import check_args, check_run_dir

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help
        return exit_.code
    check_args(args)
    if _is_rank0():  # only rank 0 writes files (also under torchrun)
        check_run_dir(args.out, args.resume, args.overwrite)
    try:
        return _run(args)
    except KeyboardInterrupt:
        if _is_rank0():
            sys.stderr.write(f"interrupted; continue with the same command plus --resume "
                             f"(checkpoint in {args.out})\n")
        return EXIT_INTERRUPTED


def _run(args) -> int:
    from .checkpoint import CheckpointError, remove_orphans
    from .data import DataError, load_dataset
    from .distributed import env_ranks, setup, teardown
    from .gates import GatingError
    from .models import build_model
    from .preflight import build_checked, check_model, check_size, clear_run
    from .speed import check_options
    from .trainer import BudgetError, NonFiniteLoss, Trainer, resolve_device

    def bad(message: str) -> int:
        _error(_summary(message))
        return EXIT_BAD_INPUT

    def factory():
        return build_model(cfg.model, data.num_classes, data.in_shape, cfg.widths, cfg.model_args)

    try:
        cfg = config_from_args(args)
        check_options(cfg.amp, cfg.compile, resolve_device(cfg.device))
        data = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed, **_synthetic(cfg))
        check_size(cfg.model, cfg.widths, data.in_shape, data.num_classes, cfg.pretrain.batch_size)
        probe = build_checked(factory, cfg.model)
        check_model(probe, data, cfg.model)
        env_ranks()  # a malformed torchrun environment is bad input too
        if args.private:  # say now, not after training, that it cannot be measured
            from .private import preflight
            preflight(probe, data.train[0][0].unsqueeze(0))
    except (ValueError, TypeError, ImportError) as exc:  # DataError is a ValueError
        return bad(str(exc))
    if _is_rank0():
        if args.overwrite:
            clear_run(Path(args.out))
        remove_orphans(args.out)  # temporary checkpoints of a killed write

    speak = not args.quiet and _is_rank0()
    out = tolerant_printer() if speak else (lambda line: None)  # a closed stdout: keep training
    try:
        ctx = setup(cfg.device)  # None unless started by torchrun with several processes
    except ValueError as exc:
        return bad(str(exc))
    try:
        if ctx is not None:
            out(f"distributed: {ctx.world_size} processes, {ctx.backend} backend, "
                f"{ctx.device.type}; batch {cfg.pretrain.batch_size} split across them")
        trainer = Trainer(cfg, factory, data, out_dir=args.out,
                          progress=speak and sys.stderr.isatty(), log=out, dist=ctx)
        result = trainer.run(resume=args.resume)
    except (BudgetError, CheckpointError, DataError, GatingError) as exc:
        return bad(str(exc))
    except NonFiniteLoss as exc:
        if _is_rank0():
            sys.stderr.write(f"stopped: {exc}; the last good checkpoint is kept in "
                             f"{args.out}/checkpoint.pt\n")
        return EXIT_FAILED
    finally:
        teardown(ctx)
    if result.get("test_selected"):
        sel, best = result["finetune_selection"], result["test_selected"]
        out(f"official recipe: finetuning epoch {sel['epoch']} kept ({sel['selected_on']}); "
            f"selected on the test set instead (as the public code reports): epoch "
            f"{best['epoch']}, test accuracy {best['test_accuracy']:.4f}")
    out(f"result: {result['relu_count']} of {result['relu_total']} ReLUs kept (budget "
        f"{result['relu_budget']}), test accuracy {result['test_accuracy']:.4f} (teacher "
        f"{result['teacher_test_accuracy']:.4f}), online latency {result['online_latency_s']:.4f} s")
    if "latency_budget" in result:
        lat = result["latency_budget"]
        out(f"latency: estimated {lat['estimated_seconds']:.4f} s per private inference on "
            f"{lat['network']} (budget {lat['budget_seconds']:.4f} s; linear layers "
            f"{lat['fixed_seconds']:.4f} s), ReLUs kept in {lat['active_sites']} of {lat['sites']} sites")
    if "learned_alpha" in result:
        pred = result["predicted"]
        kept = "learned" if cfg.allocation == "learned" else f"kept ({result['allocation']['kind']})"
        out(f"retained per layer: {kept} {result['learned_retained']}, paper optimum "
            f"{pred['paper'].get('retained')}, sharp optimum {pred['sharp'].get('retained')}")
    out(f"wrote {args.out}/result.json and {args.out}/metrics.jsonl")
    if args.private and _is_rank0():
        from .private import measure_after_training
        return measure_after_training(args.out, out)
    return 0


def _summary(message: str) -> str:
    """One line for an error; a DataLoader worker's error carries the original traceback,
    whose last line is the error itself."""
    if "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return one_line(message)


if __name__ == "__main__":
    sys.exit(main())
