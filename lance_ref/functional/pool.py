"""Max, average, adaptive average and adaptive max pooling (specs/pool.md).

Pooling loops over the kh*kw kernel taps, each a strided view over all outputs at once;
adaptive max pooling over its output positions, whose windows differ in size.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels.reference import output_size
from ..tensor import Function, as_operands
from .shape import takes_unbatched
from .windows import pair, tap


def _geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Checked pooling geometry with the extra right/bottom padding that ceil_mode may need."""
    if len(x_shape) != 4:
        raise ValueError(f"pooling expects input of shape (N, C, H, W) or (C, H, W), got {x_shape}")
    kernel = pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"padding {padding} must be at most half of kernel_size {kernel}")
    out_hw = tuple(
        output_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(x_shape[2:], kernel, stride, padding, dilation)
    )
    if min(out_hw) < 1:
        raise ValueError(f"pooling: input {x_shape[2:]} is too small for kernel_size {kernel}")
    extra = tuple(
        max(0, (o - 1) * s + d * (k - 1) + 1 - (n + 2 * p))
        for o, s, d, k, n, p in zip(out_hw, stride, dilation, kernel, x_shape[2:], padding)
    )
    return kernel, stride, padding, dilation, out_hw, extra


class MaxPool2d(Function):
    """y[n,c,h',w'] = max_{i,j} x_pad[n,c,s*h'+d*i,s*w'+d*j]; the gradient goes to the first
    maximum of each window, as torch (specs/pool.md#max_pool2d). `kernels.max_pool2d` finds the
    maxima `best` and their taps `best_tap` (a selection, not differentiated), once."""

    def forward(self, x, best, best_tap, kernel, stride, padding, dilation):
        self.save(best_tap)
        self.input_hw, self.geometry = x.shape[2:], (kernel, stride, padding, dilation)
        return best

    def backward(self, grad):
        (best_tap,) = self.saved_arrays
        return (kernels.max_pool2d_backward(grad, best_tap, self.input_hw, *self.geometry),)


def input_indices(best_tap, width, kernel, stride, padding, dilation) -> np.ndarray:
    """torch's max-pooling indices: the winner's flat position r W + c in its (H, W) input map."""
    oh, ow = best_tap.shape[2:]
    i, j = np.divmod(best_tap.astype(np.int64), kernel[1])
    rows = stride[0] * np.arange(oh)[:, None] - padding[0] + dilation[0] * i
    cols = stride[1] * np.arange(ow)[None, :] - padding[1] + dilation[1] * j
    return rows * width + cols


class AvgPool2d(Function):
    """y = sum over the window / divisor (specs/pool.md#avg_pool2d)."""

    def forward(self, x, kernel, stride, padding, out_hw, extra, divisor):
        source = pad_window_input(x, padding, extra, 0.0)
        total = sum(tap(source, i, j, out_hw, stride, (1, 1)) for i, j in np.ndindex(*kernel))
        self.shape, self.geometry, self.divisor = x.shape, (kernel, stride, padding, out_hw, extra), divisor
        return total / divisor

    def backward(self, grad):
        kernel, stride, padding, out_hw, extra = self.geometry
        full = window_grad_buffer(self.shape, padding, extra, grad.dtype)
        share = grad / self.divisor
        for i, j in np.ndindex(*kernel):
            tap(full, i, j, out_hw, stride, (1, 1))[...] += share
        return (unpad(full, self.shape, padding),)


def pad_window_input(x, padding, extra, fill):
    """x padded by `padding` on each side plus `extra` (ceil_mode) at the bottom/right; x itself if no padding."""
    (ph, pw), (eh, ew) = padding, extra
    if not (ph or pw or eh or ew):
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=fill)


def window_grad_buffer(shape, padding, extra, dtype):
    """Zeros of the padded input's shape, to scatter window gradients into."""
    (n, c, h, w), (ph, pw), (eh, ew) = shape, padding, extra
    return np.zeros((n, c, h + 2 * ph + eh, w + 2 * pw + ew), dtype=dtype)


def unpad(full, shape, padding):
    (ph, pw), (h, w) = padding, shape[2:]
    return full[:, :, ph : ph + h, pw : pw + w]


def _avg_divisor(size, kernel, stride, padding, out, count_include_pad, dtype):
    """torch's divisor along one axis: the window clipped to the padded input, or to the input."""
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    if count_include_pad:
        return (end - start).astype(dtype)
    return (np.minimum(end, size) - np.maximum(start, 0)).astype(dtype)


class AdaptiveAvgPool2d(Function):
    """y[n,c] = A_h x[n,c] A_w^T with torch's adaptive windows (specs/pool.md#adaptive_avg_pool2d)."""

    def forward(self, x, a_h, a_w):
        self.a_h, self.a_w = a_h, a_w  # constants of the geometry, like a kernel size
        return np.einsum("ph,nchw,qw->ncpq", a_h, x, a_w, optimize=True)

    def backward(self, grad):
        a_h, a_w = self.a_h, self.a_w
        return (np.einsum("ph,ncpq,qw->nchw", a_h, grad, a_w, optimize=True),)


