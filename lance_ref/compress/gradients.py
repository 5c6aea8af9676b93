"""Weight gradients of conv2d and linear taken from a Tucker form of the input (specs/compressed.md).

The activation X is represented by `core` S and `factors` [U_0, ..., U_{N-1}], each U_n an
(I_n, k_n) array or None (the mode is not compressed: identity, k_n = I_n), and

    X_hat = S x_0 U_0 x_1 U_1 ... x_{N-1} U_{N-1}.

The gradients equal the exact ones taken at X_hat but never form X_hat: the output gradient is
contracted with the batch (and token) factors first and the channel or feature factor is applied
last, so the intermediates carry the ranks k_n in place of those sizes.
"""

from __future__ import annotations

from dataclasses import replace
from math import prod

import numpy as np

from ..functional.conv import ConvGeometry, conv2d_params, conv_geometry, weight_grad
from ..kernels import mode_product


def _times(t: np.ndarray, matrix, mode: int) -> np.ndarray:
    """t x_mode M (specs/kernels.md#mode_product); M = None is the identity (an uncompressed mode)."""
    return t if matrix is None else mode_product(t, matrix, mode)


def _transposed(u):
    return None if u is None else u.T


def conv2d_weight_grad(core, factors, grad_output, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """dW of conv2d at X_hat = S x_n U_n for dY = `grad_output`, without forming X_hat
    (specs/compressed.md#conv2d-weight-gradient).

    core (k_B, k_C, k_H, k_W); factors [U_B, U_C, U_H, U_W] (each (I_n, k_n) or None);
    grad_output (B, O, H', W'); weight_shape (O, C/groups, kh, kw). Returns dW of weight_shape.
    """
    u_b, u_c, u_h, u_w = factors = _checked_factors(core, factors, grad_output, ndims=(4,))
    geometry = _conv_geometry(core, factors, grad_output, weight_shape, stride, padding, dilation, groups)
    (o, cg, kh, kw), groups = weight_shape, geometry.groups
    z1 = _times(grad_output, _transposed(u_b), 0)  # (k_B, O, H', W')
    z3 = _times(_times(core, u_h, 2), u_w, 3)  # (k_B, k_C, H, W); the conv's padding pads it
    if u_c is None:  # q = c: Z4 is dW, each output channel seeing its own group only
        return weight_grad(z1, z3, geometry)
    # dW[o, c, i, j] = sum_q Z4[o, q, i, j] U_C[g(o) C/G + c, q], taken with q innermost
    z4 = weight_grad(z1, z3, replace(geometry, groups=1)).transpose(0, 2, 3, 1)  # (O, kh, kw, k_C)
    k_c = core.shape[1]
    dw = z4.reshape(groups, -1, k_c) @ u_c.reshape(groups, cg, k_c).transpose(0, 2, 1)
    return dw.reshape(o, kh, kw, cg).transpose(0, 3, 1, 2)


def _conv_geometry(core, factors, grad_output, weight_shape, stride, padding, dilation, groups) -> ConvGeometry:
    """The conv geometry of X_hat, after checking X_hat's batch size and channels and grad_output's shape."""
    x_shape = tucker_shape(core, factors)
    _check_mode(core, factors, 0, grad_output.shape[0], f"grad_output.shape[0] is {grad_output.shape[0]}")
    # The engine checks the weight and groups against the channel count they imply; the Tucker
    # form's own channel count is checked next, naming factors[1].
    implied = (x_shape[0], weight_shape[1] * groups, *x_shape[2:])
    params = conv2d_params(implied, weight_shape, None, stride, padding, dilation, groups)
    _check_mode(core, factors, 1, implied[1], f"the input has {implied[1]} channels (weight_shape[1] * groups)")
    geometry = conv_geometry(x_shape, tuple(weight_shape[2:]), **params)
    expected = (x_shape[0], weight_shape[0], *geometry.out_hw)
    if grad_output.shape != expected:
        raise ValueError(
            f"grad_output has shape {grad_output.shape} but conv2d of an input of shape {x_shape} with "
            f"weight {tuple(weight_shape)}, stride {params['stride']}, padding {params['padding']} and "
            f"dilation {params['dilation']} gives {expected}"
        )
    return geometry


def linear_weight_grad(core, factors, grad_output):
    """dW of y = x W^T at X_hat = S x_n U_n for dY = `grad_output`, without forming X_hat
    (specs/compressed.md#linear-weight-gradient).

    Inputs (B, F): core (k_B, k_F), factors [U_B, U_F], grad_output (B, O). Token inputs
    (B, L, F): core (k_B, k_L, k_F), factors [U_B, U_L, U_F], grad_output (B, L, O).
    Returns dW of shape (O, F).
    """
    factors = _checked_factors(core, factors, grad_output, ndims=(2, 3))
    for n in range(core.ndim - 1):
        _check_mode(core, factors, n, grad_output.shape[n], f"grad_output.shape[{n}] is {grad_output.shape[n]}")
    z = grad_output
    for n, u in enumerate(factors[:-1]):
        z = _times(z, _transposed(u), n)  # dY x_1 U_B^T (x_2 U_L^T): (k_B[, k_L], O)
    zs = z.reshape(-1, z.shape[-1]).T @ core.reshape(-1, core.shape[-1])  # (O, k_F)
    return _times(zs, factors[-1], 1)  # (O, F)


def tucker_shape(core, factors) -> tuple:
    """(I_0, ..., I_{N-1}): the shape of X_hat = S x_n U_n."""
    return tuple(k if u is None else u.shape[0] for u, k in zip(factors, core.shape))


def _checked_factors(core, factors, grad_output, ndims) -> list:
    """`factors` as a list, after checking dtypes, the core's ndim and that each factor fits the core."""
    named = [("core", core), ("grad_output", grad_output)]
    named += [(f"factors[{n}]", u) for n, u in enumerate(factors) if u is not None]
    for name, a in named:
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
            got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"{name} must be a float32 or float64 ndarray, got {got}")
        if a.dtype != core.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but core has {core.dtype}; all arrays must share one dtype")
    if core.ndim not in ndims:
        raise ValueError(f"core must have {' or '.join(map(str, ndims))} dims, got shape {core.shape}")
    if len(factors) != core.ndim:
        raise ValueError(f"factors must hold {core.ndim} entries (one per mode of core), got {len(factors)}")
    if grad_output.ndim != core.ndim:
        raise ValueError(f"grad_output must have {core.ndim} dims like core, got shape {grad_output.shape}")
    for n, (u, k) in enumerate(zip(factors, core.shape)):
        if u is not None and (u.ndim != 2 or u.shape[1] != k):
            raise ValueError(f"factors[{n}] has shape {u.shape} but core.shape[{n}] is {k}: expected (I_{n}, {k})")
        if u is not None and k > u.shape[0]:
            raise ValueError(f"factors[{n}] has shape {u.shape}: its rank {k} is larger than its dimension")
    return list(factors)


