"""The model zoo: shapes, gradients, names, initialisation and multi-head use (specs/nn.md#zoo)."""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import pytest

import lance_ref as lr
from lance_ref import functional as F
from lance_ref import nn
from lance_ref.optim import SGD

# (name, options, in_channels, image_size): small enough for a fast test
CASES = [
    ("small-cnn", {}, 1, 28),
    ("alexnet-gpm", {}, 1, 28),
    ("resnet18-reduced", {"nf": 4}, 3, 16),
    ("mobilenetv2", {"width_mult": 0.25}, 3, 16),
]


def images(n, channels, size, dtype, seed=0):
    return lr.Tensor(np.random.default_rng(seed).standard_normal((n, channels, size, size)).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options, channels, size", CASES)
def test_forward_backward_reaches_every_parameter(name, options, channels, size, dtype):
    lr.manual_seed(0)
    model = nn.build_model(name, 5, channels, size, dtype=dtype, **options)
    assert all(p.dtype == dtype for p in model.parameters())
    logits = model(images(3, channels, size, dtype))
    assert logits.shape == (3, 5) and logits.dtype == dtype
    F.cross_entropy(logits, np.array([0, 1, 4])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(np.all(np.isfinite(p.grad)) for p in model.parameters())
    model.eval()
    with lr.no_grad():
        assert model(images(3, channels, size, dtype)).shape == (3, 5)


@pytest.mark.parametrize("name, options, channels, size", CASES)
def test_init_is_deterministic_under_manual_seed(name, options, channels, size):
    states = []
    for seed in (7, 7, 8):
        lr.manual_seed(seed)
        states.append(nn.build_model(name, 5, channels, size, **options).state_dict())
    first, again, other = states
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert any(not np.array_equal(first[k], other[k]) for k in first)


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg'; available: .*small-cnn"):
        nn.build_model("vgg", 10, 3, 32)
    with pytest.raises(ValueError, match="num_classes"):
        nn.build_model("small-cnn", 0, 1, 28)
    with pytest.raises(ValueError, match="image_size 16 is too small"):
        nn.build_model("alexnet-gpm", 10, 3, 16)
    with pytest.raises(TypeError, match="width_mult"):
        nn.build_model("small-cnn", 10, 1, 28, width_mult=2)


def test_small_cnn_names():
    model = nn.build_model("small-cnn", 10, 1, 28)
    assert [n for n, _ in model.named_parameters()][:3] == ["features.0.weight", "features.1.weight", "features.1.bias"]
    assert "classifier.weight" in model.state_dict()


def test_alexnet_gpm_matches_upstream_names_and_shapes():
    model = nn.build_model("alexnet-gpm", 10, 3, 32, heads=[3, 4])
    state = model.state_dict()
    assert list(state) == [
        "conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
        "conv3.weight", "bn3.weight", "bn3.bias", "fc1.weight", "bn4.weight", "bn4.bias",
        "fc2.weight", "bn5.weight", "bn5.bias", "fc3.0.weight", "fc3.1.weight",
    ]
    assert state["conv1.weight"].shape == (64, 3, 4, 4)
    assert state["conv3.weight"].shape == (256, 128, 2, 2)
    assert state["fc1.weight"].shape == (2048, 256 * 2 * 2)
    assert state["fc3.1.weight"].shape == (4, 2048)


def test_multi_head_forward():
    lr.manual_seed(0)
    model = nn.build_model("resnet18-reduced", 10, 3, 8, nf=2, heads=[3, 4])
    assert "linear.1.weight" in model.state_dict() and "linear.0.bias" not in model.state_dict()
    x = images(2, 3, 8, np.float32)
    both = model(x)
    assert [y.shape for y in both] == [(2, 3), (2, 4)]
    second = model(x, task=1)
    second.sum().backward()
    assert model.linear[0].weight.grad is None and model.linear[1].weight.grad is not None
    single = nn.build_model("resnet18-reduced", 10, 3, 8, nf=2)
    with pytest.raises(ValueError, match="task"):
        single(x, task=1)
    with pytest.raises(ValueError, match="heads"):
        nn.build_model("alexnet-gpm", 10, 3, 32, heads=[])


def test_resnet18_reduced_structure():
    model = nn.build_model("resnet18-reduced", 10, 3, 32)
    state = model.state_dict()
    assert state["conv1.weight"].shape == (20, 3, 3, 3) and model.conv1.stride == (1, 1)
    assert state["layer2.0.shortcut.0.weight"].shape == (40, 20, 1, 1)
    assert "layer1.0.shortcut.0.weight" not in state
    assert state["layer4.1.conv2.weight"].shape == (160, 160, 3, 3)
    assert state["linear.weight"].shape == (10, 160) and "linear.bias" in state
    assert "bn1.running_mean" not in nn.ResNet18Reduced(10, track_running_stats=False).state_dict()


def test_mobilenetv2_structure_and_init():
    lr.manual_seed(0)
    model = nn.build_model("mobilenetv2", 10, 3, 32)
    assert len(model.features) == 19
    depthwise = model.features[2].conv[1][0]
    assert depthwise.groups == depthwise.in_channels == 96 and depthwise.weight.shape == (96, 1, 3, 3)
    assert model.features[0][0].stride == (1, 1) and model.features[2].conv[1][0].stride == (1, 1)
    assert model.features[4].conv[1][0].stride == (2, 2)
    assert model.classifier[1].weight.shape == (10, 1280)
    assert "features.1.conv.0.0.weight" in model.state_dict()
    w = model.features[18][0].weight.data  # 1x1 conv 320 -> 1280: fan_out = 1280
    assert abs(w.std() - math.sqrt(2 / 1280)) < 0.02 * math.sqrt(2 / 1280)
    assert abs(model.classifier[1].weight.data.std() - 0.01) < 0.001
    np.testing.assert_array_equal(model.classifier[1].bias.data, 0)
    slim = nn.MobileNetV2(10, width_mult=0.5)
    assert slim.features[0][0].out_channels == 16 and slim.classifier[1].in_features == 1280
    assert model(images(2, 3, 32, np.float32)).shape == (2, 10)


def test_small_cnn_learns_digits():
    """A smoke test of the whole stack on real MNIST digits: a few SGD steps fit a small set."""
    data = np.load(Path(lr.__file__).parent / "data" / "mnist5k.npz")
    picks = np.concatenate([np.flatnonzero(data["labels"] == c)[:10] for c in range(10)])
    x = lr.Tensor((data["images"][picks, None] / 255.0 - 0.1307) / 0.3081, dtype=np.float32)
    y = data["labels"][picks].astype(np.int64)
    lr.manual_seed(0)
    model = nn.build_model("small-cnn", 10, 1, 28)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(8):
        for batch in np.array_split(rng.permutation(len(y)), 4):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()  # the running statistics of 32 small batches are rough: a loose bound
    assert (model(x).data.argmax(1) == y).mean() >= 0.75


def test_mobilenetv2_variants_share_names_but_not_strides():
    """Both variants take torchvision's state_dict (names and shapes equal); only the
    torchvision one has its strides, and each says in its repr which it is."""
    cifar = nn.build_model("mobilenetv2", 10, 3, 32, width_mult=0.25)
    torchvision = nn.build_model("mobilenetv2-torchvision", 10, 3, 32, width_mult=0.25)
    assert {k: v.shape for k, v in cifar.state_dict().items()} == {k: v.shape for k, v in torchvision.state_dict().items()}
    assert "variant=cifar" in repr(cifar) and "need mobilenetv2-torchvision" in repr(cifar)
    assert "variant=torchvision" in repr(torchvision)
    strides = [m.stride for m in torchvision.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert len(strides) == 5  # torchvision's five stride-2 stages; the CIFAR variant has three
    assert sum(m.stride != (1, 1) for m in cifar.modules() if isinstance(m, nn.Conv2d)) == 3
    x = lr.tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    with lr.no_grad():
        assert torchvision.eval()(x).shape == (2, 10)
    with pytest.raises(ValueError, match="variant must be one of"):
        nn.zoo.MobileNetV2(variant="imagenet")
