"""Shape ops: views, indexing, concatenation and padding (specs/shape.md).

Forward results may be NumPy views of the input; nothing here saves an array for backward.
"""

from __future__ import annotations

import functools

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


PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad_sources(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each position j of a padded axis, the index of the input element it copies, or -1
    (the constant): i = j - before, reflected, clamped or wrapped into [0, size) by `mode`
    (specs/shape.md#pad). A negative `before` or `after` crops."""
    i = np.arange(size + before + after) - before
    if mode == "reflect":
        return np.abs(np.where(i >= size, 2 * (size - 1) - i, i))
    if mode == "replicate":
        return np.clip(i, 0, size - 1)
    if mode == "circular":  # wraps around what is left after cropping, as torch
        first, last = max(-before, 0), size - max(-after, 0)
        return first + (i - first) % (last - first)
    return np.where((i >= 0) & (i < size), i, -1)


class Pad(Function):
    """y[j] = x[source(j)] along each padded axis, or `value` where a constant pad has no source;
    `sources` holds, per axis from the first, the index map of `pad_sources` or None (specs/shape.md#pad)."""

    def forward(self, x, sources, value):
        self.shape, self.sources = x.shape, sources
        for axis, index in enumerate(sources):
            if index is not None:
                taken = np.take(x, np.maximum(index, 0), axis=axis)
                x = np.where(_along(index >= 0, axis, x.ndim), taken, x.dtype.type(value)) if (index < 0).any() else taken
        return x

    def backward(self, grad):
        for axis in reversed(range(len(self.sources))):
            index = self.sources[axis]
            if index is not None:
                kept = index >= 0
                dx = np.zeros(grad.shape[:axis] + (self.shape[axis],) + grad.shape[axis + 1 :], dtype=grad.dtype)
                np.add.at(np.moveaxis(dx, axis, 0), index[kept], np.moveaxis(grad, axis, 0)[kept])
                grad = dx
        return (grad,)


def _along(vector: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """`vector` shaped to broadcast along `axis` of an `ndim`-D array."""
    return vector.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))


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


def takes_unbatched(op):
    """`op`, written for (N, C, H, W) inputs, also taking an unbatched (C, H, W) one, as torch's
    convolution and pooling do: it runs on a batch of one, whose axis is dropped from every
    result (specs/shape.md#unbatched)."""

    @functools.wraps(op)
    def run(input, *args, **kwargs):
        if len(input.shape) != 3:
            return op(input, *args, **kwargs)
        out = op(unsqueeze(input, 0), *args, **kwargs)
        return tuple(map(_drop_batch, out)) if isinstance(out, tuple) else _drop_batch(out)

    return run


def _drop_batch(out):
    return squeeze(out, 0) if isinstance(out, Tensor) else out[0]


def pad(x, pad, mode: str = "constant", value: float = 0.0):
    """torch.nn.functional.pad: `pad` = (before, after) pairs from the last axis back; negative
    widths crop; modes constant, reflect, replicate, circular (specs/shape.md#pad)."""
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    pad = tuple(int(p) for p in pad)
    pairs = len(pad) // 2
    if len(pad) % 2 or pairs > x.ndim:
        raise ValueError(f"pad must hold (before, after) pairs for at most {x.ndim} dims, got {pad}")
    if mode != "constant" and not (1 <= pairs <= 3 and x.ndim in (pairs + 1, pairs + 2)):
        raise ValueError(
            f"{mode} padding of {pairs} dims needs an input with {pairs + 1} or {pairs + 2} dims "
            f"(a batch and/or channel axis first), got {x.ndim}"
        )
    sources = [None] * x.ndim
    for k in range(pairs):
        axis, (before, after) = x.ndim - 1 - k, pad[2 * k : 2 * k + 2]
        size = x.shape[axis]
        if size + before + after < 0:
            raise ValueError(f"pad {(before, after)} crops more than the {size} elements of dim {axis}")
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(f"reflect padding must be smaller than the dim it pads: pad {(before, after)} for dim {axis} of size {size}")
        if mode == "circular" and max(before, after) > size:
            raise ValueError(f"circular padding may wrap at most once: pad {(before, after)} for dim {axis} of size {size}")
        if (before, after) != (0, 0):
            sources[axis] = pad_sources(size, before, after, mode)
    return Pad.apply(x, sources=sources, value=value)


def broadcast_to(x, shape):
    return BroadcastTo.apply(x, shape=tuple(shape))
