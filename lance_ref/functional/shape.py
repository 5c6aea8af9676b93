"""Shape ops: views, indexing, concatenation and padding (specs/shape.md).

Forward results may be NumPy views of the input; nothing here saves an array for backward.
"""

from __future__ import annotations

import numpy as np

from ..tensor import Function, Tensor


class Reshape(Function):
    """y = x viewed with a new shape (specs/shape.md#reshape)."""

    def forward(self, x, shape):
        self.input_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"shape {tuple(shape)} is invalid for an input of shape {x.shape}") from None

    def backward(self, grad):
        return (grad.reshape(self.input_shape),)


class Permute(Function):
    """y = x with axes reordered by `dims` (specs/shape.md#permute)."""

    def forward(self, x, dims):
        if sorted(d % max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
            raise ValueError(f"dims {tuple(dims)} is not a permutation of {x.ndim} axes")
        self.dims = dims
        return x.transpose(dims)

    def backward(self, grad):
        return (grad.transpose(np.argsort([d % grad.ndim for d in self.dims])),)


class GetItem(Function):
    """y = x[index]; the VJP scatters-adds into zeros (specs/shape.md#getitem)."""

    def forward(self, x, index):
        self.shape, self.index = x.shape, index
        return x[index]

    def backward(self, grad):
        full = np.zeros(self.shape, dtype=grad.dtype)
        np.add.at(full, self.index, grad)
        return (full,)


class Cat(Function):
    """y = [x_1, ..., x_k] along `dim` (specs/shape.md#cat)."""

    def forward(self, *xs, dim):
        self.dim = dim
        self.splits = np.cumsum([x.shape[dim] for x in xs])[:-1]
        return np.concatenate(xs, axis=dim)

    def backward(self, grad):
        return tuple(np.split(grad, self.splits, axis=self.dim))


class Pad(Function):
    """Constant padding; `pad` lists (before, after) pairs from the last axis back, as torch (specs/shape.md#pad)."""

    def forward(self, x, pad, value):
        pairs = [(0, 0)] * (x.ndim - len(pad) // 2) + [
            (pad[i], pad[i + 1]) for i in reversed(range(0, len(pad), 2))
        ]
        if any(p < 0 for pair in pairs for p in pair):
            raise ValueError(f"pad must be non-negative, got {tuple(pad)}")
        self.window = tuple(slice(lo, n + lo) for (lo, _), n in zip(pairs, x.shape))
        return np.pad(x, pairs, constant_values=value)

    def backward(self, grad):
        return (grad[self.window],)


class BroadcastTo(Function):
    """y = x broadcast to `shape`; the engine sums the gradient back (specs/shape.md#broadcast_to)."""

    def forward(self, x, shape):
        return np.broadcast_to(x, shape)

    def backward(self, grad):
        return (grad,)


def reshape(x, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape.apply(x, shape=tuple(int(s) for s in shape))


def flatten(x, start_dim: int = 0, end_dim: int = -1):
    """Merge dims start_dim..end_dim into one."""
    shape = x.shape
    start, end = start_dim % len(shape), end_dim % len(shape)
    return reshape(x, shape[:start] + (int(np.prod(shape[start : end + 1])),) + shape[end + 1 :])


def permute(x, *dims):
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    return Permute.apply(x, dims=tuple(dims))


def transpose(x, dim0: int, dim1: int):
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


def unsqueeze(x, dim: int):
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def squeeze(x, dim: int | None = None):
    shape = x.shape
    if dim is None:
        return reshape(x, tuple(n for n in shape if n != 1))
    dim = dim % x.ndim
    return reshape(x, shape[:dim] + shape[dim + 1 :]) if shape[dim] == 1 else x


def getitem(x, index):
    """x[index] for basic and integer-array indexing (index arrays may repeat)."""
    if isinstance(index, Tensor):
        index = index.data.astype(np.int64)
    return GetItem.apply(x, index=index)


def cat(tensors, dim: int = 0):
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    return Cat.apply(*tensors, dim=dim)


def stack(tensors, dim: int = 0):
    return cat([unsqueeze(t, dim) for t in tensors], dim=dim)


def pad(x, pad, value: float = 0.0):
    """Constant padding with torch's argument order: (left, right, top, bottom, ...)."""
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad must hold (before, after) pairs for at most {x.ndim} dims, got {pad}")
    return Pad.apply(x, pad=tuple(int(p) for p in pad), value=value)


def broadcast_to(x, shape):
    return BroadcastTo.apply(x, shape=tuple(shape))
