"""The model zoo: small CNNs and the networks of the continual-learning papers (specs/nn.md#zoo).

Module names follow the public code each model comes from (GPM's AlexNet, the GEM/mammoth
reduced ResNet-18, torchvision's MobileNetV2), so `state_dict` keys match theirs.
`build_model(name, num_classes, in_channels, image_size, **options)` builds one by name.

Multi-head models (option `heads=[n_0, n_1, ...]`, one classifier per task, as GPM) take
`forward(x, task=None)`: `task=t` gives head t's logits; `task=None` gives the only head's
logits, or the list of every head's logits when there are several (GPM's forward).
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from . import init
from .layers import (
    AdaptiveAvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ModuleList,
    ReLU,
    ReLU6,
    Sequential,
    apply_each,
)
from .module import Module


def _multi_head(in_features: int, heads, dtype) -> ModuleList:
    """One bias-free Linear per task, as GPM's task heads."""
    if not heads or any(not isinstance(n, (int, np.integer)) or n < 1 for n in heads):
        raise ValueError(f"heads must be a non-empty list of positive class counts, got {heads!r}")
    return ModuleList([Linear(in_features, n, bias=False, dtype=dtype) for n in heads])


def _classify(head: Module, features, task):
    """Apply a single head (a Linear) or one or all heads of a ModuleList (see the module doc)."""
    if not isinstance(head, ModuleList):
        if task not in (None, 0):
            raise ValueError(f"task must be None or 0 for a single-head model, got {task!r}")
        return head(features)
    if task is not None:
        return head[task](features)
    logits = [h(features) for h in head]
    return logits[0] if len(logits) == 1 else logits


