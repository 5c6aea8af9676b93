"""Sliding-window geometry shared by convolution and pooling (specs/conv.md#geometry); the
output size is `lance_ref.kernels.reference.output_size`, which the kernels share.

Arrays are NCHW. (im2col itself is a kernel: `lance_ref.kernels.im2col`.)
"""

from __future__ import annotations

import numpy as np


def pair(value, name: str, minimum: int) -> tuple:
    """An (h, w) pair from an int or a 2-sequence, each at least `minimum`."""
    h, w = (value, value) if np.isscalar(value) else tuple(value)
    if not all(isinstance(v, (int, np.integer)) for v in (h, w)) or min(h, w) < minimum:
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return int(h), int(w)


def tap(x: np.ndarray, i: int, j: int, out_hw, stride, dilation) -> np.ndarray:
    """The view x[:, :, s*h' + d*i, s*w' + d*j] over all outputs (h', w'): one kernel tap."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return x[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
