"""torch twins of the zoo models, for benchmarks only (torch is never a dependency of lance-ref).

Each twin has the zoo model's architecture and state_dict names (specs/nn.md#zoo), so a zoo
model's weights load into it strictly; `build_twin` makes one by zoo name.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes, in_channels, channels=(16, 32, 64), pool_size=3):
        super().__init__()
        layers, previous = [], in_channels
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2) if i < len(channels) - 1 else nn.AdaptiveAvgPool2d(pool_size)]
            previous = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(previous * pool_size * pool_size, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class AlexNetGPM(nn.Module):
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        side = image_size
        for kernel in (4, 3, 2):
            side = (side - kernel + 1) // 2
        bn = dict(track_running_stats=False)
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 64, 4, bias=False), nn.BatchNorm2d(64, **bn)
        self.conv2, self.bn2 = nn.Conv2d(64, 128, 3, bias=False), nn.BatchNorm2d(128, **bn)
        self.conv3, self.bn3 = nn.Conv2d(128, 256, 2, bias=False), nn.BatchNorm2d(256, **bn)
        self.maxpool, self.relu = nn.MaxPool2d(2), nn.ReLU()
        self.drop1, self.drop2 = nn.Dropout(0.2), nn.Dropout(0.5)
        self.fc1, self.bn4 = nn.Linear(256 * side * side, 2048, bias=False), nn.BatchNorm1d(2048, **bn)
        self.fc2, self.bn5 = nn.Linear(2048, 2048, bias=False), nn.BatchNorm1d(2048, **bn)
        self.fc3 = nn.ModuleList([nn.Linear(2048, num_classes, bias=False)])

    def forward(self, x):
        x = self.maxpool(self.drop1(self.relu(self.bn1(self.conv1(x)))))
        x = self.maxpool(self.drop1(self.relu(self.bn2(self.conv2(x)))))
        x = self.maxpool(self.drop2(self.relu(self.bn3(self.conv3(x)))))
        x = self.drop2(self.relu(self.bn4(self.fc1(torch.flatten(x, 1)))))
        x = self.drop2(self.relu(self.bn5(self.fc2(x))))
        return self.fc3[0](x)


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.shortcut(x))


class ResNet18Reduced(nn.Module):
    def __init__(self, num_classes, in_channels, nf=20):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf)
        planes = nf
        for i, (width, stride) in enumerate(((nf, 1), (2 * nf, 2), (4 * nf, 2), (8 * nf, 2)), start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(planes, width, stride), BasicBlock(width, width)))
            planes = width
        self.linear = nn.Linear(8 * nf, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def _conv_bn_relu6(cin, cout, kernel, stride, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers = [_conv_bn_relu6(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _make_divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2(nn.Module):
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes, in_channels, early_stride=1, width_mult=1.0):
        super().__init__()
        channels, last = _make_divisible(32 * width_mult), _make_divisible(1280 * max(1.0, width_mult))
        layers = [_conv_bn_relu6(in_channels, channels, 3, early_stride)]
        for t, c, n, s in self.settings:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, (early_stride if c == 24 else s) if i == 0 else 1, t))
                channels = out
        layers.append(_conv_bn_relu6(channels, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def build_twin(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return {
        "small-cnn": lambda: SmallCNN(num_classes, in_channels),
        "alexnet-gpm": lambda: AlexNetGPM(num_classes, in_channels, image_size),
        "resnet18-reduced": lambda: ResNet18Reduced(num_classes, in_channels),
        "mobilenetv2": lambda: MobileNetV2(num_classes, in_channels, early_stride=1),
        "mobilenetv2-torchvision": lambda: MobileNetV2(num_classes, in_channels, early_stride=2),
    }[name]()
