"""Minibatches: the `batches` iterator and the per-epoch `DataLoader`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check(images, labels, batch_size, transform) -> None:
    if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
        raise TypeError("images and labels must be ndarrays")
    if images.ndim == 0 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            "images (N, ...) and labels (N,) must agree, "
            f"got shapes {images.shape} and {labels.shape}"
        )
    if not _is_int(batch_size):
        raise TypeError(f"batch_size must be an integer, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if transform is not None and not callable(transform):
        raise TypeError(
            "transform must be None or callable as transform(x, rng), "
            f"got {type(transform).__name__}"
        )


def batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool = False,
    seed: int | np.random.Generator = 0, drop_last: bool = False,
    transform: Transform | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `(x, y)` minibatches of `batch_size` samples (the last one smaller unless `drop_last`).

    With `shuffle`, the order is a permutation drawn from `np.random.default_rng(seed)`, which
    also feeds `transform(x, rng)`; the same seed gives identical batches. `x` and `y` are
    fresh arrays (fancy-indexed copies).
    """
    _check(images, labels, batch_size, transform)
    rng = np.random.default_rng(seed)
    n = len(labels)
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]
            x = images[index]
            yield (transform(x, rng) if transform is not None else x), labels[index]

    return generate()


class DataLoader:
    """Iterate over `(x, y)` minibatches, one epoch per `iter()`, reshuffled every epoch.

    Epoch `e` draws its order and transforms from `np.random.default_rng((seed, e))`, so the
    sequence of epochs is fixed by `seed`, and any epoch can be replayed by setting `epoch`
    (e.g. when resuming from a checkpoint). `epoch` advances each time iteration starts.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool = False,
        seed: int = 0, drop_last: bool = False, transform: Transform | None = None,
    ):
        _check(images, labels, batch_size, transform)
        if not _is_int(seed):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.seed, self.transform = int(seed), transform
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        return batches(self.images, self.labels, self.batch_size, self.shuffle, rng,
                       self.drop_last, self.transform)
