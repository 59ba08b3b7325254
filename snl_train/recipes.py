"""The two training recipes of the trainer: the paper's Algorithm 1 and the public reference code.

``RunConfig.recipe`` selects one:

- ``"paper"`` (default): Algorithm 1 as printed. lambda *= kappa after an epoch whose ReLU
  count did not decrease from the previous epoch's; loss ``(1 - w) CE + w KD`` with
  ``w = kd_weight`` (0.5); finetuning at a constant lr; the last finetuning epoch is kept.
- ``"official"``: the choices of the paper's public code (NYU-DICE-Lab/selective_network_
  linearization, ``snl_finetune_unstructured.py``, ``utils.py``). lambda *= kappa when the
  count is not below the *lowest* count seen so far (which starts at the model's total),
  and only from epoch index :data:`OFFICIAL_WARMUP` on; loss ``CE + KD`` (both weight 1,
  KD = ``T^2 KL(softmax(t/T) || softmax(s/T))``); finetuning with cosine annealing of the
  lr over the finetuning epochs; the best finetuning epoch is kept, chosen on a validation
  split held out of the training data (the public code chooses it on the test set; that
  figure is recorded too, labelled). The numbers the public code uses (Adam without weight
  decay, batch 128, 2000 search epochs, finetuning weight decay 5e-4) are config values,
  set by :func:`snl_train.config.official_defaults`.

The functions here are the pieces the trainer calls; each is pure and small.

Example::

    >>> lam, lowest = official_next_lambda(1.0, count=50, lowest=40, epoch=5, kappa=2.0)
    >>> lam, lowest
    (2.0, 40)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Subset, TensorDataset

RECIPES = ("paper", "official")
OFFICIAL_WARMUP = 5  # the public code grows lambda only from epoch index 5 (0-based) on


def official_kd_loss(logits, teacher_logits, target, temperature: float = 4.0):
    """``CE(logits, target) + T^2 KL(softmax(t/T) || softmax(s/T))``, both terms at weight 1.

    The KL term is computed as the public code does (``kl_div`` of the student's
    log-probabilities against the teacher's probabilities, ``batchmean``), so that a run
    of the official recipe follows it to the last bit.

    Example:
        >>> s = torch.tensor([[2.0, 0.0]])
        >>> round(official_kd_loss(s, s, torch.tensor([0]), 4.0).item(), 4)  # KL(p || p) = 0
        0.1269
    """
    ce = F.cross_entropy(logits, target)
    t = temperature
    kd = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                  reduction="batchmean") * t * t
    return ce + kd


def official_next_lambda(lam: float, count: int, lowest: int, epoch: int, kappa: float,
                         warmup: int = OFFICIAL_WARMUP) -> tuple[float, int]:
    """The public code's update after search epoch ``epoch`` (0-based): ``(lambda, lowest)``.

    A count below ``lowest`` becomes the new lowest and lambda stays; otherwise lambda is
    multiplied by ``kappa`` if ``epoch >= warmup``.

    Example:
        >>> official_next_lambda(1.0, 30, 40, 0, 2.0), official_next_lambda(1.0, 40, 40, 4, 2.0)
        ((1.0, 30), (1.0, 40))
    """
    if count < lowest:
        return lam, count
    if epoch >= warmup:
        return lam * kappa, lowest
    return lam, lowest


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Cosine annealing to 0 over ``epochs``: the lr of epoch ``epoch`` (0-based), closed form.

    Equals ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=epochs)`` stepped once per
    epoch; the closed form needs no scheduler state, so a resumed run sets the same lr.

    Example:
        >>> [round(cosine_lr(1.0, e, 4), 4) for e in range(4)]
        [1.0, 0.8536, 0.5, 0.1464]
    """
    return base * (1 + math.cos(math.pi * epoch / epochs)) / 2


def validation_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of the validation split: ``round(fraction * n)`` of ``range(n)``
    (at least 1 when ``fraction > 0``), drawn by a generator seeded with ``seed``.

    Raises:
        ValueError: ``fraction`` outside [0, 1), or no training sample would be left.

    Example:
        >>> validation_indices(10, 0.3, seed=0).tolist() == validation_indices(10, 0.3, 0).tolist()
        True
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return torch.zeros(0, dtype=torch.long)
    k = max(1, round(fraction * n))
    if k >= n:
        raise ValueError(f"a validation fraction of {fraction} leaves no training data "
                         f"out of {n} samples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:k].sort().values


def split_dataset(dataset, held_out: torch.Tensor):
    """``(train, validation)``: ``dataset`` without and with the indices ``held_out``.

    In-memory ``TensorDataset``s stay ``TensorDataset``s (the trainer slices those directly);
    any other dataset becomes two ``Subset``s. Both keep the original order.
    """
    mask = torch.ones(len(dataset), dtype=torch.bool)
    mask[held_out] = False
    kept = mask.nonzero().flatten()
    if isinstance(dataset, TensorDataset):
        return (TensorDataset(*(t[kept] for t in dataset.tensors)),
                TensorDataset(*(t[held_out] for t in dataset.tensors)))
    return Subset(dataset, kept.tolist()), Subset(dataset, held_out.tolist())


def better(accuracy: float, best: dict | None) -> bool:
    """The public code's rule: an epoch is the new best when its accuracy is strictly
    higher (ties keep the earlier epoch)."""
    return best is None or accuracy > best["accuracy"]
