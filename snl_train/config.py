"""Configuration of an SNL run: one dataclass per stage, gathered in :class:`RunConfig`.

Defaults are the paper's (Section 4 / DESIGN.md) except the number of epochs, which
:func:`digits_defaults` shortens for the small built-in datasets.

Example::

    >>> cfg = RunConfig(model="mlp", widths=(256, 64), budget=60)
    >>> cfg.search.lam, cfg.search.kappa, cfg.finetune.temperature
    (1e-05, 1.1, 4.0)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

DATASETS = ("digits", "random", "collinear", "cifar10", "cifar100", "tiny-imagenet")


@dataclass
class PretrainConfig:
    epochs: int = 160  # epochs of plain training (paper: CIFAR, lr decay at 80 and 120)
    lr: float = 0.1  # SGD learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 weight decay
    milestones: tuple = (80, 120)  # epochs after which lr is multiplied by gamma
    gamma: float = 0.1  # lr decay factor at each milestone
    batch_size: int = 256  # mini-batch size


@dataclass
class SearchConfig:
    max_epochs: int = 200  # Algorithm 1 stops at the budget or after this many epochs
    lr: float = 1e-3  # Adam learning rate for weights and gates jointly
    weight_decay: float = 5e-4  # Adam weight decay on the weights (not on the gates)
    lam: float = 1e-5  # initial Lasso coefficient lambda on sum |c|
    kappa: float = 1.1  # lambda *= kappa after an epoch in which the count did not decrease
    epsilon: float = 0.01  # a ReLU is kept while its gate c > epsilon
    granularity: str = "pixel"  # "pixel" (one c per ReLU) or "channel" (one c per channel)
    variant: str = "linearize"  # "linearize" (c*relu + (1-c)*z) or "zero" (Appendix B Eq. 7)
    from_scratch: bool = False  # Appendix B: search from a random init (teacher still pretrained)
    exclude: tuple = ()  # gate-site names left as plain ReLUs
    temperature: float = 4.0  # knowledge-distillation temperature
    kd_weight: float = 0.5  # paper recipe: KL weight, CE gets 1 - kd_weight (official: both 1)
    batch_size: int = 256  # mini-batch size


@dataclass
class FinetuneConfig:
    epochs: int = 100  # epochs of finetuning W with the binarized gates frozen
    lr: float = 1e-3  # SGD learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0  # L2 weight decay
    temperature: float = 4.0  # knowledge-distillation temperature (Hinton, T^2 scaling)
    kd_weight: float = 0.5  # paper recipe: KL weight, CE gets 1 - kd_weight (official: both 1)
    batch_size: int = 256  # mini-batch size


@dataclass
class RunConfig:
    model: str = "mlp"  # model name for build_model, or "module:callable"
    widths: tuple = (256, 64)  # hidden widths of the MLP (ignored by other models)
    dataset: str = "digits"  # dataset name for load_dataset
    data_dir: str | None = None  # directory with CIFAR / Tiny-ImageNet files
    budget: int | None = None  # absolute ReLU budget per sample
    budget_fraction: float | None = None  # budget as a fraction of the model's ReLU count
    allocation: str = "learned"  # ReLUs per site: learned (SNL), paper, sharp, uniform or a JSON file
    seed: int = 0  # seeds torch, the data split and every DataLoader shuffle
    device: str = "cpu"  # "cpu" or "cuda"
    num_workers: int = 0  # DataLoader workers (0 keeps runs bit-reproducible)
    threads: int = 0  # torch CPU threads; 0 leaves torch's default (1 is fastest for tiny models)
    latency_per_1000: float = 0.021  # DELPHI seconds per 1000 ReLUs (Section 4)
    latency_budget: float | None = None  # seconds per private inference (instead of a ReLU budget)
    network: str = "localhost"  # the cost model's network for latency_budget: localhost, lan, wan
    cost_profile: str = "crypten-2pc"  # measured MPC cost profile: a name in snl_train/profiles or a path
    group_penalty: float = 1.0  # latency_budget: per-site group penalty, in units of rho / beta
    recipe: str = "paper"  # "paper" (Algorithm 1 as printed) or "official" (the public code's)
    validation_fraction: float = 0.1  # official: training share held out to pick the finetune epoch
    amp: str = "off"  # autocast: "off" (fp32), "bf16", "fp16" (CUDA; with a gradient scaler)
    compile: bool = False  # torch.compile (inductor) the model for training steps
    channels_last: bool = False  # NHWC layout for 4-D weights and input batches (conv nets)
    device_data: bool = True  # in-memory datasets as tensors on the device, augmented in batches
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    model_args: dict = field(default_factory=dict)  # extra keyword arguments of a model factory
    input_shape: tuple | None = None  # sample shape of the "random" set, e.g. (3, 32, 32)
    classes: int | None = None  # classes of the "random" set (default 2)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        sub = {"pretrain": PretrainConfig, "search": SearchConfig, "finetune": FinetuneConfig}
        kwargs = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if f.name in sub:
                v = _build(sub[f.name], v)
            elif isinstance(v, list):
                v = tuple(v)
            kwargs[f.name] = v
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**kwargs)


def _build(cls, d: dict):
    names = {f.name for f in fields(cls)}
    if set(d) - names:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(set(d) - names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


# Epochs and batch sizes that finish pretrain + search + finetune on the small built-in
# datasets in well under a minute on two CPU cores; the paper's values suit CIFAR.
SMALL_DATASETS = ("digits", "random", "collinear")


def digits_defaults(cfg: RunConfig) -> RunConfig:
    """Shorten epochs / batches for the small built-in datasets (in place; returns cfg)."""
    cfg.pretrain.epochs, cfg.pretrain.milestones, cfg.pretrain.batch_size = 30, (20, 25), 64
    cfg.search.max_epochs, cfg.search.batch_size = 300, 64
    cfg.finetune.epochs, cfg.finetune.batch_size = 20, 64
    cfg.threads = 1  # a 64-256-64-10 MLP step is ~20x faster on one thread than on two
    return cfg


def official_defaults(cfg: RunConfig) -> RunConfig:
    """Switch ``cfg`` to the public code's recipe and numbers (in place; returns cfg).

    Sets ``recipe = "official"``; search: Adam without weight decay, batch 128, at most 2000
    epochs; finetuning: weight decay 5e-4, batch 128, 100 epochs. On the small built-in
    datasets the epoch counts of :func:`digits_defaults` are kept (call that one first).
    lambda0, kappa, epsilon, the learning rates, momentum and T are the same in both recipes.
    """
    cfg.recipe = "official"
    cfg.search.weight_decay, cfg.finetune.weight_decay = 0.0, 5e-4
    cfg.search.batch_size = cfg.finetune.batch_size = 128
    if cfg.dataset not in SMALL_DATASETS:
        cfg.search.max_epochs, cfg.finetune.epochs = 2000, 100
    return cfg


def tiny_imagenet_defaults(cfg: RunConfig) -> RunConfig:
    """Paper: Tiny-ImageNet pretraining 100 epochs, lr decay at 50 and 75."""
    cfg.pretrain.epochs, cfg.pretrain.milestones = 100, (50, 75)
    return cfg
