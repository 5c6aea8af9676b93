"""Reductions over axes (specs/reduce.md). `dim` may be None (all), an int or a tuple."""

from __future__ import annotations

import numpy as np

from ..tensor import Function
from .masks import Masked


def _axes(dim, ndim: int) -> tuple:
    """`dim` as a sorted tuple of non-negative axes, checked against `ndim`."""
    dims = range(ndim) if dim is None else (dim,) if np.isscalar(dim) else dim
    axes = []
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise ValueError(f"dim {d} is out of range for a tensor with {ndim} dimensions")
        axes.append(d % max(ndim, 1))
    return tuple(sorted(set(axes)))


def _expand(grad, shape, axes, keepdim):
    """Broadcast a reduced gradient back to the input shape."""
    if not keepdim:
        grad = np.expand_dims(grad, axes)
    return np.broadcast_to(grad, shape)


class Sum(Function):
    """y = sum_{dim} x (specs/reduce.md#sum)."""

    def forward(self, x, dim, keepdim):
        self.shape, self.axes, self.keepdim = x.shape, _axes(dim, x.ndim), keepdim
        return x.sum(axis=self.axes, keepdims=keepdim)

    def backward(self, grad):
        return (_expand(grad, self.shape, self.axes, self.keepdim),)


class Mean(Function):
    """y = sum_{dim} x / n (specs/reduce.md#mean)."""

    def forward(self, x, dim, keepdim):
        self.shape, self.axes, self.keepdim = x.shape, _axes(dim, x.ndim), keepdim
        self.count = int(np.prod([x.shape[a] for a in self.axes]))
        return x.mean(axis=self.axes, keepdims=keepdim)

    def backward(self, grad):
        return (_expand(grad / grad.dtype.type(self.count), self.shape, self.axes, self.keepdim),)


class Amax(Masked):
    """y = max_{dim} x; ties share the gradient equally, as torch.amax (specs/reduce.md#amax)."""

    def forward(self, x, dim, keepdim):
        self.axes, self.keepdim = _axes(dim, x.ndim), keepdim
        y = x.max(axis=self.axes, keepdims=True)
        self.save_mask(lambda: x == y)
        return y if keepdim else np.squeeze(y, self.axes)

    def backward(self, grad):
        hit = self.mask()
        share = _expand(grad, hit.shape, self.axes, self.keepdim)
        return (share * hit / hit.sum(axis=self.axes, keepdims=True, dtype=share.dtype),)


class Var(Function):
    """y = sum_{dim} (x - mean)^2 / (n - correction) (specs/reduce.md#var)."""

    def forward(self, x, dim, keepdim, correction):
        self.axes, self.keepdim = _axes(dim, x.ndim), keepdim
        n = int(np.prod([x.shape[a] for a in self.axes]))
        self.denominator = x.dtype.type(max(n - correction, 0))
        centred = x - x.mean(axis=self.axes, keepdims=True)
        self.save(centred)
        return (centred * centred).sum(axis=self.axes, keepdims=keepdim) / self.denominator

    def backward(self, grad):
        (centred,) = self.saved_arrays
        grad = _expand(grad, centred.shape, self.axes, self.keepdim)
        return (grad * 2 * centred / self.denominator,)


def sum(x, dim=None, keepdim: bool = False):
    return Sum.apply(x, dim=dim, keepdim=keepdim)


def mean(x, dim=None, keepdim: bool = False):
    return Mean.apply(x, dim=dim, keepdim=keepdim)


def amax(x, dim=None, keepdim: bool = False):
    return Amax.apply(x, dim=dim, keepdim=keepdim)


def var(x, dim=None, keepdim: bool = False, correction: int = 1):
    """Variance; correction=1 is the unbiased estimate (torch's default), 0 the biased one."""
    return Var.apply(x, dim=dim, keepdim=keepdim, correction=correction)
