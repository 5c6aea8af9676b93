"""Elementwise arithmetic and math with broadcasting (specs/elementwise.md).

Broadcast inputs get gradients of the broadcast shape; the engine sums them back to each
input's shape (specs/autograd.md#broadcasting).
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..tensor import Function
from .masks import Masked


class Add(Function):
    """y = a + b (specs/elementwise.md#add)."""

    def forward(self, a, b):
        return a + b

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    """y = a - b (specs/elementwise.md#sub)."""

    def forward(self, a, b):
        return a - b

    def backward(self, grad):
        return grad, -grad


class Mul(Function):
    """y = a * b (specs/elementwise.md#mul)."""

    def forward(self, a, b):
        need_a, need_b = self.needs_input_grad
        self.save(b if need_a else None, a if need_b else None)
        return a * b

    def backward(self, grad):
        b, a = self.saved_arrays
        return (grad * b if b is not None else None), (grad * a if a is not None else None)


class Div(Function):
    """y = a / b (specs/elementwise.md#div)."""

    def forward(self, a, b):
        need_b = self.needs_input_grad[1]
        self.save(b, a if need_b else None)
        return a / b

    def backward(self, grad):
        b, a = self.saved_arrays
        grad_a = grad / b
        return grad_a, (-grad_a * a / b if a is not None else None)


class Neg(Function):
    """y = -x (specs/elementwise.md#neg)."""

    def forward(self, x):
        return -x

    def backward(self, grad):
        return (-grad,)


class Pow(Function):
    """y = x ** p for a constant exponent p (specs/elementwise.md#pow)."""

    def forward(self, x, exponent):
        self.save(x)
        self.exponent = exponent
        return x**exponent

    def backward(self, grad):
        (x,) = self.saved_arrays
        p = self.exponent
        if p == 0:  # torch: zero gradient, even where x ** -1 is infinite
            return (np.zeros_like(grad),)
        return (grad * p * x ** (p - 1),)


class Exp(Function):
    """y = exp(x) (specs/elementwise.md#exp)."""

    def forward(self, x):
        y = np.exp(x)
        self.save(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_arrays
        return (grad * y,)


class Log(Function):
    """y = log(x) (specs/elementwise.md#log)."""

    def forward(self, x):
        self.save(x)
        return np.log(x)

    def backward(self, grad):
        (x,) = self.saved_arrays
        return (grad / x,)


class Sqrt(Function):
    """y = sqrt(x) (specs/elementwise.md#sqrt)."""

    def forward(self, x):
        y = np.sqrt(x)
        self.save(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_arrays
        return (grad / (2 * y),)


class Abs(Function):
    """y = |x|, with d|x|/dx = sign(x) (0 at 0, as torch) (specs/elementwise.md#abs)."""

    def forward(self, x):
        self.save(x)
        return np.abs(x)

    def backward(self, grad):
        (x,) = self.saved_arrays
        return (grad * np.sign(x),)


class Clamp(Masked):
    """y = min(max(x, lo), hi); the gradient passes where lo < x < hi, as torch 2.15; saves that
    mask packed (specs/elementwise.md#clamp)."""

    def forward(self, x, min=None, max=None):
        y, packed = kernels.clamp(x, min, max, keep_mask=any(self.needs_input_grad))
        self.save_packed(packed, x.shape)
        return y

    def backward(self, grad):
        return (self.masked(grad),)


def add(a, b):
    return Add.apply(a, b)


def sub(a, b):
    return Sub.apply(a, b)


def mul(a, b):
    return Mul.apply(a, b)


def div(a, b):
    return Div.apply(a, b)


def neg(x):
    return Neg.apply(x)


def pow(x, exponent: float):
    """x ** exponent for a constant number `exponent`."""
    if not np.isscalar(exponent):
        raise TypeError(f"exponent must be a number, got {type(exponent).__name__}")
    return Pow.apply(x, exponent=float(exponent))


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def abs(x):
    return Abs.apply(x)


def clamp(x, min: float | None = None, max: float | None = None):
    if min is None and max is None:
        raise ValueError("clamp needs at least one of min and max")
    min, max = (None if b is None else float(b) for b in (min, max))
    return Clamp.apply(x, min=min, max=max)
