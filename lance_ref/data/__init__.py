"""Datasets, batch transforms and minibatch loaders (specs/data.md).

Images stay raw in a `Dataset` (uint8, (N, C, H, W)); a loader's `transform` turns each batch
into normalised floats, e.g. for training
`lambda x, rng: normalize(random_flip(random_crop(x, 4, rng), rng), ds.mean, ds.std)`.
"""

from .catalog import DATASET_SPECS, load_dataset
from .cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, load_cifar
from .dataset import Dataset, channel_stats, first_per_class, resized, split_per_class, subset_by_classes
from .loader import DataLoader, batches
from .mnist import MNIST_MEAN, MNIST_STD, load_mnist5k, load_mnist_idx
from .npz import load_npz
from .transforms import normalize, random_crop, random_flip, resize

__all__ = [
    "CIFAR100_MEAN", "CIFAR100_STD", "CIFAR10_MEAN", "CIFAR10_STD", "DATASET_SPECS", "DataLoader",
    "Dataset", "MNIST_MEAN", "MNIST_STD", "batches", "channel_stats", "load_cifar", "load_dataset",
    "load_mnist5k", "load_mnist_idx", "load_npz", "normalize", "random_crop", "random_flip", "resize", "resized",
    "first_per_class", "split_per_class", "subset_by_classes",
]