class SmallCNN(Module):
    """Conv-BN-ReLU blocks (3x3, padding 1) of `channels` widths, 2x2 max-pooling between
    them, adaptive average pooling of the last block to `pool_size` x `pool_size`, and a linear
    `classifier`; sized for 28x28 / 32x32 images on a CPU (specs/nn.md#zoo)."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, channels=(16, 32, 64), pool_size: int = 3, dtype=None
    ):
        super().__init__()
        layers, previous = [], in_channels
        for i, width in enumerate(channels):
            layers += [
                Conv2d(previous, width, 3, padding=1, bias=False, dtype=dtype),
                BatchNorm2d(width, dtype=dtype),
                ReLU(),
                MaxPool2d(2) if i < len(channels) - 1 else AdaptiveAvgPool2d(pool_size),
            ]
            previous = width
        self.features = Sequential(*layers, Flatten())
        self.classifier = Linear(previous * pool_size * pool_size, num_classes, dtype=dtype)

    def forward(self, x):
        return apply_each(x, self.features, self.classifier)


class AlexNetGPM(Module):
    """GPM's 5-layer AlexNet (Saha et al., ICLR 2021), with its module names.

    conv 64 k4 -> BN -> ReLU -> dropout 0.2 -> maxpool 2; conv 128 k3 -> ... dropout 0.2 ...;
    conv 256 k2 -> ... dropout 0.5 ...; fc 2048 -> BN1d -> ReLU -> dropout 0.5; fc 2048 -> BN1d ->
    ReLU -> dropout 0.5; task heads `fc3`. No biases; BatchNorm without running statistics
    (batch statistics in eval too), as upstream. `heads` defaults to one head of `num_classes`.
    """

    # GPM's representation of each layer reads the first this many of its drawn samples
    # (get_representation_matrix's batch_list in GPM's AlexNet code; specs/continual.md#gpm).
    representation_samples = {"conv1": 24, "conv2": 100, "conv3": 100, "fc1": 125, "fc2": 125}
    # LightCL's first module that keeps training and its memorised feature layers: the
    # analogue of upstream's frozen ResNet stages is the conv stack (specs/continual.md#lightcl).
    lightcl_layers = ("fc1", "bn4,bn5")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, heads=None, dtype=None):
        super().__init__()
        side = image_size
        for kernel in (4, 3, 2):
            side = (side - kernel + 1) // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for AlexNetGPM (at least 22)")
        bn = dict(track_running_stats=False, dtype=dtype)
        self.conv1 = Conv2d(in_channels, 64, 4, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(64, **bn)
        self.conv2 = Conv2d(64, 128, 3, bias=False, dtype=dtype)
        self.bn2 = BatchNorm2d(128, **bn)
        self.conv3 = Conv2d(128, 256, 2, bias=False, dtype=dtype)
        self.bn3 = BatchNorm2d(256, **bn)
        self.maxpool = MaxPool2d(2)
        self.relu = ReLU()
        self.drop1 = Dropout(0.2)
        self.drop2 = Dropout(0.5)
        self.fc1 = Linear(256 * side * side, 2048, bias=False, dtype=dtype)
        self.bn4 = BatchNorm1d(2048, **bn)
        self.fc2 = Linear(2048, 2048, bias=False, dtype=dtype)
        self.bn5 = BatchNorm1d(2048, **bn)
        self.fc3 = _multi_head(2048, [num_classes] if heads is None else heads, dtype)

    def forward(self, x, task=None):
        x = apply_each(x, self.conv1, self.bn1, self.relu, self.drop1, self.maxpool)
        x = apply_each(x, self.conv2, self.bn2, self.relu, self.drop1, self.maxpool)
        x = apply_each(x, self.conv3, self.bn3, self.relu, self.drop2, self.maxpool)
        x = F.flatten(x, 1)
        x = apply_each(x, self.fc1, self.bn4, self.relu, self.drop2, self.fc2, self.bn5, self.relu, self.drop2)
        return _classify(self.fc3, x, task)


class BasicBlock(Module):
    """ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, track_running_stats: bool = True, dtype=None):
        super().__init__()
        bn = dict(track_running_stats=track_running_stats, dtype=dtype)
        self.conv1 = Conv2d(in_planes, planes, 3, stride, padding=1, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(planes, **bn)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False, dtype=dtype)
        self.bn2 = BatchNorm2d(planes, **bn)
        self.shortcut = Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = Sequential(
                Conv2d(in_planes, planes, 1, stride, bias=False, dtype=dtype), BatchNorm2d(planes, **bn)
            )

    def forward(self, x):
        out = apply_each(x, self.conv1, self.bn1, F.relu, self.conv2, self.bn2)
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet18Reduced(Module):
    """The reduced ResNet-18 of GEM / GPM / mammoth: BasicBlocks [2, 2, 2, 2] of widths
    nf, 2nf, 4nf, 8nf, a 3x3 stride-1 stem without max-pooling, global average pooling and
    `linear`. With `heads`, `linear` is a ModuleList of bias-free task heads (GPM);
    `track_running_stats=False` gives GPM's BatchNorm."""

    # LightCL's first module that keeps training and its memorised feature layers: upstream
    # freezes the stem and layer1-3 (specs/continual.md#lightcl).
    lightcl_layers = ("layer4", "layer4.0,layer4.1")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        nf: int = 20,
        heads=None,
        track_running_stats: bool = True,
        dtype=None,
    ):
        super().__init__()
        bn = dict(track_running_stats=track_running_stats, dtype=dtype)
        self.conv1 = Conv2d(in_channels, nf, 3, padding=1, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(nf, **bn)
        planes = nf
        for i, (width, stride) in enumerate(((nf, 1), (2 * nf, 2), (4 * nf, 2), (8 * nf, 2)), start=1):
            blocks = [BasicBlock(planes, width, stride, **bn), BasicBlock(width, width, 1, **bn)]
            setattr(self, f"layer{i}", Sequential(*blocks))
            planes = width
        self.linear = Linear(8 * nf, num_classes, dtype=dtype) if heads is None else _multi_head(8 * nf, heads, dtype)

    def forward(self, x, task=None):
        out = apply_each(x, self.conv1, self.bn1, F.relu, self.layer1, self.layer2, self.layer3, self.layer4)
        out = F.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return _classify(self.linear, out, task)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of `divisor`, never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(Sequential):
    """conv (no bias, 'same' padding) -> BatchNorm2d -> ReLU6, torchvision's Conv2dNormActivation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, groups: int = 1, dtype=None):
        padding = (kernel_size - 1) // 2
        super().__init__(
            Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False, dtype=dtype),
            BatchNorm2d(out_channels, dtype=dtype),
            ReLU6(),
        )


class InvertedResidual(Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise (groups = channels), 1x1 linear
    projection; a residual connection when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, dtype=None):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = [ConvBNReLU6(in_channels, hidden, 1, dtype=dtype)] if expand_ratio != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden, dtype=dtype),
            Conv2d(hidden, out_channels, 1, bias=False, dtype=dtype),
            BatchNorm2d(out_channels, dtype=dtype),
        ]
        self.conv = Sequential(*layers)

    def forward(self, x):
        out = apply_each(x, self.conv)
        return x + out if self.use_res_connect else out


class MobileNetV2(Module):
    """torchvision's MobileNetV2 (names `features`, `classifier`, initialisation), in one of two
    variants with identical parameter names and shapes (specs/nn.md#zoo):

    - "cifar" (zoo `mobilenetv2`): adapted to small images as the common CIFAR variants, with a
      stride-1 stem and a stride-1 24-channel stage, so a 32x32 input ends at 4x4;
    - "torchvision" (zoo `mobilenetv2-torchvision`): torchvision's `mobilenet_v2` exactly (both
      strides 2), the network whose pretrained weights torchvision publishes.
    """

    # (expansion t, channels c, blocks n, first stride s) of torchvision
    settings = (
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)
    )
    VARIANTS = ("cifar", "torchvision")

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, dropout: float = 0.2,
        variant: str = "cifar", dtype=None,
    ):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        self.variant = variant
        early_stride = 2 if variant == "torchvision" else 1  # the stem's and the 24-channel stage's
        channels = _make_divisible(32 * width_mult)
        last_channels = _make_divisible(1280 * max(1.0, width_mult))
        layers = [ConvBNReLU6(in_channels, channels, 3, early_stride, dtype=dtype)]
        for t, c, n, s in self.settings:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                stride = (early_stride if c == 24 else s) if i == 0 else 1
                layers.append(InvertedResidual(channels, out, stride, t, dtype=dtype))
                channels = out
        layers.append(ConvBNReLU6(channels, last_channels, 1, dtype=dtype))
        self.features = Sequential(*layers)
        self.classifier = Sequential(Dropout(dropout), Linear(last_channels, num_classes, dtype=dtype))
        for module in self.modules():
            if isinstance(module, Conv2d):
                init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, Linear):
                init.normal_(module.weight, 0.0, 0.01)
                init.zeros_(module.bias)

    def forward(self, x):
        x = F.flatten(F.adaptive_avg_pool2d(apply_each(x, self.features), 1), 1)
        return self.classifier(x)

    def extra_repr(self) -> str:
        if self.variant == "torchvision":
            return "variant=torchvision (torchvision's mobilenet_v2: stride-2 stem and 24-channel stage)"
        return "variant=cifar (stride-1 stem and 24-channel stage; torchvision's weights need mobilenetv2-torchvision)"


MODELS = {}  # name -> builder(num_classes, in_channels, image_size, **options)


def register_model(name: str):
    """A decorator adding `builder(num_classes, in_channels, image_size, **options)` to the zoo
    as `name` (the floors above register their own models, e.g. `binary` its binary-cnn)."""

    def decorate(builder):
        MODELS[name] = builder
        return builder

    return decorate


@register_model("small-cnn")
def _small_cnn(num_classes, in_channels, image_size, **options):
    return SmallCNN(num_classes, in_channels, **options)  # adaptive pooling: any image size >= 4


@register_model("alexnet-gpm")
def _alexnet_gpm(num_classes, in_channels, image_size, **options):
    return AlexNetGPM(num_classes, in_channels, image_size, **options)


@register_model("resnet18-reduced")
def _resnet18_reduced(num_classes, in_channels, image_size, **options):
    return ResNet18Reduced(num_classes, in_channels, **options)


@register_model("mobilenetv2")
def _mobilenetv2(num_classes, in_channels, image_size, **options):
    return MobileNetV2(num_classes, in_channels, variant="cifar", **options)


@register_model("mobilenetv2-torchvision")
def _mobilenetv2_torchvision(num_classes, in_channels, image_size, **options):
    return MobileNetV2(num_classes, in_channels, variant="torchvision", **options)


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, **options) -> Module:
    """The zoo model `name` for images (in_channels, image_size, image_size) and `num_classes`
    classes; `options` go to the model's constructor (e.g. `dtype`, `heads`, `nf`, `width_mult`)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    for argument, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{argument} must be a positive int, got {value!r}")
    return MODELS[name](num_classes, in_channels, image_size, **options)
