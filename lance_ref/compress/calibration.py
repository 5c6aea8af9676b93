"""LANCE calibration: per-mode Gram matrices summed over batches, then bases fixed once."""

from __future__ import annotations

import numpy as np

from ..kernels import gram
from ..kernels.reference import check_finite, check_float
from .hosvd import check_eps, check_modes, leading_eigenvectors

MODE_SETS = ("all", "chw")


def check_mode_set(mode_set: str, name: str = "mode_set") -> str:
    if mode_set not in MODE_SETS:
        raise ValueError(f"{name} must be one of {MODE_SETS}, got {mode_set!r}")
    return mode_set


def compressed_modes(mode_set: str, ndim: int) -> tuple:
    """The modes to compress in an activation of `ndim` axes, axis 0 the batch: "all" (as
    upstream) or "chw", every mode but the batch (specs/hosvd.md#mode-sets)."""
    return tuple(range(0 if check_mode_set(mode_set) == "all" else 1, ndim))


class Calibrator:
    """Accumulates G_n = sum over batches of X_(n) X_(n)^T (float64) for each mode n in `modes`
    of `ndim`-axis batches (axis 0 the batch), then fixes the bases (specs/hosvd.md#calibration).

    Every batch must have the first batch's dtype and, on the calibrated modes, its sizes: with
    mode 0 calibrated that means a constant batch size (the batch-mode Gram pairs samples by
    their position in the batch).
    """

    def __init__(self, eps, modes, ndim: int):
        self.eps = check_eps(eps)
        if isinstance(ndim, bool) or not isinstance(ndim, (int, np.integer)) or ndim < 1:
            raise ValueError(f"ndim must be a positive int, got {ndim!r}")
        self.ndim = int(ndim)
        self.modes = check_modes(modes, self.ndim)
        self._grams = [None] * self.ndim
        self._first = None  # (shape, dtype) of the first batch
        self._bases = None  # cached by bases() until the next update
        self.batches_seen = 0

    def update(self, x: np.ndarray) -> None:
        """Add the Grams of one batch `x`; batches are numbered from 1 in error messages."""
        check_float(x, "x")
        batch = self.batches_seen + 1
        if x.ndim != self.ndim:
            raise ValueError(f"calibration batch {batch} must have {self.ndim} dimensions, got {x.shape}")
        if self._first is not None:
            self._check_like_first(x, batch)
        check_finite(x, f"calibration batch {batch}")
        x64 = x.astype(np.float64, copy=False)
        for n in self.modes:
            g = gram(x64, n)
            self._grams[n] = g if self._grams[n] is None else self._grams[n] + g
        if self._first is None:
            self._first = (x.shape, x.dtype)
        self._bases = None
        self.batches_seen = batch

    def _check_like_first(self, x: np.ndarray, batch: int) -> None:
        shape, dtype = self._first
        if x.dtype != dtype:
            raise TypeError(f"calibration batch {batch} has dtype {x.dtype} but batch 1 had {dtype}")
        changed = [n for n in self.modes if x.shape[n] != shape[n]]
        if changed:
            hint = (
                "; mode 0 (the batch) needs a constant batch size: drop the incomplete last batch "
                "or use the 'chw' mode set"
                if 0 in changed
                else ""
            )
            raise ValueError(
                f"calibration batch {batch} has shape {x.shape} but batch 1 had {shape}: the calibrated "
                f"modes {self.modes} must keep their sizes{hint}"
            )

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the batches (and of the bases)."""
        if self._first is None:
            raise ValueError("calibration saw no batches")
        return self._first[1]

    @property
    def grams(self) -> list:
        """Copies of the accumulated float64 Grams (None for modes not calibrated)."""
        return [None if g is None else g.copy() for g in self._grams]

    def bases(self) -> list:
        """The fixed factors U_n (I_n, k_n) in the batches' dtype, None for modes not calibrated:
        eigenvectors of G_n by the energy rule and hosvd's sign convention."""
        if self.batches_seen == 0:
            raise ValueError("calibration saw no batches")
        if self._bases is None:
            self._bases = [None if g is None else leading_eigenvectors(g, self.eps, self.dtype) for g in self._grams]
        return list(self._bases)

    @property
    def ranks(self) -> list:
        """k_n of each basis (None for modes not calibrated)."""
        return [None if u is None else u.shape[1] for u in self.bases()]
