"""Ops whose VJP needs one bit per element keep it packed (specs/activation.md#masks)."""

from __future__ import annotations

import numpy as np

from ..tensor import Function


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """A bool array as ceil(n / 8) bytes, one bit per element in C order (specs/activation.md#masks)."""
    return np.packbits(mask, axis=None)


def unpack_mask(packed: np.ndarray, shape: tuple) -> np.ndarray:
    """The bool array of `shape` that `pack_mask` packed."""
    return np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).view(bool)


class Masked(Function):
    """An op whose VJP needs only a mask of its input: forward saves it packed, when recorded."""

    def save_mask(self, mask) -> None:
        """Save pack_mask(mask()) if the graph is recorded; `mask` is not called otherwise."""
        if any(self.needs_input_grad):
            bits = mask()
            self.shape = bits.shape
            self.save(pack_mask(bits))

    def mask(self) -> np.ndarray:
        (packed,) = self.saved_arrays
        return unpack_mask(packed, self.shape)
