"""2-D convolution (specs/conv.md).

Pointwise (1x1) convolutions are GEMMs on the NCHW layout itself (#pointwise). Grouped
convolutions (depthwise included) sum over their kernel taps directly, with no unfolding
(#direct). Ordinary ones are im2col plus one GEMM, taken in chunks of samples whose
unfolding and product fit the workspace budget (specs/memory.md#workspace). Backward recomputes
the unfoldings from the saved input instead of keeping them, so the memory kept is the input
itself, as in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..kernels.reference import channel_rows, output_size, times_weight, unfolding_chunks, weight_rows
from ..tensor import Function
from .shape import pad, takes_unbatched
from .windows import pair, tap


@dataclass(frozen=True)
class ConvGeometry:
    """The windows of a convolution (specs/conv.md#geometry), as `lance-ref-core`'s `ConvGeometry`:
    kernel, stride, padding and dilation as (h, w) pairs, the groups, and the output's (H', W')."""

    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    out_hw: tuple


def im2col(x, geometry: ConvGeometry) -> np.ndarray:
    """cols[g, (n, h', w'), (i, j, c)] = x_pad[n, g*C/G + c, s*h' + d*i, s*w' + d*j] (specs/conv.md#im2col),
    by the kernel of `lance_ref.kernels`."""
    return kernels.im2col(x, geometry.kernel, *direct_args(geometry))


def col2im(cols, shape, geometry: ConvGeometry) -> np.ndarray:
    """The adjoint of im2col: each column entry is added back to its input pixel (specs/conv.md#im2col)."""
    (n, c, h, w), (kh, kw), (ph, pw) = shape, geometry.kernel, geometry.padding
    groups, out_hw, stride, dilation = geometry.groups, geometry.out_hw, geometry.stride, geometry.dilation
    cols = cols.reshape(groups, n, *out_hw, kh, kw, c // groups).transpose(1, 2, 3, 4, 5, 0, 6)
    grad = np.zeros((n, h + 2 * ph, w + 2 * pw, groups, c // groups), dtype=cols.dtype)
    nchw = grad.reshape(n, h + 2 * ph, w + 2 * pw, c).transpose(0, 3, 1, 2)
    for i in range(kh):
        for j in range(kw):
            target = tap(nchw, i, j, out_hw, stride, dilation).transpose(0, 2, 3, 1)
            target.reshape(target.shape[:3] + (groups, -1))[...] += cols[:, :, :, i, j]
    return nchw[:, :, ph : ph + h, pw : pw + w]


def flipped_transpose(weight: np.ndarray) -> np.ndarray:
    """W~[c, o, i, j] = W[o, c, kh-1-i, kw-1-j], shape (C, O, kh, kw)."""
    return weight.transpose(1, 0, 2, 3)[..., ::-1, ::-1]


def conv_geometry(x_shape, kernel, stride, padding, dilation, groups) -> ConvGeometry:
    """The geometry of a convolution of an input of `x_shape`, checking that the output is not empty."""
    out_hw = tuple(output_size(*args) for args in zip(x_shape[2:], kernel, stride, padding, dilation))
    if min(out_hw) < 1:
        raise ValueError(
            f"conv2d: input {x_shape[2:]} is smaller than the dilated kernel {kernel} "
            f"with padding {padding} and dilation {dilation}"
        )
    return ConvGeometry(tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), groups, out_hw)


def transposed_geometry(geometry: ConvGeometry, grad_shape) -> ConvGeometry | None:
    """For stride 1 and p <= d(k-1): the geometry of dY -> dx as a convolution of dY padded
    by d(k-1) - p with the flipped kernel (specs/conv.md#stride-1-backward); None otherwise."""
    kernel, padding, dilation = geometry.kernel, geometry.padding, geometry.dilation
    full = tuple(d * (k - 1) - p for k, p, d in zip(kernel, padding, dilation))
    if geometry.stride != (1, 1) or min(full) < 0:
        return None
    return conv_geometry(grad_shape, kernel, (1, 1), full, dilation, 1)


def direct_args(geometry: ConvGeometry) -> tuple:
    """(stride, padding, dilation, groups): the kernels' arguments after the kernel size."""
    return geometry.stride, geometry.padding, geometry.dilation, geometry.groups


def is_pointwise(geometry: ConvGeometry) -> bool:
    """A 1x1 kernel at stride 1 without padding and one group: a GEMM on NCHW itself (specs/conv.md#pointwise)."""
    return geometry.kernel == (1, 1) and geometry.stride == (1, 1) and geometry.padding == (0, 0) and geometry.groups == 1


def planes(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H*W), each sample's channels as rows of pixels."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def conv2d_forward(x, weight, geometry) -> np.ndarray:
    """y = conv2d(x, W) without bias (specs/conv.md#conv2d): Y[n] = W X[n] for a pointwise conv
    (#pointwise); taps summed directly for groups > 1 (#direct); else Y = cols W^T with
    cols = im2col(x), over chunks of samples."""
    if is_pointwise(geometry):
        return np.matmul(weight.reshape(weight.shape[:2]), planes(x)).reshape(len(x), -1, *geometry.out_hw)
    if geometry.groups > 1:
        return kernels.direct_conv2d(x, weight, *direct_args(geometry))
    return kernels.conv2d(x, weight, *direct_args(geometry)[:3])


def conv2d_grads(grad, weight, x, input_shape, geometry) -> tuple:
    """(dx, dW) for dY = `grad`; dx is None when `weight` is None, dW when `x` is None.

    A pointwise conv: two GEMMs on NCHW (#pointwise). Groups = 1 at stride 1, when dx is
    needed or dY has no more channels than x: one im2col of dY per chunk of samples gives both
    (specs/conv.md#stride-1-backward), unless the kernels never form the unfolding (#implicit-gemm):
    then dx = conv2d(dY, W~) and dW are two GEMMs. Otherwise `input_grad` and `weight_grad`.
    """
    if is_pointwise(geometry):
        return pointwise_grads(grad, weight, x, input_shape)
    transposed = transposed_geometry(geometry, grad.shape) if geometry.groups == 1 else None
    narrower = weight is not None or grad.shape[1] <= input_shape[1]  # unfold dY only if it pays
    if transposed is not None and narrower and not kernels.implicit_unfolding():
        return stride1_grads(grad, weight, x, input_shape, transposed)
    grad_x = None if weight is None else input_grad(grad, weight, input_shape, geometry, transposed)
    return grad_x, None if x is None else weight_grad(grad, x, geometry)


def pointwise_grads(grad, weight, x, input_shape) -> tuple:
    """dx[n] = W^T dY[n] and dW = sum_n dY[n] X[n]^T for a pointwise conv (specs/conv.md#pointwise),
    dW as one GEMM over all samples when each has fewer than 128 pixels."""
    grad_x = None if weight is None else np.matmul(weight.reshape(weight.shape[:2]).T, planes(grad)).reshape(input_shape)
    if x is None:
        return grad_x, None
    if x.shape[2] * x.shape[3] < 128:  # short per-sample products: one GEMM over copies
        grad_w = np.tensordot(planes(grad), planes(x), axes=([0, 2], [0, 2]))
    else:
        grad_w = np.zeros((grad.shape[1], x.shape[1]), dtype=grad.dtype)
        for g, sample in zip(planes(grad), planes(x)):
            grad_w += g @ sample.T
    return grad_x, grad_w.reshape(*grad_w.shape, 1, 1)


def stride1_grads(grad, weight, x, input_shape, transposed) -> tuple:
    """(dx, dW) of a groups = 1, stride-1 conv from im2col(dY) with the `transposed` geometry:
    dx = conv2d(dY, W~) and dW~ = X^T im2col(dY), over chunks of samples (specs/conv.md#stride-1-backward)."""
    (_, c, h, w), (kh, kw), o = input_shape, transposed.kernel, grad.shape[1]
    grad_x = None if weight is None else np.empty(input_shape, dtype=grad.dtype)
    rows = None if weight is None else weight_rows(flipped_transpose(weight))
    flipped = None if x is None else np.zeros((c, kh * kw * o), dtype=grad.dtype)  # columns (i', j', o)
    for chunk in unfolding_chunks((grad.shape, transposed.padding), h * w, kh * kw * o, 2 * c, itemsize=grad.itemsize):
        cols = im2col(grad[chunk], transposed)  # (1, N*H*W, kh*kw*O), taps in flipped order
        if weight is not None:
            grad_x[chunk] = times_weight(cols, rows, (h, w))
        if x is not None:
            flipped += channel_rows(x[chunk], 1)[0].T @ cols[0]
        del cols  # before the next chunk's unfolding, so that only one is alive at a time
    if x is None:
        return grad_x, None
    return grad_x, flipped.reshape(c, kh, kw, o)[:, ::-1, ::-1].transpose(3, 0, 1, 2)


def input_grad(grad, weight, input_shape, geometry, transposed=None) -> np.ndarray:
    """dx = col2im(dY W), over chunks of samples (specs/conv.md#conv2d); taps summed directly
    for groups > 1 (#direct); with a `transposed` geometry (stride 1), the convolution of dY by
    W~ (#stride-1-backward); without unfoldings (#implicit-gemm), one GEMM per tap. Shape
    `input_shape`."""
    if geometry.groups > 1:
        return kernels.direct_conv2d_input_grad(grad, weight, input_shape[2:], *direct_args(geometry))
    if transposed is not None:
        return kernels.conv2d(grad, flipped_transpose(weight), *direct_args(transposed)[:3])
    if kernels.implicit_unfolding():
        return kernels.conv2d_input_grad(grad, weight, input_shape[2:], *direct_args(geometry)[:3])
    (oh, ow), (o, c, kh, kw) = geometry.out_hw, weight.shape
    grad_x, rows = np.empty(input_shape, dtype=grad.dtype), weight_rows(weight)
    for chunk in unfolding_chunks((input_shape, geometry.padding), oh * ow, o, kh * kw * c, itemsize=grad.itemsize):
        grad_x[chunk] = col2im((channel_rows(grad[chunk], 1)[0] @ rows)[None], grad_x[chunk].shape, geometry)
    return grad_x


def weight_grad(grad, x, geometry) -> np.ndarray:
    """dW = dY^T im2col(x), over chunks of samples (specs/conv.md#conv2d); taps summed directly
    for groups > 1 and for one input channel (#direct). Shape (O, C/G, kh, kw)."""
    if geometry.groups > 1 or x.shape[1] == 1:
        return kernels.direct_conv2d_weight_grad(grad, x, geometry.kernel, *direct_args(geometry))
    return kernels.conv2d_weight_grad(grad, x, geometry.kernel, *direct_args(geometry)[:3])


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


def same_padding(kernel, dilation) -> tuple:
    """((top, bottom), (left, right)) keeping the size at stride 1: d(k - 1) in all, its odd
    element at the bottom/right, as torch's padding='same' (specs/conv.md#padding)."""
    return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation))


def string_padding(padding: str, kernel, stride, dilation) -> tuple:
    """The padding pairs ((top, bottom), (left, right)) that 'valid' or 'same' mean (specs/conv.md#padding)."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding != "same":
        raise ValueError(f"padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    if pair(stride, "stride", 1) != (1, 1):
        raise ValueError("padding='same' is not supported for strided convolutions")
    return same_padding(kernel, pair(dilation, "dilation", 1))


@takes_unbatched
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """torch.nn.functional.conv2d: input (N, C, H, W) or (C, H, W), weight (O, C/groups, kh, kw),
    bias (O,); padding an int, a pair, 'valid' or 'same' (specs/conv.md#padding)."""
    if isinstance(padding, str):
        (top, bottom), (left, right) = string_padding(padding, weight.shape[2:], stride, dilation)
        if (bottom, right) != (top, left):  # the odd element of 'same' goes on the far side
            input = pad(input, (0, right - left, 0, bottom - top))
        padding = (top, left)
    bias_shape = None if bias is None else bias.shape
    params = conv2d_params(input.shape, weight.shape, bias_shape, stride, padding, dilation, groups)
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return Conv2d.apply(*inputs, **params)


def patch_tokens(x: np.ndarray, geometry) -> np.ndarray:
    """X[n, (h', w'), (c, i, j)] = x_pad[n, c, s h' + d i, s w' + d j], shape (B, L, C kh kw): the
    rows of conv2d as a product with W reshaped to (O, C kh kw) (specs/compressed.md#patch-compressed-conv2d)."""
    (kh, kw), channels = geometry.kernel, x.shape[1]
    cols = im2col(x, geometry)[0]  # (B L, (i, j, c))
    return cols.reshape(len(x), -1, kh, kw, channels).transpose(0, 1, 4, 2, 3).reshape(len(x), cols.shape[0] // len(x), -1)
