"""Uniform min-max quantisation per tensor, with straight-through gradients
(specs/binary.md#quantisers)."""

from __future__ import annotations

import numbers

import numpy as np

from ..tensor import Function


def check_bits(bits, name: str = "bits") -> int:
    """`bits` as an int in 1..32."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= 32:
        raise ValueError(f"{name} must be an int in 1..32, got {bits!r}")
    return int(bits)


def quantize_array(x: np.ndarray, bits: int) -> np.ndarray:
    """Each value moved to the nearest of 2^bits levels evenly spaced from min(x) to max(x):
    lo + round((x - lo) / step) step with step = (hi - lo) / (2^bits - 1), computed in float64
    and returned in x's dtype. A constant tensor is returned unchanged."""
    check_bits(bits)
    x = np.asarray(x)
    if x.size == 0:
        return x.copy()
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("quantize: the tensor holds NaN or Inf")
    if hi == lo:
        return x.copy()
    step = (hi - lo) / (2.0**bits - 1)
    return (lo + np.round((x.astype(np.float64) - lo) / step) * step).astype(x.dtype)


class Quantize(Function):
    """y = quantize(x) in the forward; the gradient passes straight through."""

    def forward(self, x, bits):
        return quantize_array(x, bits)

    def backward(self, grad):
        return (grad,)


class QuantizeGrad(Function):
    """y = x in the forward; the gradient is quantised on its way back."""

    def forward(self, x, bits):
        self.bits = bits
        return x.copy()

    def backward(self, grad):
        return (quantize_array(grad, self.bits),)


def quantize(x, bits: int):
    """x quantised to `bits` (forward), gradient straight through."""
    return Quantize.apply(x, bits=check_bits(bits))


def quantize_grad(x, bits: int):
    """x unchanged; its gradient quantised to `bits`."""
    return QuantizeGrad.apply(x, bits=check_bits(bits))
