"""2-D convolution as im2col plus one (grouped) GEMM (specs/conv.md).

Backward recomputes the im2col matrix from the saved input instead of keeping it, so the
memory kept is the input itself, as in torch.
"""

from __future__ import annotations

import numpy as np

from ..tensor import Function
from .windows import output_size, pair, padded, tap, windows


def im2col(x, kernel, padding, stride, dilation, out_hw, groups) -> np.ndarray:
    """cols[g, (n, h', w'), (i, j, c)] = x_pad[n, g*C/G + c, s*h' + d*i, s*w' + d*j] (specs/conv.md#im2col).

    The column order (i, j, c) keeps channels innermost, so on a channels-last buffer each
    copied run is kw*C/G elements long.
    """
    (ph, pw), (n, c) = padding, x.shape[:2]
    source = padded(x, ph, pw, ph, pw) if ph or pw else x
    view = windows(source, kernel, out_hw, stride, dilation)  # (n, c, h', w', kh, kw)
    view = view.reshape(n, groups, c // groups, *out_hw, *kernel).transpose(1, 0, 3, 4, 5, 6, 2)
    return view.reshape(groups, n * out_hw[0] * out_hw[1], -1)


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


class Conv2d(Function):
    """y[n,o] = b[o] + sum_{c in group(o), i, j} W[o,c,i,j] x_pad[n,c,s*h'+d*i,s*w'+d*j] (specs/conv.md#conv2d).

    With cols_g = im2col(x)_g and W_g = W[group g] as (O/G, kh*kw*C/G): Y_g = cols_g W_g^T,
    dcols_g = dY_g W_g, dW_g = dY_g^T cols_g, one GEMM each.
    """

    def forward(self, x, weight, bias=None, *, stride, padding, dilation, groups):
        n, c, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        out_hw = tuple(
            output_size(size, k, s, p, d)
            for size, k, s, p, d in zip((h, w), (kh, kw), stride, padding, dilation)
        )
        if min(out_hw) < 1:
            raise ValueError(
                f"conv2d: input {x.shape[2:]} is smaller than the dilated kernel {(kh, kw)} "
                f"with padding {padding} and dilation {dilation}"
            )
        self.geometry = dict(
            kernel=(kh, kw), padding=padding, stride=stride, dilation=dilation, out_hw=out_hw, groups=groups
        )
        self.input_shape = x.shape
        need_x, need_w = self.needs_input_grad[:2]
        self.save(weight if need_x else None, x if need_w else None)
        y = merge_groups(im2col(x, **self.geometry) @ self.grouped(weight).transpose(0, 2, 1))
        y = y.reshape(n, out_hw[0], out_hw[1], out_channels).transpose(0, 3, 1, 2)
        return y + bias.reshape(1, -1, 1, 1) if bias is not None else y

    def grouped(self, weight):
        """W as (G, O/G, kh*kw*C/G) in the (i, j, c) column order of im2col."""
        groups = self.geometry["groups"]
        return weight.transpose(0, 2, 3, 1).reshape(groups, weight.shape[0] // groups, -1)

    def backward(self, grad):
        weight, x = self.saved_arrays
        groups = self.geometry["groups"]
        rows = grad.transpose(0, 2, 3, 1).reshape(-1, groups, grad.shape[1] // groups).transpose(1, 0, 2)
        grad_x = grad_w = None
        if weight is not None:
            grad_x = col2im(rows @ self.grouped(weight), self.input_shape, **self.geometry)
        if x is not None:
            grad_w = rows.transpose(0, 2, 1) @ im2col(x, **self.geometry)  # (G, O/G, kh*kw*C/G)
            kh, kw = self.geometry["kernel"]
            grad_w = grad_w.reshape(grad.shape[1], kh, kw, -1).transpose(0, 3, 1, 2)
        return grad_x, grad_w, grad.sum(axis=(0, 2, 3))


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """torch.nn.functional.conv2d: input (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,)."""
    x_shape, w_shape = input.shape, weight.shape
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
    if bias is not None and bias.shape != w_shape[:1]:
        raise ValueError(f"conv2d: bias must have shape {w_shape[:1]}, got {bias.shape}")
    params = dict(
        stride=pair(stride, "stride", 1),
        padding=pair(padding, "padding", 0),
        dilation=pair(dilation, "dilation", 1),
        groups=int(groups),
    )
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return Conv2d.apply(*inputs, **params)