def _check_mode(core, factors, mode, size, source) -> None:
    """Mode `mode` of X_hat must have `size` (which `source` gives)."""
    u = factors[mode]
    if tucker_shape(core, factors)[mode] != size:
        if u is None:
            raise ValueError(f"core.shape[{mode}] is {core.shape[mode]} (factors[{mode}] is None) but {source}")
        raise ValueError(f"factors[{mode}] has shape {u.shape} but {source}")


def mode_products_flops(shape, sizes, order=None) -> int:
    """FLOPs of a chain of mode products: mode n of the current tensor becomes sizes[n] (None:
    no product) at 2 * (current size) * sizes[n], modes taken in `order` (default 0, 1, ...)
    (specs/compressed.md#flops)."""
    shape, total = list(shape), 0
    for n in range(len(shape)) if order is None else order:
        if sizes[n] is not None:
            total += 2 * prod(shape) * sizes[n]
            shape[n] = sizes[n]
    return total


def project_flops(input_shape, ranks) -> int:
    """FLOPs of tucker_project: the mode with the largest I_n / k_n first (specs/kernels.md#tucker_project)."""
    compressed = [n for n, k in enumerate(ranks) if k is not None]
    return mode_products_flops(input_shape, ranks, sorted(compressed, key=lambda n: ranks[n] / input_shape[n]))


def conv2d_flops(input_shape, ranks, weight_shape, stride=1, padding=0, dilation=1, groups=1) -> dict:
    """FLOPs (a multiply-add counts 2) for one conv2d layer: `project` (forming the core in the
    forward pass), `compressed` (conv2d_weight_grad) and `dense` (the exact dW) (specs/compressed.md#flops).

    `ranks` holds k_n for each mode of the input (B, C, H, W), None for an uncompressed mode.
    """
    core_shape = _core_shape(input_shape, ranks)
    params = conv2d_params(input_shape, weight_shape, None, stride, padding, dilation, groups)
    (b, _, h, w), (k_b, k_c, _, _), (o, cg, kh, kw) = input_shape, core_shape, weight_shape
    oh, ow = conv_geometry(input_shape, (kh, kw), **params).out_hw
    z1 = mode_products_flops((b, o, oh, ow), (ranks[0], None, None, None))
    z3 = mode_products_flops(core_shape, (None, None, _if_compressed(ranks[2], h), _if_compressed(ranks[3], w)))
    if ranks[1] is None:
        z4_dw = 2 * o * cg * kh * kw * k_b * oh * ow
    else:
        z4_dw = 2 * o * k_c * kh * kw * k_b * oh * ow + 2 * o * kh * kw * k_c * cg
    return dict(
        project=project_flops(input_shape, ranks),
        compressed=z1 + z3 + z4_dw,
        dense=2 * o * cg * kh * kw * b * oh * ow,
    )


def linear_flops(input_shape, ranks, weight_shape) -> dict:
    """As conv2d_flops, for a linear layer with input (B, F) or (B, L, F) and weight (O, F)
    (specs/compressed.md#flops)."""
    core_shape = _core_shape(input_shape, ranks)
    o, f = weight_shape
    if input_shape[-1] != f:
        raise ValueError(f"input_shape {tuple(input_shape)} does not end in weight_shape[1] = {f}")
    z = mode_products_flops((*input_shape[:-1], o), (*ranks[:-1], None))
    zs = 2 * o * prod(core_shape)
    expand = mode_products_flops((o, core_shape[-1]), (None, _if_compressed(ranks[-1], f)))
    return dict(
        project=project_flops(input_shape, ranks),
        compressed=z + zs + expand,
        dense=2 * o * f * prod(input_shape[:-1]),
    )


def _core_shape(input_shape, ranks) -> tuple:
    """(k_0, ..., k_{N-1}), k_n = I_n for an uncompressed mode, after checking `ranks`."""
    if len(ranks) != len(input_shape):
        raise ValueError(f"ranks must hold one entry per mode of input_shape {tuple(input_shape)}, got {ranks}")
    for n, (i, k) in enumerate(zip(input_shape, ranks)):
        if k is not None and not 1 <= k <= i:
            raise ValueError(f"ranks[{n}] must be None or in 1..{i} (input_shape[{n}]), got {k}")
    return tuple(i if k is None else k for i, k in zip(input_shape, ranks))


def _if_compressed(rank, size):
    """`size` for a compressed mode (its factor expands k_n to it), None for an uncompressed one."""
    return None if rank is None else size
