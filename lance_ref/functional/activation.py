"""Activations and dropout (specs/activation.md).

Subgradients at the kinks follow torch: relu passes nothing at 0, relu6 passes only on the
open interval (0, 6), leaky_relu uses the negative slope at 0.
"""

from __future__ import annotations

import numpy as np

from .. import random
from ..tensor import Function


class ReLU(Function):
    """y = max(x, 0); saves y, as torch does (specs/activation.md#relu)."""

    def forward(self, x):
        y = np.maximum(x, 0)
        self.save(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_arrays
        return (grad * (y > 0),)


class ReLU6(Function):
    """y = min(max(x, 0), 6) (specs/activation.md#relu6)."""

    def forward(self, x):
        self.save(x)
        return np.clip(x, 0, 6)

    def backward(self, grad):
        (x,) = self.saved_arrays
        return (grad * ((x > 0) & (x < 6)),)


class LeakyReLU(Function):
    """y = x if x > 0 else slope * x (specs/activation.md#leaky_relu)."""

    def forward(self, x, negative_slope):
        self.save(x)
        self.negative_slope = negative_slope
        return np.where(x > 0, x, x * x.dtype.type(negative_slope))

    def backward(self, grad):
        (x,) = self.saved_arrays
        return (np.where(x > 0, grad, grad * grad.dtype.type(self.negative_slope)),)


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), evaluated without overflow (specs/activation.md#sigmoid)."""

    def forward(self, x):
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        self.save(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_arrays
        return (grad * y * (1 - y),)


class Tanh(Function):
    """y = tanh(x) (specs/activation.md#tanh)."""

    def forward(self, x):
        y = np.tanh(x)
        self.save(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_arrays
        return (grad * (1 - y * y),)


class Dropout(Function):
    """y = x * m / (1 - p) with m ~ Bernoulli(1 - p); saves m as bool (specs/activation.md#dropout)."""

    def forward(self, x, p, generator):
        keep = generator.random(x.shape) >= p
        self.save(keep)
        self.scale = x.dtype.type(1 / (1 - p))
        return x * keep * self.scale

    def backward(self, grad):
        (keep,) = self.saved_arrays
        return (grad * keep * self.scale,)


def relu(x):
    return ReLU.apply(x)


def relu6(x):
    return ReLU6.apply(x)


def leaky_relu(x, negative_slope: float = 0.01):
    return LeakyReLU.apply(x, negative_slope=float(negative_slope))


def sigmoid(x):
    return Sigmoid.apply(x)


def tanh(x):
    return Tanh.apply(x)


def dropout(x, p: float = 0.5, training: bool = True, generator: np.random.Generator | None = None):
    """Zero each element with probability `p` in training; identity in eval.

    Masks come from `generator`, or from lance_ref's global generator (`lance_ref.manual_seed`).
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    return Dropout.apply(x, p=p, generator=generator or random.default_generator())
