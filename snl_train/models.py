"""Networks used with SNL: an MLP, a small digits ConvNet, the paper's CIFAR ResNet-18/34 and
Wide-ResNet-22-8, and :func:`build_model` to pick one by name.

The ResNets follow Section 4 of the paper: a 3x3 stride-1 stem convolution with BatchNorm and
*no* ReLU after it (the input-channel-raising layer is left linear, as in DeepReDuce), then
torchvision-style BasicBlocks. Each BasicBlock calls ONE ``nn.ReLU`` module at two sites, as
torchvision does; at 32x32 input the ResNet-18 has 491,520 ReLUs per image.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Callable, Sequence

import torch
import torch.nn as nn

__all__ = ["MLP", "SmallConvNet", "BasicBlock", "ResNet", "resnet18", "resnet34",
           "WideBasicBlock", "WideResNet", "wrn22_8", "build_model", "MODEL_NAMES"]

MODEL_NAMES = ("mlp", "convnet", "resnet18", "resnet34", "wrn22_8")


class MLP(nn.Module):
    """Fully connected ReLU network: flatten, then ``Linear + ReLU`` per hidden width, then a
    linear classifier.

    Args:
        in_features: number of input features after flattening.
        widths: hidden-layer widths (may be empty: a linear model).
        num_classes: output size.

    Example:
        >>> MLP(64, [32, 16], 10)(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features
        for width in widths:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SmallConvNet(nn.Module):
    """A small ConvNet for 8x8 digits (or any small image).

    ``conv3x3(width) + BN + ReLU``, ``conv3x3(2*width, stride 2) + BN + ReLU``, global average
    pool, ``Linear(2*width, hidden) + ReLU``, ``Linear(hidden, num_classes)``.

    Args:
        in_channels: input channels (1 for digits).
        num_classes: output size.
        width: channels of the first convolution.
        hidden: width of the hidden linear layer.

    Example:
        >>> SmallConvNet(1, 10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16,
                 hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(2 * width, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block; one ``nn.ReLU`` module used at both of its call sites (torchvision).

    Args:
        in_planes: input channels. planes: output channels. stride: of the first convolution.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """CIFAR-style ResNet (Section 4): 3x3 stem conv + BN without ReLU, four stages of
    BasicBlocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2), global average pool, linear.

    Args:
        blocks: BasicBlocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: output size.
        in_channels: input channels (3 for CIFAR / Tiny-ImageNet).

    Works for any input size (32x32 CIFAR, 64x64 Tiny-ImageNet).
    """

    def __init__(self, blocks: Sequence[int], num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes, stages = 64, []
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(BasicBlock(in_planes, planes, stride if block == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """The paper's CIFAR ResNet-18 (491,520 ReLUs per 32x32 image).

    Example:
        >>> resnet18(10)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return ResNet((2, 2, 2, 2), num_classes, in_channels)


