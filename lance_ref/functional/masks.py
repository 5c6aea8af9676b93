"""Ops whose VJP needs one bit per element keep it packed (specs/activation.md#masks)."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels.reference import pack_mask, unpack_mask
from ..tensor import Function


class Masked(Function):
    """An op whose VJP needs only a mask of its input: forward saves it packed, when recorded."""

    def save_mask(self, mask) -> None:
        """Save pack_mask(mask()) if the graph is recorded; `mask` is not called otherwise."""
        if any(self.needs_input_grad):
            bits = mask()
            self.shape = bits.shape
            self.save(pack_mask(bits))

    def save_packed(self, packed: np.ndarray | None, shape: tuple) -> None:
        """Save a mask a kernel packed (None when the graph is not recorded)."""
        if packed is not None:
            self.shape = shape
            self.save(packed)

    def mask(self) -> np.ndarray:
        (packed,) = self.saved_arrays
        return unpack_mask(packed, self.shape)

    def masked(self, grad: np.ndarray) -> np.ndarray:
        """grad [mask], without unpacking the mask into an array of its own."""
        (packed,) = self.saved_arrays
        return kernels.masked(grad, packed)
