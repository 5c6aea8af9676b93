"""Batch transforms on (N, C, H, W) arrays (specs/data.md).

Random transforms take the generator to draw from, so a loader's seed fixes them. Crop and
flip work on raw or normalised images; apply them before `normalize` to match torchvision,
where the crop's zero padding is black.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _check_batch(batch: np.ndarray) -> None:
    if not isinstance(batch, np.ndarray) or batch.ndim != 4:
        shape = getattr(batch, "shape", type(batch).__name__)
        raise ValueError(f"batch must be an ndarray of shape (N, C, H, W), got {shape}")


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _per_channel(value, channels: int, dtype: np.dtype, name: str) -> np.ndarray:
    """A scalar or one value per channel, as a (1, C, 1, 1) array of `dtype`."""
    array = np.asarray(value, dtype=dtype).reshape(-1)
    if array.size not in (1, channels):
        raise ValueError(f"{name} needs 1 or {channels} values (one per channel), got {array.size}")
    return np.broadcast_to(array, (channels,)).reshape(1, channels, 1, 1)


def normalize(
    images: np.ndarray, mean: float | Sequence[float], std: float | Sequence[float],
    dtype=np.float32,
) -> np.ndarray:
    """`(x - mean[c]) / std[c]` per channel, with `x` the images on the [0, 1] scale in `dtype`.

    uint8 images are divided by 255 (as torchvision's `ToTensor`); float images are taken as
    already in [0, 1]. `mean`/`std` are scalars or one value per channel; `dtype` is float32
    or float64 and every step is computed in it.
    """
    _check_batch(images)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    mean_c = _per_channel(mean, images.shape[1], dtype, "mean")
    std_c = _per_channel(std, images.shape[1], dtype, "std")
    if not (std_c > 0).all():
        raise ValueError(f"std must be positive, got {std}")
    x = images.astype(dtype)
    if images.dtype == np.uint8:
        x /= dtype.type(255)
    x -= mean_c
    x /= std_c
    return x


def random_crop(batch: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad H and W by `padding` on each side, then crop each sample back to (H, W) at an
    offset drawn uniformly from {0..2*padding}^2 (top offsets for all samples, then left)."""
    _check_batch(batch)
    _check_rng(rng)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)):
        raise TypeError(f"padding must be an integer, got {type(padding).__name__}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, _, h, w = batch.shape
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    # (N, C, 2p+1, 2p+1, H, W): every (H, W) window of the padded batch, without a copy
    windows = sliding_window_view(np.pad(batch, pad), (h, w), axis=(2, 3))
    top = rng.integers(0, 2 * padding + 1, size=n)
    left = rng.integers(0, 2 * padding + 1, size=n)
    return windows[np.arange(n), :, top, left]


def random_flip(batch: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each sample left-right (along W) with probability `p`: sample n flips where
    `u_n < p`, with `u ~ U[0, 1)` drawn for the whole batch."""
    _check_batch(batch)
    _check_rng(rng)
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    flip = rng.random(len(batch)) < p
    out = batch.copy()
    out[flip] = batch[flip, ..., ::-1]
    return out


def _bilinear_weights(size: int, out: int) -> np.ndarray:
    """(out, size) linear-interpolation matrix, half-pixel centres (torch's align_corners=False)."""
    centres = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weights = np.zeros((out, size))
    np.add.at(weights, (np.arange(out), low), 1 - (centres - low))
    np.add.at(weights, (np.arange(out), high), centres - low)
    return weights


def resize(images: np.ndarray, size: int, channels: int | None = None) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) images to (size, size), optionally repeating a single
    channel `channels` times (grey digits as RGB); keeps uint8 images uint8 (rounded)."""
    _check_batch(images)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if channels is not None and images.shape[1] not in (1, channels):
        raise ValueError(f"cannot repeat {images.shape[1]} channels into {channels}")
    rows, cols = _bilinear_weights(images.shape[2], size), _bilinear_weights(images.shape[3], size)
    out = np.einsum("ph,nchw,qw->ncpq", rows, images.astype(np.float64), cols, optimize=True)
    if channels is not None:
        out = np.broadcast_to(out, (out.shape[0], channels, size, size))
    return np.rint(out).clip(0, 255).astype(np.uint8) if images.dtype == np.uint8 else out.astype(images.dtype)
