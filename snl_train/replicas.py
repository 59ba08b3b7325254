"""Small replicas of model-zoo patterns that break naive ReLU gating (no torchvision or timm).

Each replica is a few layers written the way torchvision / timm write the real thing, so the
gates can be tested, counted and benchmarked on every pattern without those packages:

* :func:`normact_net`: timm's ``BatchNormAct2d`` (efficientnet, mobilenetv3, regnet): a
  BatchNorm subclass whose forward branches on ``self.training`` and then calls its ReLU;
* :func:`droppath_net`: residual blocks with stochastic depth drawing
  ``torch.rand(x.shape[0], 1, 1, 1)`` in training mode only, and ``F.relu`` calls;
* :func:`aux_head_net`: an auxiliary classifier (GoogLeNet, Inception-v3) that runs only in
  training mode; its logits are added to the main ones there (deep supervision), so it
  trains, and its ReLUs never run at inference;
* :func:`mobilenet_v2_like`: MobileNetV2's inverted residuals with ``nn.ReLU6(inplace=True)``;
* :func:`untraceable_net`: data-dependent control flow (``torch.fx`` cannot trace it), one
  ``nn.ReLU`` called twice, ``F.relu``, ``F.leaky_relu``, ``nn.Hardtanh`` and one block
  reused at two spatial sizes.

Every factory takes ``num_classes``, ``in_shape`` (C, H, W) and ``width``, so each also works
as ``--model snl_train.replicas:normact_net``.

Example:
    >>> sorted(REPLICAS)
    ['aux_head_net', 'droppath_net', 'mobilenet_v2_like', 'normact_net', 'untraceable_net']
    >>> REPLICAS["normact_net"](num_classes=5, in_shape=(3, 8, 8))(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NormAct2d", "DropPath", "normact_net", "droppath_net", "aux_head_net",
           "mobilenet_v2_like", "untraceable_net", "REPLICAS"]


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


class NormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by ReLU in one module, with the training-mode branches of timm's
    ``BatchNormAct2d`` (running-statistics bookkeeping in Python, ``F.batch_norm``)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or self.running_mean is None
        x = F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                         self.running_var if not self.training or self.track_running_stats else None,
                         self.weight, self.bias, use_batch, factor, self.eps)
        return self.act(x)


class _NormActNet(nn.Module):
    def __init__(self, num_classes: int, channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn1 = NormAct2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = NormAct2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def normact_net(num_classes: int = 10, in_shape: Sequence[int] = (3, 32, 32), width: int = 8) -> nn.Module:
    """Two conv + :class:`NormAct2d` stages (timm's norm-act layers), pool, linear."""
    return _NormActNet(num_classes, in_shape[0], width)


class DropPath(nn.Module):
    """Stochastic depth per sample (timm's ``DropPath``): in training mode each sample's
    residual branch is dropped with probability ``p`` and the kept ones scaled by 1/(1-p)."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) < keep).to(x.dtype)
        return x * mask / keep


class _DropPathBlock(nn.Module):
    def __init__(self, width: int, p: float) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(width, width)
        self.conv2, self.bn2 = _conv_bn(width, width)
        self.drop_path = DropPath(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(x + self.drop_path(out))


class _DropPathNet(nn.Module):
    def __init__(self, num_classes: int, channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(channels, width), nn.ReLU())
        self.blocks = nn.Sequential(_DropPathBlock(width, 0.1), _DropPathBlock(width, 0.2))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def droppath_net(num_classes: int = 10, in_shape: Sequence[int] = (3, 32, 32), width: int = 8) -> nn.Module:
    """A stem and two residual blocks with :class:`DropPath` (drop rates 0.1, 0.2)."""
    return _DropPathNet(num_classes, in_shape[0], width)


class _AuxHeadNet(nn.Module):
    def __init__(self, num_classes: int, channels: int, width: int, aux_weight: float) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(channels, width), nn.ReLU(inplace=True))
        self.body = nn.Sequential(*_conv_bn(width, 2 * width, stride=2), nn.ReLU(inplace=True))
        self.aux = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 16),
                                 nn.ReLU(inplace=True), nn.Linear(16, num_classes))
        self.fc = nn.Linear(2 * width, num_classes)
        self.aux_weight = aux_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        logits = self.fc(F.adaptive_avg_pool2d(self.body(h), 1).flatten(1))
        if self.training:
            logits = logits + self.aux_weight * self.aux(h)
        return logits


def aux_head_net(num_classes: int = 10, in_shape: Sequence[int] = (3, 32, 32), width: int = 8,
                 aux_weight: float = 0.3) -> nn.Module:
    """Stem, body and a classifier, plus an auxiliary head on the stem run in training only."""
    return _AuxHeadNet(num_classes, in_shape[0], width, aux_weight)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            *_conv_bn(cin, hidden, kernel=1), nn.ReLU6(inplace=True),
            *_conv_bn(hidden, hidden, stride, groups=hidden), nn.ReLU6(inplace=True),
            *_conv_bn(hidden, cout, kernel=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class _MobileNetV2Like(nn.Module):
    def __init__(self, num_classes: int, channels: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(channels, width, stride=1), nn.ReLU6(inplace=True),
            _InvertedResidual(width, width, 1, 1),
            _InvertedResidual(width, 2 * width, 2, 4),
            _InvertedResidual(2 * width, 2 * width, 1, 4),
            *_conv_bn(2 * width, 4 * width, kernel=1), nn.ReLU6(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def mobilenet_v2_like(num_classes: int = 10, in_shape: Sequence[int] = (3, 32, 32),
                      width: int = 8) -> nn.Module:
    """MobileNetV2's pattern in small: inverted residuals with ReLU6 (in place) and dropout."""
    return _MobileNetV2Like(num_classes, in_shape[0], width)


class _UntraceableNet(nn.Module):
    def __init__(self, num_classes: int, channels: int, width: int) -> None:
        super().__init__()
        self.conv, self.bn = _conv_bn(channels, width)
        self.relu = nn.ReLU()  # called twice
        self.shared = nn.Sequential(*_conv_bn(width, width), nn.ReLU())  # called at two sizes
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.hardtanh = nn.Hardtanh(-2.0, 2.0)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.conv(x)))
        if h.mean() > 0.5:  # data-dependent control flow: torch.fx cannot trace this
            h = h * 0.5
        big = self.shared(h)
        small = self.shared(F.avg_pool2d(h, 2))
        h = big + F.interpolate(small + F.relu(small - 0.1), size=big.shape[-2:])
        h = self.relu(self.conv2(h))
        h = self.hardtanh(F.leaky_relu(self.conv3(h), 0.1))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def untraceable_net(num_classes: int = 10, in_shape: Sequence[int] = (3, 32, 32),
                    width: int = 8) -> nn.Module:
    """Data-dependent control flow, a reused ``nn.ReLU``, ``F.relu``, ``F.leaky_relu``,
    ``nn.Hardtanh`` and a block called at two spatial sizes."""
    return _UntraceableNet(num_classes, in_shape[0], width)


REPLICAS = {"normact_net": normact_net, "droppath_net": droppath_net, "aux_head_net": aux_head_net,
            "mobilenet_v2_like": mobilenet_v2_like, "untraceable_net": untraceable_net}
