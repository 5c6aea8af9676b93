"""`load_dataset(spec)`: one string names the data and where it lives."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .cifar import load_cifar
from .dataset import Dataset, channel_stats, split_per_class
from .mnist import load_mnist5k, load_mnist_idx
from .npz import load_npz

DATASET_SPECS = ("mnist5k", "mnist:DIR", "cifar10:PATH", "cifar100:PATH", "npz:PATH")
TEST_FRACTION = 0.2  # mnist5k: 100 test digits per class, 4,000 train / 1,000 test


def _npz_split(path: str) -> tuple[Dataset, Dataset]:
    """The `.npz` split per class; both halves normalised with the training half's statistics."""
    train, test = split_per_class(load_npz(path), TEST_FRACTION)
    mean, std = channel_stats(train.images)
    return replace(train, mean=mean, std=std), replace(test, mean=mean, std=std)


_LOADERS = {
    "mnist": load_mnist_idx,
    "cifar10": lambda path: load_cifar(path, 10),
    "cifar100": lambda path: load_cifar(path, 100),
    "npz": _npz_split,
}


def load_dataset(spec: str) -> tuple[Dataset, Dataset]:
    """(train, test) for a spec among `DATASET_SPECS`.

    `"mnist5k"` is the bundled subset with a fixed split (no seed involved): the last 100
    digits of each class in file order are the test set. `"npz:PATH"` is split the same way
    (the last 20% of each class). MNIST and CIFAR keep their official splits.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string, got {type(spec).__name__}")
    if spec == "mnist5k":
        return split_per_class(load_mnist5k(), TEST_FRACTION)
    kind, sep, path = spec.partition(":")
    if not sep or kind not in _LOADERS or not path:
        valid = ", ".join(DATASET_SPECS)
        raise ValueError(f"unknown dataset spec {spec!r}; expected one of {valid}")
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist (dataset spec {spec!r})")
    try:
        return _LOADERS[kind](path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (dataset spec {spec!r})") from err
