"""2-D convolution as im2col plus one (grouped) GEMM (specs/conv.md).

Backward recomputes the im2col matrix from the saved input instead of keeping it, so the
memory kept is the input itself, as in torch.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..tensor import Function
from .windows import output_size, pair, tap


def im2col(x, kernel, padding, stride, dilation, out_hw, groups) -> np.ndarray:
    """cols[g, (n, h', w'), (i, j, c)] = x_pad[n, g*C/G + c, s*h' + d*i, s*w' + d*j] (specs/conv.md#im2col),
    by the kernel of `lance_ref.kernels` for a `conv_geometry`."""
    return kernels.im2col(x, kernel, stride, padding, dilation, groups)


def col2im(cols, shape, kernel, padding, stride, dilation, out_hw, groups) -> np.ndarray:
    """The adjoint of im2col: each column entry is added back to its input pixel (specs/conv.md#im2col)."""
    (n, c, h, w), (kh, kw), (ph, pw) = shape, kernel, padding
    cols = cols.reshape(groups, n, *out_hw, kh, kw, c // groups).transpose(1, 2, 3, 4, 5, 0, 6)
    grad = np.zeros((n, h + 2 * ph, w + 2 * pw, groups, c // groups), dtype=cols.dtype)
    nchw = grad.reshape(n, h + 2 * ph, w + 2 * pw, c).transpose(0, 3, 1, 2)
    for i in range(kh):
        for j in range(kw):
            target = tap(nchw, i, j, out_hw, stride, dilation).transpose(0, 2, 3, 1)
            target.reshape(target.shape[:3] + (groups, -1))[...] += cols[:, :, :, i, j]
    return nchw[:, :, ph : ph + h, pw : pw + w]


def merge_groups(m: np.ndarray) -> np.ndarray:
    """(G, R, K) -> (R, G*K): the per-group GEMM results side by side."""
    return m.transpose(1, 0, 2).reshape(m.shape[1], -1)


def channel_rows(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, C, H, W) -> (G, N*H*W, C/G): one row of channels per pixel, split by group."""
    return a.transpose(0, 2, 3, 1).reshape(-1, groups, a.shape[1] // groups).transpose(1, 0, 2)


def grouped_rows(weight: np.ndarray, groups: int) -> np.ndarray:
    """W as (G, O/G, kh*kw*C/G), rows in the (i, j, c) column order of im2col."""
    return weight.transpose(0, 2, 3, 1).reshape(groups, weight.shape[0] // groups, -1)


def flipped_transpose(weight: np.ndarray, groups: int) -> np.ndarray:
    """W~[g C/G + c, o', i, j] = W[g O/G + o', c, kh-1-i, kw-1-j], shape (C, O/G, kh, kw)."""
    o, cg, kh, kw = weight.shape
    per_group = weight.reshape(groups, o // groups, cg, kh, kw).transpose(0, 2, 1, 3, 4)
    return per_group[..., ::-1, ::-1].reshape(groups * cg, o // groups, kh, kw)


def conv_geometry(x_shape, kernel, stride, padding, dilation, groups) -> dict:
    """The im2col geometry of a convolution, checking that the output is not empty."""
    out_hw = tuple(output_size(*args) for args in zip(x_shape[2:], kernel, stride, padding, dilation))
    if min(out_hw) < 1:
        raise ValueError(
            f"conv2d: input {x_shape[2:]} is smaller than the dilated kernel {kernel} "
            f"with padding {padding} and dilation {dilation}"
        )
    return dict(kernel=kernel, padding=padding, stride=stride, dilation=dilation, out_hw=out_hw, groups=groups)


def transposed_geometry(geometry: dict, grad_shape) -> dict | None:
    """For stride 1 and p <= d(k-1): the geometry of dY -> dx as a convolution of dY padded
    by d(k-1) - p with the flipped kernel (specs/conv.md#stride-1-backward); None otherwise."""
    kernel, padding, dilation = geometry["kernel"], geometry["padding"], geometry["dilation"]
    full = tuple(d * (k - 1) - p for k, p, d in zip(kernel, padding, dilation))
    if geometry["stride"] != (1, 1) or min(full) < 0:
        return None
    return conv_geometry(grad_shape, kernel, (1, 1), full, dilation, geometry["groups"])


def times_weight(cols: np.ndarray, weight: np.ndarray, batch: int, out_hw) -> np.ndarray:
    """Y_g = cols_g W_g^T, merged and laid out as a contiguous (N, O, H', W') array."""
    y = merge_groups(cols @ grouped_rows(weight, cols.shape[0]).transpose(0, 2, 1))
    return np.ascontiguousarray(y.reshape(batch, *out_hw, weight.shape[0]).transpose(0, 3, 1, 2))


def conv2d_forward(x, weight, geometry) -> np.ndarray:
    """y = conv2d(x, W) without bias: Y_g = cols_g W_g^T with cols = im2col(x) (specs/conv.md#conv2d)."""
    return times_weight(im2col(x, **geometry), weight, x.shape[0], geometry["out_hw"])


def conv2d_grads(grad, weight, x, input_shape, geometry) -> tuple:
    """(dx, dW) for dY = `grad`; dx is None when `weight` is None, dW when `x` is None.

    Stride 1 (the common case): one im2col of dY gives both (specs/conv.md#stride-1-backward);
    otherwise dx = col2im(dY_g W_g) and dW_g = dY_g^T im2col(x)_g (specs/conv.md#conv2d).
    """
    groups, (kh, kw) = geometry["groups"], geometry["kernel"]
    transposed = transposed_geometry(geometry, grad.shape)
    grad_x = grad_w = None
    if transposed is not None:
        cols = im2col(grad, **transposed)  # (G, N*H*W, kh*kw*O/G), taps in flipped order
        if weight is not None:
            grad_x = times_weight(cols, flipped_transpose(weight, groups), grad.shape[0], input_shape[2:])
        if x is not None:
            flipped = channel_rows(x, groups).transpose(0, 2, 1) @ cols  # (G, C/G, kh*kw*O/G)
            grad_w = flipped.reshape(groups, -1, kh, kw, grad.shape[1] // groups)[:, :, ::-1, ::-1]
            grad_w = grad_w.transpose(0, 4, 1, 2, 3).reshape(grad.shape[1], -1, kh, kw)
    else:
        rows = channel_rows(grad, groups)
        if weight is not None:
            grad_x = col2im(rows @ grouped_rows(weight, groups), input_shape, **geometry)
        if x is not None:
            grad_w = rows.transpose(0, 2, 1) @ im2col(x, **geometry)  # (G, O/G, kh*kw*C/G)
            grad_w = grad_w.reshape(grad.shape[1], kh, kw, -1).transpose(0, 3, 1, 2)
    return grad_x, grad_w


class Conv2d(Function):
    """y[n,o] = b[o] + sum_{c in group(o), i, j} W[o,c,i,j] x_pad[n,c,s*h'+d*i,s*w'+d*j] (specs/conv.md#conv2d)."""

    def forward(self, x, weight, bias=None, *, stride, padding, dilation, groups):
        self.geometry = conv_geometry(x.shape, weight.shape[2:], stride, padding, dilation, groups)
        self.input_shape = x.shape
        need_x, need_w = self.needs_input_grad[:2]
        self.save(weight if need_x else None, x if need_w else None)
        y = conv2d_forward(x, weight, self.geometry)
        return y + bias.reshape(1, -1, 1, 1) if bias is not None else y

    def backward(self, grad):
        weight, x = self.saved_arrays
        return (*conv2d_grads(grad, weight, x, self.input_shape, self.geometry), grad.sum(axis=(0, 2, 3)))


def conv2d_params(x_shape, w_shape, bias_shape, stride, padding, dilation, groups) -> dict:
    """Checked conv2d hyperparameters (stride, padding, dilation as pairs; groups) for these shapes."""
    if len(x_shape) != 4:
        raise ValueError(f"conv2d: input must have shape (N, C, H, W), got {x_shape}")
    if len(w_shape) != 4:
        raise ValueError(f"conv2d: weight must have shape (O, C/groups, kh, kw), got {w_shape}")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    if x_shape[1] % groups or w_shape[0] % groups or w_shape[1] * groups != x_shape[1]:
        raise ValueError(
            f"conv2d: with groups={groups}, input channels {x_shape[1]} and weight {w_shape} "
            f"do not match (expected weight (O, {x_shape[1] // groups}, kh, kw) with O divisible by {groups})"
        )
    if bias_shape is not None and bias_shape != w_shape[:1]:
        raise ValueError(f"conv2d: bias must have shape {w_shape[:1]}, got {bias_shape}")
    return dict(
        stride=pair(stride, "stride", 1),
        padding=pair(padding, "padding", 0),
        dilation=pair(dilation, "dilation", 1),
        groups=int(groups),
    )


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """torch.nn.functional.conv2d: input (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,)."""
    bias_shape = None if bias is None else bias.shape
    params = conv2d_params(input.shape, weight.shape, bias_shape, stride, padding, dilation, groups)
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return Conv2d.apply(*inputs, **params)
