"""User datasets stored as `.npz` archives holding `images` and `labels`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import load_npz as load_arrays
from .dataset import Dataset, channel_stats


def load_npz(path: str | os.PathLike) -> Dataset:
    """A Dataset from an `.npz` with `images` (N, H, W) or (N, C, H, W) and `labels` (N,).

    Images are integers in 0..255 (stored as uint8) or float32/float64 in [0, 1]; labels are
    integers >= 0, classes are named "0".."max label". `mean`/`std` are computed from the
    images (`channel_stats`). Read without pickle; bad contents raise ValueError naming the file.
    """
    arrays = load_arrays(path, required=("images", "labels"))
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"{path}: 'images' must have shape (N, H, W) or (N, C, H, W) with N > 0, "
            f"got {images.shape}"
        )
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise ValueError(f"{path}: integer 'images' must lie in 0..255")
        images = images.astype(np.uint8)
    elif images.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"{path}: 'images' must be integers or float32/float64, got {images.dtype}"
        )
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.shape != images.shape[:1] or labels.min() < 0
    ):
        raise ValueError(
            f"{path}: 'labels' must be non-negative integers of shape ({len(images)},), "
            f"got {labels.dtype} {labels.shape}"
        )
    mean, std = channel_stats(images)
    classes = tuple(str(c) for c in range(labels.max() + 1))
    try:
        return Dataset(images, labels.astype(np.int64), classes, Path(path).stem, mean, std)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
