"""Sliding-window geometry shared by convolution and pooling (specs/conv.md#geometry).

Arrays are NCHW. The padded input that im2col reads is allocated channels-last (NHWC memory,
viewed as NCHW), so the im2col copy reads whole channel vectors.
"""

from __future__ import annotations

import numpy as np


def pair(value, name: str, minimum: int) -> tuple:
    """An (h, w) pair from an int or a 2-sequence, each at least `minimum`."""
    h, w = (value, value) if np.isscalar(value) else tuple(value)
    if not all(isinstance(v, (int, np.integer)) for v in (h, w)) or min(h, w) < minimum:
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return int(h), int(w)


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode=False) -> int:
    """floor((size + 2p - d(k-1) - 1) / s) + 1, torch's rule (ceil_mode keeps a last window
    that starts inside the input or left padding)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def channels_last_zeros(n, c, h, w, dtype, fill=0.0) -> np.ndarray:
    """An (n, c, h, w) array stored in NHWC memory order, filled with `fill`."""
    return np.full((n, h, w, c), fill, dtype=dtype).transpose(0, 3, 1, 2)


def padded(x: np.ndarray, top, left, bottom, right, fill=0.0) -> np.ndarray:
    """`x` (N, C, H, W) padded spatially with `fill`, in a channels-last buffer."""
    n, c, h, w = x.shape
    out = channels_last_zeros(n, c, h + top + bottom, w + left + right, x.dtype, fill)
    out[:, :, top : top + h, left : left + w] = x
    return out


def tap(x: np.ndarray, i: int, j: int, out_hw, stride, dilation) -> np.ndarray:
    """The view x[:, :, s*h' + d*i, s*w' + d*j] over all outputs (h', w'): one kernel tap."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return x[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]


def windows(x: np.ndarray, kernel, out_hw, stride, dilation) -> np.ndarray:
    """A read-only view (N, C, H', W', kh, kw) of every window of a padded input, no copy."""
    n, c = x.shape[:2]
    s_n, s_c, s_h, s_w = x.strides
    (kh, kw), (oh, ow), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    return np.lib.stride_tricks.as_strided(
        x,
        shape=(n, c, oh, ow, kh, kw),
        strides=(s_n, s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw),
        writeable=False,
    )