class AdaptiveMaxPool2d(Function):
    """y[n,c,p,q] = x[n,c] at the winner of adaptive window (p, q), found as max_pool2d finds it
    (specs/pool.md#adaptive_max_pool2d)."""

    def forward(self, x, indices):
        n, c, h, w = x.shape
        self.save(indices.astype(np.min_scalar_type(h * w - 1)))
        self.shape = x.shape
        return np.take_along_axis(x.reshape(n, c, h * w), indices.reshape(n, c, -1), axis=2).reshape(indices.shape)

    def backward(self, grad):
        (indices,) = self.saved_arrays
        n, c, h, w = self.shape
        flat = np.zeros((n * c, h * w), dtype=grad.dtype)
        np.add.at(flat, (np.arange(n * c)[:, None], indices.reshape(n * c, -1)), grad.reshape(n * c, -1))
        return (flat.reshape(self.shape),)


def adaptive_windows(size: int, out: int):
    """Output i's input range [floor(i*size/out), ceil((i+1)*size/out)), as (starts, ends)."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def adaptive_weights(size: int, out: int, dtype) -> np.ndarray:
    """A (out, size) averaging matrix over the adaptive windows."""
    start, end = adaptive_windows(size, out)
    cols = np.arange(size)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def adaptive_winners(x: np.ndarray, sizes) -> np.ndarray:
    """The flat index r W + c of each adaptive window's winner: the first maximum in row-major
    order, or the last NaN, as torch's scan finds it."""
    n, c, h, w = x.shape
    indices = np.empty((n, c) + tuple(sizes), dtype=np.int64)
    (h0, h1), (w0, w1) = adaptive_windows(h, sizes[0]), adaptive_windows(w, sizes[1])
    for p, q in np.ndindex(*sizes):
        window = x[:, :, h0[p] : h1[p], w0[q] : w1[q]].reshape(n, c, -1)
        nan = np.isnan(window)
        last_nan = nan.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
        best = np.where(nan.any(axis=2), last_nan, np.argmax(window, axis=2))
        rows, cols = np.divmod(best, w1[q] - w0[q])
        indices[:, :, p, q] = (h0[p] + rows) * w + w0[q] + cols
    return indices


@takes_unbatched
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """torch.nn.functional.max_pool2d (stride defaults to kernel_size); with `return_indices`
    also each winner's flat position in its input map, int64 (specs/pool.md#max_pool2d)."""
    (input,) = as_operands([input])
    geometry = _geometry(input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    kernel, stride, padding, dilation, out_hw, _ = geometry
    best, best_tap = kernels.max_pool2d(input.data, kernel, stride, padding, dilation, out_hw)
    y = MaxPool2d.apply(input, best=best, best_tap=best_tap, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    if not return_indices:
        return y
    return y, input_indices(best_tap, input.shape[3], kernel, stride, padding, dilation)


@takes_unbatched
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override=None):
    """torch.nn.functional.avg_pool2d (stride defaults to kernel_size); a `divisor_override`
    divides every window's sum (specs/pool.md#avg_pool2d)."""
    kernel, stride, padding, _, out_hw, extra = _geometry(input.shape, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is None:
        d_h, d_w = (
            _avg_divisor(n, k, s, p, o, count_include_pad, input.dtype)
            for n, k, s, p, o in zip(input.shape[2:], kernel, stride, padding, out_hw)
        )
        divisor = np.outer(d_h, d_w)
    elif isinstance(divisor_override, (int, np.integer)) and not isinstance(divisor_override, bool) and divisor_override != 0:
        divisor = np.asarray(divisor_override, dtype=input.dtype)
    else:
        raise ValueError(f"divisor_override must be a non-zero int or None, got {divisor_override!r}")
    return AvgPool2d.apply(
        input, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw, extra=extra, divisor=divisor
    )


def adaptive_sizes(input_shape, output_size, name: str) -> tuple:
    """The checked output (h, w) of an adaptive pooling; None in `output_size` keeps that side."""
    if len(input_shape) != 4:
        raise ValueError(f"{name} expects input of shape (N, C, H, W) or (C, H, W), got {input_shape}")
    sizes = (output_size, output_size) if np.isscalar(output_size) or output_size is None else tuple(output_size)
    return pair(tuple(n if o is None else o for n, o in zip(input_shape[2:], sizes)), "output_size", 1)


@takes_unbatched
def adaptive_avg_pool2d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool2d (specs/pool.md#adaptive_avg_pool2d)."""
    sizes = adaptive_sizes(input.shape, output_size, "adaptive_avg_pool2d")
    a_h, a_w = (adaptive_weights(n, o, input.dtype) for n, o in zip(input.shape[2:], sizes))
    return AdaptiveAvgPool2d.apply(input, a_h=a_h, a_w=a_w)


@takes_unbatched
def adaptive_max_pool2d(input, output_size, return_indices: bool = False):
    """torch.nn.functional.adaptive_max_pool2d (specs/pool.md#adaptive_max_pool2d)."""
    (input,) = as_operands([input])
    indices = adaptive_winners(input.data, adaptive_sizes(input.shape, output_size, "adaptive_max_pool2d"))
    y = AdaptiveMaxPool2d.apply(input, indices=indices)
    return (y, indices) if return_indices else y
