"""Command line: ``python -m snl_train --model mlp --widths 256,64 --dataset digits --budget 60 --out DIR``.

Runs pretraining, the SNL search (Algorithm 1), binarization within the budget and KD
finetuning; writes DIR/metrics.jsonl (one line per epoch), DIR/checkpoint.pt (each epoch,
atomically) and DIR/result.json. Bad input: one ``error: ...`` line on stderr, exit code 2.
A NaN loss: a message, exit code 1, the last good checkpoint kept. Interrupted (Ctrl-C):
exit code 130; continue with the same command plus ``--resume``.

Under ``torchrun --nproc_per_node=N -m snl_train ...`` every stage runs data-parallel
(:mod:`snl_train.distributed`); only rank 0 prints, draws progress bars and writes files.
"""
from __future__ import annotations

import argparse
import os
import sys

from capacity.cli import quiet_broken_pipe

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


def _is_rank0() -> bool:
    """False in torchrun's processes other than rank 0 (they keep quiet; rank 0 speaks)."""
    return os.environ.get("RANK", "0").strip() in ("0", "")


def _error(message: str) -> None:
    if _is_rank0():
        sys.stderr.write(f"error: {message}\n")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        _error(message)
        raise SystemExit(EXIT_BAD_INPUT)


def _int_list(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _milestones(text: str) -> tuple:
    return () if text.strip() == "" else _int_list(text)


def _checked(convert, ok, expected: str, requirement: str):
    """An argparse type: ``convert(text)``, refused unless ``ok(value)``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    return parse


_nonneg_int = _checked(int, lambda v: v >= 0, "a non-negative integer", ">= 0")
_positive_float = _checked(float, lambda v: v > 0, "a number", "> 0")
_fraction = _checked(float, lambda v: 0 <= v <= 1, "a number in [0, 1]", "in [0, 1]")


def build_parser() -> argparse.ArgumentParser:
    from .config import DATASETS

    p = _Parser(prog="python -m snl_train", description=(
        "Selective Network Linearization (ICML 2022, Algorithm 1): pretrain, learn which ReLUs "
        "to keep within a budget, binarize, finetune with knowledge distillation."),
        epilog="Epoch defaults: digits/random/collinear 30 pretrain (lr x0.1 at 20, 25), "
               "at most 300 search, 20 finetune, batch 64; CIFAR 160 (x0.1 at 80, 120), 200, "
               "100, batch 256; Tiny-ImageNet 100 pretrain (x0.1 at 50, 75).")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="mlp",
                   help="mlp, convnet, resnet18, resnet34, wrn22_8 or module:callable (default mlp)")
    g.add_argument("--widths", type=_int_list, default=(256, 64),
                   help="hidden widths of the MLP, e.g. 256,64 (default)")
    g.add_argument("--dataset", default="digits", choices=DATASETS, help="default digits")
    g.add_argument("--data-dir", help="directory holding cifar-10-batches-py/, cifar-100-python/ "
                                      "or tiny-imagenet-200/")
    b = p.add_argument_group("budget (give one)")
    b.add_argument("--budget", metavar="N", type=_nonneg_int, help="ReLUs per sample to keep, e.g. 60")
    b.add_argument("--budget-fraction", metavar="F", type=_fraction,
                   help="budget as a fraction of the model's ReLU count, e.g. 0.1")
    s = p.add_argument_group("SNL search (Algorithm 1)")
    s.add_argument("--lambda", dest="lam", metavar="LAMBDA", type=_positive_float, default=1e-5,
                   help="initial Lasso coefficient (default 1e-5)")
    s.add_argument("--kappa", type=_positive_float, default=1.1,
                   help="lambda *= kappa when the count did not decrease (default 1.1)")
    s.add_argument("--epsilon", type=float, default=0.01, help="keep a ReLU while c > epsilon (0.01)")
    s.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (1e-3)")
    s.add_argument("--search-epochs", metavar="N", type=_nonneg_int,
                   help="maximum search epochs; the search ends early at the budget")
    s.add_argument("--granularity", choices=("pixel", "channel"), default="pixel")
    s.add_argument("--variant", choices=("linearize", "zero"), default="linearize",
                   help="linearize (SNL) or zero (Appendix B, Eq. 7)")
    s.add_argument("--from-scratch", action="store_true",
                   help="search from a random init (Appendix B); the pretrained net stays the teacher")
    s.add_argument("--exclude", default="", metavar="PATTERNS",
                   help="comma-separated gate-site name patterns to keep as plain ReLUs")
    t = p.add_argument_group("pretraining and finetuning")
    t.add_argument("--pretrain-epochs", metavar="N", type=_nonneg_int)
    t.add_argument("--pretrain-lr", type=_positive_float, default=0.1, help="SGD lr (0.1)")
    t.add_argument("--milestones", type=_milestones,
                   help="pretraining epochs after which lr *= 0.1, e.g. 80,120")
    t.add_argument("--finetune-epochs", metavar="N", type=_nonneg_int)
    t.add_argument("--finetune-lr", type=_positive_float, default=1e-3, help="SGD lr (1e-3)")
    t.add_argument("--batch-size", type=_nonneg_int, help="mini-batch size for every stage")
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    r.add_argument("--threads", type=_nonneg_int, help="torch CPU threads (0: torch default)")
    r.add_argument("--workers", type=_nonneg_int, default=0, help="DataLoader workers for host data (0)")
    r.add_argument("--quiet", action="store_true", help="no progress bars, no log lines")
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
    from .config import SMALL_DATASETS, RunConfig, digits_defaults, tiny_imagenet_defaults

    cfg = RunConfig(model=args.model, widths=args.widths, dataset=args.dataset,
                    data_dir=args.data_dir, budget=args.budget,
                    budget_fraction=args.budget_fraction, seed=args.seed, device=args.device,
                    num_workers=args.workers, amp=args.amp, compile=args.compile,
                    channels_last=args.channels_last, device_data=not args.host_data)
    if args.dataset in SMALL_DATASETS:
        digits_defaults(cfg)
    elif args.dataset == "tiny-imagenet":
        tiny_imagenet_defaults(cfg)
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


@quiet_broken_pipe
def main(argv=None) -> int:
    """Entry point; returns the exit code (0 ok, 1 NaN loss, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if (args.budget is None) == (args.budget_fraction is None):
            parser.error("give exactly one of --budget N or --budget-fraction F")
    except SystemExit as exit_:  # --help (0) or a usage error (2, line already printed)
        return exit_.code
    try:
        return _run(args)
    except KeyboardInterrupt:
        if _is_rank0():
            sys.stderr.write(f"interrupted; continue with the same command plus --resume "
                             f"(checkpoint in {args.out})\n")
        return EXIT_INTERRUPTED


def _run(args) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError, load_dataset
    from .distributed import env_ranks, setup, teardown
    from .models import build_model
    from .speed import check_options
    from .trainer import BudgetError, NonFiniteLoss, Trainer, resolve_device

    def bad(message: str) -> int:
        _error(message)
        return EXIT_BAD_INPUT

    try:
        cfg = config_from_args(args)
        check_options(cfg.amp, cfg.compile, resolve_device(cfg.device))
        data = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed)
        build_model(cfg.model, data.num_classes, data.in_shape, cfg.widths)  # validates the name
        env_ranks()  # a malformed torchrun environment is bad input too
    except (ValueError, TypeError, ImportError) as exc:  # DataError is a ValueError
        return bad(str(exc))

    def factory():
        return build_model(cfg.model, data.num_classes, data.in_shape, cfg.widths)

    speak = not args.quiet and _is_rank0()
    out = (lambda line: print(line, flush=True)) if speak else (lambda line: None)
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
    except (BudgetError, CheckpointError, DataError) as exc:
        return bad(str(exc))
    except NonFiniteLoss as exc:
        if _is_rank0():
            sys.stderr.write(f"stopped: {exc}; the last good checkpoint is kept in "
                             f"{args.out}/checkpoint.pt\n")
        return EXIT_FAILED
    finally:
        teardown(ctx)
    out(f"result: {result['relu_count']} of {result['relu_total']} ReLUs kept (budget "
        f"{result['relu_budget']}), test accuracy {result['test_accuracy']:.4f} (teacher "
        f"{result['teacher_test_accuracy']:.4f}), online latency {result['online_latency_s']:.4f} s")
    if "learned_alpha" in result:
        pred = result["predicted"]
        out(f"retained per layer: learned {result['learned_retained']}, paper optimum "
            f"{pred['paper'].get('retained')}, sharp optimum {pred['sharp'].get('retained')}")
    out(f"wrote {args.out}/result.json and {args.out}/metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
