"""NumPy reference kernels: the ground truth every Rust kernel is tested against."""

import math
import operator

import numpy as np

FLOAT_DTYPES = ("float32", "float64")


def unfold(x: np.ndarray, mode: int) -> np.ndarray:
    """Mode-n unfolding X_(n) of `x` (specs/kernels.md#unfold).

    Returns a new C-contiguous array (never a view of `x`) of shape
    (x.shape[mode], product of the other dims): axis `mode` moved to the front, the other axes
    flattened row-major in their original order.
    """
    if not isinstance(x, np.ndarray) or x.dtype.name not in FLOAT_DTYPES:
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"x must be a float32 or float64 numpy.ndarray, got {kind}")
    mode = operator.index(mode)
    if not 0 <= mode < x.ndim:
        raise ValueError(f"mode must satisfy 0 <= mode < {x.ndim}, got {mode}")
    moved = np.moveaxis(x, mode, 0)
    return moved.reshape(moved.shape[0], math.prod(moved.shape[1:])).copy()
