"""The `Dataset` container and the ways to cut one: by class, and into train/test splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .transforms import resize


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled images, kept raw: normalise batches with `normalize(x, ds.mean, ds.std)`.

    - `images`: (N, C, H, W), uint8 grey levels 0..255, or float32/float64 values in [0, 1].
    - `labels`: (N,) int64, each in `range(len(classes))`.
    - `classes`: the class names, indexed by label.
    - `name`: a short identifier such as `"mnist5k"` or `"cifar10"`.
    - `mean`, `std`: per-channel normalisation constants on the [0, 1] scale.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            raise ValueError(
                f"images must be an ndarray of shape (N, C, H, W), got {_describe(images)}"
            )
        if images.dtype not in (np.uint8, np.float32, np.float64):
            raise TypeError(f"images must be uint8 or float32/float64, got {images.dtype}")
        if images.dtype != np.uint8 and images.size and not _in_unit_range(images):
            raise ValueError("float images must hold finite values in [0, 1]")
        if (
            not isinstance(labels, np.ndarray) or labels.dtype != np.int64
            or labels.shape != images.shape[:1]
        ):
            raise ValueError(
                f"labels must be an int64 ndarray of shape ({len(images)},), "
                f"got {_describe(labels)}"
            )
        if not isinstance(self.classes, tuple) or not all(isinstance(c, str) for c in self.classes):
            raise TypeError(f"classes must be a tuple of str, got {self.classes!r}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(
                f"labels must lie in [0, {len(self.classes)}), "
                f"got [{labels.min()}, {labels.max()}]"
            )
        channels = images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels or min(self.std, default=1) <= 0:
            raise ValueError(
                f"mean and std need one value per channel ({channels}) and std > 0, "
                f"got mean={self.mean}, std={self.std}"
            )

    def __len__(self) -> int:
        return len(self.labels)


def _in_unit_range(x: np.ndarray) -> bool:
    return bool(np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1)


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _take(dataset: Dataset, indices: np.ndarray) -> Dataset:
    """The samples of `dataset` at `indices`, in that order (everything else unchanged)."""
    return replace(dataset, images=dataset.images[indices], labels=dataset.labels[indices])


def subset_by_classes(dataset: Dataset, classes: Sequence[int], relabel: bool = True) -> Dataset:
    """The samples whose label is in `classes`, in their original order.

    With `relabel`, class `classes[i]` becomes label `i` and `classes` names follow that order
    (a task of a class-split benchmark); otherwise labels and names are kept.
    """
    wanted = [int(c) for c in classes]
    if not wanted or len(set(wanted)) != len(wanted):
        raise ValueError(
            f"classes must be a non-empty sequence of distinct labels, got {classes!r}"
        )
    bad = [c for c in wanted if not 0 <= c < len(dataset.classes)]
    if bad:
        raise ValueError(
            f"classes {bad} are not labels of {dataset.name!r} (0..{len(dataset.classes) - 1})"
        )
    subset = _take(dataset, np.flatnonzero(np.isin(dataset.labels, wanted)))
    if not relabel:
        return subset
    new_label = np.zeros(len(dataset.classes), dtype=np.int64)
    new_label[wanted] = np.arange(len(wanted))
    return replace(
        subset,
        labels=new_label[subset.labels],
        classes=tuple(dataset.classes[c] for c in wanted),
    )


def first_per_class(dataset: Dataset, count: int) -> Dataset:
    """The first `count` samples of each class (all of a class with fewer), in file order."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    rank = np.zeros(len(dataset), dtype=np.int64)  # each sample's position within its class
    for label in np.unique(dataset.labels):
        members = dataset.labels == label
        rank[members] = np.arange(members.sum())
    return _take(dataset, np.flatnonzero(rank < count))


def split_per_class(dataset: Dataset, test_fraction: float) -> tuple[Dataset, Dataset]:
    """Deterministic stratified split: the last `round(n_c * test_fraction)` samples of each
    class (in file order) form the test set, the rest the training set; both keep file order.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    is_test = np.zeros(len(dataset), dtype=bool)
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        n_test = round(len(members) * test_fraction)
        is_test[members[len(members) - n_test:]] = True
    return _take(dataset, np.flatnonzero(~is_test)), _take(dataset, np.flatnonzero(is_test))


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of (N, C, H, W) images on the
    [0, 1] scale (uint8 divided by 255), computed in float64.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.size == 0:
        raise ValueError(
            f"images must be a non-empty (N, C, H, W) ndarray, got {_describe(images)}"
        )
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    means, stds = [], []
    for c in range(images.shape[1]):  # one channel at a time keeps the float64 copy small
        channel = images[:, c].astype(np.float64) / scale
        means.append(float(channel.mean()))
        stds.append(float(channel.std()))
    return tuple(means), tuple(stds)


def resized(dataset: Dataset, size: int = 0, channels: int = 0) -> Dataset:
    """`dataset` with images resized to size x size (bilinear) and single-channel images repeated
    into `channels` (grey digits as RGB, their mean and std repeated); 0 keeps that property.
    Resized 256 images at a time, so the float temporaries stay small (specs/data.md#resized)."""
    for name, value in (("size", size), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int (0 keeps the dataset's), got {value!r}")
    have = dataset.images.shape[1]
    if channels and channels != have and have != 1:
        raise ValueError(f"channels: cannot turn {have}-channel images into {channels} channels (only 1 channel repeats)")
    size = size or dataset.images.shape[2]
    channels = channels or have
    if (size, size, channels) == (*dataset.images.shape[2:], have):
        return dataset
    parts = [resize(dataset.images[i : i + 256], size, channels) for i in range(0, len(dataset), 256)]
    images = np.concatenate(parts) if parts else np.zeros((0, channels, size, size), dataset.images.dtype)
    repeat = channels // have
    return replace(dataset, images=images, mean=dataset.mean * repeat, std=dataset.std * repeat)