def resnet34(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """The paper's CIFAR ResNet-34 (blocks 3, 4, 6, 3; 901,120 ReLUs per 32x32 image)."""
    return ResNet((3, 4, 6, 3), num_classes, in_channels)


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block (Zagoruyko & Komodakis 2016):
    ``BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3`` plus a shortcut (1x1 conv of the activated
    input when the shape changes, else the input itself).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """Pre-activation Wide-ResNet-``depth``-``widen``: 3x3 stem conv (16 channels, no ReLU),
    three groups of ``(depth - 4) / 6`` wide blocks (16k, 32k, 64k channels; strides 1, 2, 2),
    final BN-ReLU, global average pool, linear.

    Args:
        depth: total depth, ``6 n + 4``. widen: width multiplier k. num_classes: output size.
        in_channels: input channels. dropout: dropout rate inside blocks.

    Raises:
        ValueError: depth is not of the form 6 n + 4.
    """

    def __init__(self, depth: int = 22, widen: int = 8, num_classes: int = 100,
                 in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        per_group = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        in_planes, groups = 16, []
        for index, planes in enumerate((16 * widen, 32 * widen, 64 * widen)):
            blocks = []
            for block in range(per_group):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(WideBasicBlock(in_planes, planes, stride, dropout))
                in_planes = planes
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def wrn22_8(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """Wide-ResNet-22-8 (1,392,640 ReLUs per 32x32 image)."""
    return WideResNet(22, 8, num_classes, in_channels)


def _init_conv_bn(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _load_factory(spec: str) -> Callable[..., nn.Module]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected a model name in {MODEL_NAMES} or 'module:callable', got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import model factory {spec!r}: {error}") from error
    if not callable(factory):
        raise ValueError(f"model factory {spec!r} is not callable")
    return factory


def _call_factory(factory: Callable[..., nn.Module], spec: str, options: dict,
                  model_args: dict) -> nn.Module:
    """Call a user factory with the ``options`` it names as parameters, plus ``model_args``.

    A factory that only takes ``**kwargs`` (torchvision's, timm's) passes them on to a model
    class, so of the options it gets only ``num_classes``, the one that model zoos share.
    ``model_args`` (the user's own) are passed as given and win over the options.
    """
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    named = {k for k, p in parameters.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in options.items()
              if v is not None and (k in named or (takes_any and k == "num_classes"))}
    kwargs.update(model_args)
    try:
        model = factory(**kwargs)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"model factory {spec}({arguments}) failed: {type(error).__name__}: "
                         f"{first}") from error
    if not isinstance(model, nn.Module):
        raise ValueError(f"model factory {spec!r} returned {type(model).__name__}, expected an nn.Module")
    return model


def build_model(name: str, num_classes: int, in_shape: Sequence[int],
                widths: Sequence[int] | None = None, model_args: dict | None = None) -> nn.Module:
    """Build a network by name.

    Args:
        name: ``"mlp"``, ``"convnet"``, ``"resnet18"``, ``"resnet34"``, ``"wrn22_8"``, or
            ``"package.module:callable"`` for a user factory, called with whichever of
            ``num_classes``, ``in_shape``, ``widths`` it names as parameters (a factory taking
            only ``**kwargs``, like ``torchvision.models:resnet18``, gets ``num_classes``),
            plus ``model_args``.
        num_classes: output size.
        in_shape: shape of one input sample, e.g. ``(3, 32, 32)`` or ``(64,)``.
        widths: hidden widths for ``"mlp"`` (default ``(256, 256)``); for ``"convnet"`` the
            first value is the base channel width (default 16).
        model_args: keyword arguments for a user factory (e.g. ``{"model_name": "resnet18"}``
            for ``timm:create_model``); not allowed with the built-in names.

    Returns:
        A freshly initialised ``nn.Module``.

    Raises:
        ValueError: unknown name, ``model_args`` for a built-in model, or a user factory that
            cannot be imported, fails on its arguments or does not return a module.

    Example:
        >>> build_model("mlp", 10, (1, 8, 8), widths=[32])(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    in_shape = tuple(int(d) for d in in_shape)
    model_args = dict(model_args or {})
    if model_args and ":" not in name:
        raise ValueError(f"model arguments are for a 'module:callable' factory, not for {name!r}")
    if name == "mlp":
        return MLP(math.prod(in_shape), tuple(widths) if widths is not None else (256, 256), num_classes)
    if name == "convnet":
        return SmallConvNet(in_shape[0], num_classes, width=widths[0] if widths else 16)
    builders = {"resnet18": resnet18, "resnet34": resnet34, "wrn22_8": wrn22_8}
    if name in builders:
        return builders[name](num_classes, in_shape[0])
    if ":" in name:
        options = {"num_classes": num_classes, "in_shape": in_shape, "widths": widths}
        return _call_factory(_load_factory(name), name, options, model_args)
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES} or 'module:callable'")
