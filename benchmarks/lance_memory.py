"""LANCE's activation compression on MobileNetV2 and the reduced ResNet-18, on real images.

Each model sees the bundled digits resized to 32x32 with 3 channels, optionally after a short
pretraining on them; its last 2 or 4 conv layers are calibrated at each eps, and one training
step's ledger gives the bytes those layers keep (core and factors) against the bytes full
backprop keeps for them (their inputs). Compare with the paper's "up to 250x".

    python benchmarks/lance_memory.py [--pretrain-epochs 1] [--calibration-batches 20]
"""

from __future__ import annotations

import argparse

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor, memory
from lance_ref.allocator import keep_freed_memory
from lance_ref.compress import calibrate, prepare_finetune
from lance_ref.data import DataLoader, load_mnist5k, normalize, resize
from lance_ref.nn import build_model
from lance_ref.optim import SGD
from lance_ref.train import train_epoch

MODELS = ("mobilenetv2", "resnet18-reduced")


def pretrained(name, images, labels, epochs, batch):
    lance_ref.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=3, image_size=32)
    if epochs:
        optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
        loader = DataLoader(images, labels, batch, shuffle=True, seed=0)
        for epoch in range(epochs):
            train_epoch(model, optimizer, loader, label=f"pretrain {name} {epoch + 1}/{epochs}")
    return model.state_dict()


def compression(name, state, batches, last_n, eps, modes):
    """(LANCE bytes, full-backprop bytes, ranks) of the last `last_n` conv layers."""
    model = build_model(name, num_classes=10, in_channels=3, image_size=32)
    model.load_state_dict(state)
    names = prepare_finetune(model, last_n, "lance", eps, modes)[:-1]  # conv layers only
    calibrate(model, (x for x, _ in batches))
    x, y = batches[0]
    ledger = memory.ledger(F.cross_entropy(model(Tensor(x)), y), model.parameters())
    layers = [model.get_submodule(n) for n in names]
    return ledger.bytes(names), sum(layer.full_activation_bytes() for layer in layers), [layer.ranks() for layer in layers]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    parser.add_argument("--calibration-batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--modes", default="all", choices=["all", "chw"])
    args = parser.parse_args(argv)
    keep_freed_memory()
    data = load_mnist5k()
    images = resize(data.images, 32, channels=3)
    x = normalize(images, data.mean * 3, data.std * 3)
    batches = [(x[i : i + args.batch], data.labels[i : i + args.batch]) for i in range(0, args.batch * args.calibration_batches, args.batch)]
    print(f"activation bytes kept by the fine-tuned conv layers (batch {args.batch}, modes {args.modes}, "
          f"{args.calibration_batches} calibration batches, {args.pretrain_epochs} pretraining epochs)")
    print(f"{'model':<18}{'last':>5}{'eps':>6}{'full KiB':>11}{'LANCE KiB':>11}{'ratio':>9}  ranks (B, C, H, W) per layer")
    for name in MODELS:
        state = pretrained(name, normalize(images, data.mean * 3, data.std * 3), data.labels, args.pretrain_epochs, args.batch)
        for last_n in (2, 4):
            for eps in (0.7, 0.8, 0.9):
                kept, full, ranks = compression(name, state, batches, last_n, eps, args.modes)
                print(f"{name:<18}{last_n:>5}{eps:>6}{full / 1024:>11.1f}{kept / 1024:>11.1f}{full / kept:>9.1f}  {ranks}")


if __name__ == "__main__":
    main()
