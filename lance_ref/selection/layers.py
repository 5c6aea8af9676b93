"""A Conv2d whose backward forms only the weight-gradient rows of the channels allowed to update
(specs/selection.md#partial-weight-gradient): the rows of frozen channels are zero and never
computed, so a smaller budget really does less work."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.conv import Conv2d as Conv2dFunction
from ..functional.conv import conv2d_grads, conv2d_params, im2col, unfolding_chunks
from ..nn import Conv2d, Module


def partial_weight_grad(grad: np.ndarray, x: np.ndarray, rows: np.ndarray, weight_shape, geometry) -> np.ndarray:
    """dW with only `rows` (sorted output channels) formed: dW[o] = sum_{n,h',w'} dY[n,o,h',w'] X_g(o)[(n,h',w'), :]
    for o in `rows`, zero elsewhere; X_g the im2col rows of o's group, unfolded in chunks of
    samples that fit the workspace (specs/memory.md#workspace)."""
    out_channels, (kh, kw), groups = weight_shape[0], geometry.kernel, geometry.groups
    grad_w = np.zeros((out_channels, kh * kw * weight_shape[1]), dtype=grad.dtype)
    group_of = rows // (out_channels // groups)
    selected = [rows[group_of == g] for g in range(groups)]
    (oh, ow), c = geometry.out_hw, x.shape[1]
    for chunk in unfolding_chunks((x.shape, geometry.padding), oh * ow, kh * kw * c, len(rows), itemsize=x.itemsize):
        cols = im2col(x[chunk], geometry)  # (G, n*H'*W', (i, j, c))
        for g, channels in enumerate(selected):
            if len(channels):
                dy = grad[chunk][:, channels].transpose(0, 2, 3, 1).reshape(-1, len(channels))  # the selected channels only
                grad_w[channels] += dy.T @ cols[g]
        del cols  # before the next chunk's unfolding
    return grad_w.reshape(out_channels, kh, kw, -1).transpose(0, 3, 1, 2)


class PartialConv2dFunction(Conv2dFunction):
    """conv2d (forward as `functional.conv2d`) with the exact input and bias gradients and the
    weight gradient of `rows` only."""

    def forward(self, x, weight, bias=None, *, rows, **params):
        self.rows, self.weight_shape = rows, weight.shape
        return super().forward(x, weight, bias, **params)

    def backward(self, grad):
        weight, x = self.saved_arrays
        grad_x = conv2d_grads(grad, weight, None, self.input_shape, self.geometry)[0] if weight is not None else None
        grad_w = partial_weight_grad(grad, x, self.rows, self.weight_shape, self.geometry) if x is not None else None
        grad_b = np.zeros(grad.shape[1], dtype=grad.dtype)
        grad_b[self.rows] = grad[:, self.rows].sum(axis=(0, 2, 3))
        return grad_x, grad_w, grad_b


class SelectiveConv2d(Module):
    """A Conv2d (same Parameters, same names) whose output channels update only where `mask` is
    True. With none selected its parameters are cut from the graph (they get no gradient, and
    backward stops here unless the input needs one)."""

    def __init__(self, conv: Conv2d):
        super().__init__()
        conv.check_self_padded("SelectiveConv2d")
        self.weight = conv.weight
        self.register_parameter("bias", conv.bias)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.mask = np.ones(conv.weight.shape[0], dtype=bool)

    def forward(self, x):
        if not self.mask.any():  # nothing updates: the parameters leave the graph
            bias = None if self.bias is None else self.bias.detach()
            return F.conv2d(x, self.weight.detach(), bias, self.stride, self.padding, self.dilation, self.groups)
        bias_shape = None if self.bias is None else self.bias.shape
        params = conv2d_params(x.shape, self.weight.shape, bias_shape, self.stride, self.padding, self.dilation, self.groups)
        inputs = (x, self.weight) if self.bias is None else (x, self.weight, self.bias)
        return PartialConv2dFunction.apply(*inputs, rows=np.flatnonzero(self.mask), **params)

    def extra_repr(self) -> str:
        return f"updating {int(self.mask.sum())}/{len(self.mask)} channels"
