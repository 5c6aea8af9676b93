"""Gradient Projection Memory (Saha et al., ICLR 2021; specs/continual.md#gpm).

Per protected layer a memory M (orthonormal columns in the space of the layer's input rows) is
extended after each task from a representation matrix R = rows^T; while later tasks train, the
layer's weight gradient loses its component in span(M): g <- g - g M M^T.
"""

from __future__ import annotations

import numpy as np

from ..kernels.reference import check_finite


def check_threshold(threshold: float, name: str = "threshold") -> float:
    if not 0 < threshold <= 1:
        raise ValueError(f"{name} must lie in (0, 1], got {threshold}")
    return float(threshold)


def extend_memory(memory: np.ndarray | None, representation: np.ndarray, threshold: float) -> np.ndarray:
    """GPM's memory update for one layer (float64): with no memory, the leading left singular
    vectors of R while their cumulative energy ratio stays below `threshold`; otherwise those
    of R - M M^T R, added while the energy M already explains plus theirs stays below it."""
    check_threshold(threshold)
    r = np.asarray(representation, dtype=np.float64)
    check_finite(r, "representation")
    u, s, _ = np.linalg.svd(r, full_matrices=False)
    total = float((s**2).sum())
    if total == 0:
        return memory if memory is not None else np.zeros((len(r), 0))
    if memory is None:
        return u[:, : int((np.cumsum(s**2) / total < threshold).sum())]
    residual = r - memory @ (memory.T @ r)
    u, s, _ = np.linalg.svd(residual, full_matrices=False)
    rank = gpm_rank(s**2 / total, (total - float((s**2).sum())) / total, threshold)
    extended = np.hstack([memory, u[:, :rank]])
    return extended[:, : len(r)]


def gpm_rank(shares, explained: float, threshold: float) -> int:
    """GPM's criterion: how many of `shares` (energy fractions, largest first) are added to the
    share already `explained`, each while the explained share is still below `threshold`."""
    rank = 0
    for share in shares:
        if explained >= threshold:
            break
        explained += share
        rank += 1
    return rank


def project_out(grad: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """g - g M M^T with g the gradient reshaped to (C_out, -1): the part orthogonal to span(M)."""
    g = grad.reshape(len(grad), -1)
    m = memory.astype(grad.dtype, copy=False)
    return (g - (g @ m) @ m.T).reshape(grad.shape)
