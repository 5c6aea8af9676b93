"""Binary latents stored at one bit per element (specs/binary.md#packing)."""

from __future__ import annotations

import numpy as np


def pack_signs(latents: np.ndarray) -> np.ndarray:
    """(N, ...) latents -> (N, ceil(D / 8)) uint8: bit 1 where the latent is >= 0 (sign +1),
    D = the elements per sample, most significant bit first (`np.packbits`)."""
    latents = np.asarray(latents)
    if not np.isfinite(latents).all():
        raise ValueError("latents to pack hold NaN or Inf")
    return np.packbits(latents.reshape(len(latents), -1) >= 0, axis=1)


def unpack_signs(packed: np.ndarray, shape: tuple, dtype=np.float32) -> np.ndarray:
    """The +-1 latents of `pack_signs`, as (N, *shape) in `dtype`."""
    count = int(np.prod(shape))
    if packed.ndim != 2 or packed.shape[1] != -(-count // 8):
        raise ValueError(f"packed latents must have shape (N, {-(-count // 8)}) for latents of shape {tuple(shape)}, got {packed.shape}")
    bits = np.unpackbits(packed, axis=1, count=count)
    return (bits.astype(dtype) * 2 - 1).reshape(len(packed), *shape)
