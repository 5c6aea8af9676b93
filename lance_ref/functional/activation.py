"""Activations and dropout (specs/activation.md).

Subgradients at the kinks follow torch: relu passes nothing at 0, relu6 passes only on the
open interval (0, 6), leaky_relu uses the negative slope at 0. What their VJPs need is one bit
per element, so they save a packed mask (#masks), not a float copy.
"""

from __future__ import annotations

import numpy as np

from .. import random
from ..tensor import Function
from .elementwise import Clamp
from .masks import Masked


class ReLU(Clamp):
    """y = max(x, 0), a clamp from below; saves the mask [x > 0] (specs/activation.md#relu)."""


class ReLU6(Clamp):
    """y = min(max(x, 0), 6); saves the mask [0 < x < 6] (specs/activation.md#relu6)."""


class LeakyReLU(Masked):
    """y = x if x > 0 else slope * x; saves the mask [x > 0] (specs/activation.md#leaky_relu)."""

    def forward(self, x, negative_slope):
        positive = x > 0
        self.save_mask(lambda: positive)
        self.negative_slope = negative_slope
        return np.where(positive, x, x * x.dtype.type(negative_slope))

    def backward(self, grad):
        return (np.where(self.mask(), grad, grad * grad.dtype.type(self.negative_slope)),)


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


class Dropout(Masked):
    """y = x * m / (1 - p) with m ~ Bernoulli(1 - p); saves m packed (specs/activation.md#dropout)."""

    def forward(self, x, p, generator):
        keep = generator.random(x.shape) >= p
        self.save_mask(lambda: keep)
        self.scale = x.dtype.type(1 / (1 - p))
        y = x * keep
        y *= self.scale
        return y

    def backward(self, grad):
        dx = self.masked(grad)
        dx *= self.scale
        return (dx,)


def relu(x):
    return ReLU.apply(x, min=0.0)


def relu6(x):
    return ReLU6.apply(x, min=0.0, max=6.0)


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
