"""NumPy reference kernels: the ground truth every Rust kernel is tested against.

Every kernel returns a new C-contiguous array that owns (or is the only view of) its memory, so
keeping a result alive keeps exactly its own elements alive (specs/memory.md#ledger).
"""

import math
import operator

import numpy as np

from .workspace import sample_chunks

FLOAT_DTYPES = ("float32", "float64")


def check_float(x, name: str) -> None:
    """TypeError unless `x` is a float32 or float64 numpy.ndarray (named `name` in the message)."""
    if not isinstance(x, np.ndarray) or x.dtype.name not in FLOAT_DTYPES:
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name} must be a float32 or float64 numpy.ndarray, got {kind}")


def check_finite(x: np.ndarray, name: str) -> None:
    """ValueError unless every element of `x` is finite: a decomposition (SVD, eigh) of NaN or
    Inf fails inside LAPACK or never returns."""
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or Inf")


def _check_mode(mode, ndim: int) -> int:
    mode = operator.index(mode)
    if not 0 <= mode < ndim:
        raise ValueError(f"mode must satisfy 0 <= mode < {ndim}, got {mode}")
    return mode


def _check_matrix(a, name: str, x: np.ndarray, x_name: str) -> None:
    """`a` is a 2-D ndarray of the dtype of the tensor `x` it multiplies."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but {x_name} has {x.dtype}; they must match")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")


def _check_factors(x: np.ndarray, factors, x_name: str, side: int) -> list:
    """The modes that have a factor, after checking `factors` against `x`.

    Each factor is None or an (I_n, k_n) matrix of x's dtype with 1 <= k_n <= I_n whose axis `side`
    (0: I_n, for a projection; 1: k_n, for a reconstruction) matches mode n of `x`.
    """
    if len(factors) != x.ndim:
        raise ValueError(f"factors must hold one entry per mode of {x_name} ({x.ndim}), got {len(factors)}")
    modes = []
    for n, u in enumerate(factors):
        if u is None:
            continue
        name = f"factors[{n}]"
        _check_matrix(u, name, x, x_name)
        size, rank = u.shape
        if not 1 <= rank <= size:
            raise ValueError(f"{name} has shape {u.shape}: its rank {rank} must be in 1..{size} (its mode size)")
        if u.shape[side] != x.shape[n]:
            raise ValueError(f"{name} has shape {u.shape} but mode {n} of {x_name} has size {x.shape[n]}")
        modes.append(n)
    return modes


def unfold(x: np.ndarray, mode: int) -> np.ndarray:
    """Mode-n unfolding X_(n) of `x` (specs/kernels.md#unfold).

    Returns a new C-contiguous array (never a view of `x`) of shape
    (x.shape[mode], product of the other dims): axis `mode` moved to the front, the other axes
    flattened row-major in their original order.
    """
    check_float(x, "x")
    mode = _check_mode(mode, x.ndim)
    moved = np.moveaxis(x, mode, 0)
    return moved.reshape(moved.shape[0], math.prod(moved.shape[1:])).copy()


def fold(m: np.ndarray, mode: int, shape) -> np.ndarray:
    """The inverse of `unfold`: the tensor of `shape` whose mode-`mode` unfolding is `m`
    (specs/kernels.md#fold)."""
    check_float(m, "m")
    shape = tuple(operator.index(s) for s in shape)
    mode = _check_mode(mode, len(shape))
    moved = (shape[mode],) + shape[:mode] + shape[mode + 1 :]
    expected = (moved[0], math.prod(moved[1:]))
    if m.shape != expected:
        raise ValueError(f"m must have shape {expected} to fold into {shape} along mode {mode}, got {m.shape}")
    return np.moveaxis(m.reshape(moved), 0, mode).copy()


def _mode_product(x: np.ndarray, matrix: np.ndarray, mode: int) -> np.ndarray:
    """x x_mode matrix without checks: one GEMM, or one batched GEMM over the leading modes."""
    rows, size, cols = math.prod(x.shape[:mode]), x.shape[mode], math.prod(x.shape[mode + 1 :])
    shape = x.shape[:mode] + (matrix.shape[0],) + x.shape[mode + 1 :]
    if cols == 1:  # the last mode (or trailing sizes 1): (rows, I) @ M^T
        return (x.reshape(rows, size) @ matrix.T).reshape(shape)
    return (matrix @ x.reshape(rows, size, cols)).reshape(shape)


def mode_product(x: np.ndarray, matrix: np.ndarray, mode: int) -> np.ndarray:
    """Mode-n product x x_n M for M of shape (J, I_n): axis n of the result has size J
    (specs/kernels.md#mode_product)."""
    check_float(x, "x")
    mode = _check_mode(mode, x.ndim)
    _check_matrix(matrix, "matrix", x, "x")
    if matrix.shape[1] != x.shape[mode]:
        raise ValueError(f"matrix has shape {matrix.shape} but mode {mode} of x has size {x.shape[mode]}")
    return _mode_product(x, matrix, mode)


def tucker_project(x: np.ndarray, factors) -> np.ndarray:
    """Tucker core S = x x_n U_n^T over every mode n whose factor U_n (I_n, k_n) is not None
    (specs/kernels.md#tucker_project).

    The mode that shrinks the tensor most (largest I_n / k_n) is contracted first.
    """
    return _tucker_chain(x, factors, "x", project=True)


def tucker_reconstruct(core: np.ndarray, factors) -> np.ndarray:
    """X_hat = S x_n U_n over every mode n whose factor U_n (I_n, k_n) is not None
    (specs/kernels.md#tucker_reconstruct).

    The mode that grows the tensor least (smallest I_n / k_n) is expanded first.
    """
    return _tucker_chain(core, factors, "core", project=False)


def _tucker_chain(t: np.ndarray, factors, name: str, project: bool) -> np.ndarray:
    """t x_n U_n^T (`project`) or t x_n U_n over the modes with a factor, smallest k_n / I_n
    (projection) or I_n / k_n (reconstruction) first."""
    check_float(t, name)
    modes = _check_factors(t, factors, name, side=0 if project else 1)
    if not modes:
        return t.copy()

    def ratio(n):
        size, rank = factors[n].shape
        return rank / size if project else size / rank

    for n in sorted(modes, key=ratio):
        t = _mode_product(t, factors[n].T if project else factors[n], n)
    return t


def gram(x: np.ndarray, mode: int) -> np.ndarray:
    """Gram matrix X_(n) X_(n)^T of the mode-n unfolding, shape (I_n, I_n)
    (specs/kernels.md#gram)."""
    check_float(x, "x")
    mode = _check_mode(mode, x.ndim)
    moved = np.moveaxis(x, mode, 0)
    rows = moved.reshape(moved.shape[0], math.prod(moved.shape[1:]))  # a view when the layout allows
    g = rows @ rows.T
    # BLAS computes A A^T with syrk (one triangle, mirrored); average with the transpose so the
    # result is exactly symmetric whichever routine ran.
    return (g + g.T) * 0.5


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode=False) -> int:
    """floor((size + 2p - d(k-1) - 1 [+ s - 1 in ceil_mode]) / s) + 1, torch's rule; ceil_mode
    then drops a last window that starts in the right padding; never below 0
    (specs/conv.md#geometry). Shared by the convolutions and poolings of every floor."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1  # floor division, as torch's div_rtn
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return max(out, 0)


def tap_span(size: int, out: int, stride: int, padding: int, dilation: int, index: int):
    """Along one axis, for kernel tap `index`: (outputs, inputs), the slice of output positions
    o whose tap reads inside the input, 0 <= s*o + d*index - p < size, and the slice of input
    positions they read (specs/conv.md#direct); None when no output does."""
    offset = dilation * index - padding
    first = max(0, -(offset // stride))  # ceil(-offset / stride)
    last = min(out - 1, (size - 1 - offset) // stride)
    if last < first:
        return None
    start = stride * first + offset
    return slice(first, last + 1), slice(start, start + stride * (last - first) + 1, stride)


def kernel_taps(input_hw, out_hw, kernel, stride, padding, dilation) -> list:
    """(i, j, output window, input window) of every kernel tap (i, j) that reads inside the
    input: the windows are (rows, cols) slice pairs (specs/conv.md#direct)."""
    taps = []
    for i, j in np.ndindex(*kernel):
        rows = tap_span(input_hw[0], out_hw[0], stride[0], padding[0], dilation[0], i)
        cols = tap_span(input_hw[1], out_hw[1], stride[1], padding[1], dilation[1], j)
        if rows and cols:
            taps.append((i, j, (rows[0], cols[0]), (rows[1], cols[1])))
    return taps


TILE_BYTES = 1 << 18  # the direct kernels step through samples in tiles of about this many output bytes


def _tiles(count: int, bytes_per_sample: int) -> list:
    step = max(1, TILE_BYTES // max(1, bytes_per_sample))
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]


def _direct_geometry(x_shape, w_shape, kernel, stride, padding, dilation, groups, x_name: str) -> tuple:
    """The output (H', W') of a grouped convolution of an input of `x_shape` by a weight of
    `w_shape`, after checking that they fit `groups`."""
    n, c, h, w = x_shape
    if groups < 1 or c % groups or w_shape[0] % groups or w_shape[1] * groups != c or tuple(w_shape[2:]) != tuple(kernel):
        raise ValueError(f"{x_name} of shape {tuple(x_shape)} and weight of shape {tuple(w_shape)} do not fit groups={groups}")
    out_hw = tuple(output_size(*args) for args in zip((h, w), kernel, stride, padding, dilation))
    if min(out_hw) < 1:
        raise ValueError(f"the conv output of an input of shape {tuple(x_shape)} would be empty ({out_hw})")
    return out_hw


def _check_direct_operands(named) -> None:
    for name, a in named:
        check_float(a, name)
        if a.ndim != 4:
            raise ValueError(f"{name} must be a 4-D array, got shape {a.shape}")
        if a.dtype != named[0][1].dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but {named[0][0]} has {named[0][1].dtype}; they must match")


def direct_conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """y[n, g, m] = sum_{i, j} sum_c W[g, m, c, i, j] x[n, g, c, s h' + d i - p, s w' + d j - p]: a
    grouped convolution summed over its kernel taps, each a strided window of x, without
    im2col or padding copies (specs/conv.md#direct). Shape (N, O, H', W')."""
    _check_direct_operands([("x", x), ("weight", weight)])
    out_hw = _direct_geometry(x.shape, weight.shape, weight.shape[2:], stride, padding, dilation, groups, "x")
    (n, _, h, w), (o, cg, kh, kw) = x.shape, weight.shape
    x5, w5 = x.reshape(n, groups, cg, h, w), weight.reshape(groups, o // groups, cg, kh, kw)
    y = np.zeros((n, groups, o // groups, *out_hw), dtype=x.dtype)
    taps = kernel_taps((h, w), out_hw, (kh, kw), stride, padding, dilation)
    for tile in _tiles(n, y[0].nbytes):
        for i, j, out, inp in taps:
            y[tile][..., out[0], out[1]] += np.einsum("gmc,ngchw->ngmhw", w5[..., i, j], x5[tile][..., inp[0], inp[1]])
    return y.reshape(n, o, *out_hw)


def direct_conv2d_input_grad(grad: np.ndarray, weight: np.ndarray, input_hw, stride, padding, dilation, groups: int) -> np.ndarray:
    """dx[n, g, c, s h' + d i - p, s w' + d j - p] += sum_m W[g, m, c, i, j] dY[n, g, m, h', w'] over
    the taps: the VJP of `direct_conv2d` for x (specs/conv.md#direct). Shape (N, C, H, W)."""
    _check_direct_operands([("grad", grad), ("weight", weight)])
    (n, o), (_, cg, kh, kw) = grad.shape[:2], weight.shape
    x_shape = (n, cg * groups, *input_hw)
    out_hw = _direct_geometry(x_shape, weight.shape, (kh, kw), stride, padding, dilation, groups, "the input")
    if grad.shape[1:] != (weight.shape[0], *out_hw):
        raise ValueError(f"grad must have shape (N, {weight.shape[0]}, {out_hw[0]}, {out_hw[1]}), got {grad.shape}")
    g5, w5 = grad.reshape(n, groups, o // groups, *out_hw), weight.reshape(groups, o // groups, cg, kh, kw)
    dx = np.zeros((n, groups, cg, *input_hw), dtype=grad.dtype)
    taps = kernel_taps(input_hw, out_hw, (kh, kw), stride, padding, dilation)
    for tile in _tiles(n, dx[0].nbytes):
        for i, j, out, inp in taps:
            dx[tile][..., inp[0], inp[1]] += np.einsum("gmc,ngmhw->ngchw", w5[..., i, j], g5[tile][..., out[0], out[1]])
    return dx.reshape(x_shape)


def direct_conv2d_weight_grad(grad: np.ndarray, x: np.ndarray, kernel, stride, padding, dilation, groups: int) -> np.ndarray:
    """dW[g, m, c, i, j] = sum_{n, h', w'} dY[n, g, m, h', w'] x[n, g, c, s h' + d i - p, s w' + d j - p]:
    the VJP of `direct_conv2d` for W (specs/conv.md#direct). Shape (O, C/G, kh, kw)."""
    _check_direct_operands([("grad", grad), ("x", x)])
    (n, c, h, w), o, (kh, kw) = x.shape, grad.shape[1], kernel
    if groups < 1 or c % groups:
        raise ValueError(f"groups must be a positive divisor of the {c} input channels, got {groups}")
    w_shape = (o, c // groups, kh, kw)
    out_hw = _direct_geometry(x.shape, w_shape, kernel, stride, padding, dilation, groups, "x")
    if grad.shape != (n, o, *out_hw):
        raise ValueError(f"grad must have shape ({n}, O, {out_hw[0]}, {out_hw[1]}), got {grad.shape}")
    cg = c // groups
    g5, x5 = grad.reshape(n, groups, o // groups, *out_hw), x.reshape(n, groups, cg, h, w)
    dw = np.zeros((groups, o // groups, cg, kh, kw), dtype=grad.dtype)
    taps = kernel_taps((h, w), out_hw, kernel, stride, padding, dilation)
    for tile in _tiles(n, g5[0].nbytes):
        for i, j, out, inp in taps:
            dw[..., i, j] += np.einsum("ngmhw,ngchw->gmc", g5[tile][..., out[0], out[1]], x5[tile][..., inp[0], inp[1]])
    return dw.reshape(w_shape)


def channel_rows(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, C, H, W) -> (G, N*H*W, C/G): one row of channels per pixel, split by group."""
    return a.transpose(0, 2, 3, 1).reshape(-1, groups, a.shape[1] // groups).transpose(1, 0, 2)


def weight_rows(weight: np.ndarray) -> np.ndarray:
    """W as (O, kh*kw*C), rows in the (i, j, c) column order of im2col."""
    return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)


def unfolding_chunks(padded: tuple, pixels: int, *widths: int, itemsize: int) -> list:
    """Sample slices whose unfolding-sized temporaries fit the workspace (specs/memory.md#workspace):
    per sample, `pixels` rows of each of `widths` columns, and the zero-padded copy that im2col
    (or col2im) makes of the (N, C, H, W) array of shape `padded[0]` padded by `padded[1]`."""
    (n, c, h, w), (ph, pw) = padded
    return sample_chunks(n, (pixels * sum(widths) + c * (h + 2 * ph) * (w + 2 * pw)) * itemsize)


def times_weight(cols: np.ndarray, rows: np.ndarray, out_hw) -> np.ndarray:
    """Y = cols W^T for `cols` (1, N*H'*W', K) and `rows` W (O, K), as an (N, O, H', W') view."""
    y = cols[0] @ rows.T
    return y.reshape(-1, *out_hw, rows.shape[0]).transpose(0, 3, 1, 2)


def conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, dilation) -> np.ndarray:
    """y[n, o] = sum_{c, i, j} W[o, c, i, j] x_pad[n, c, s h' + d i, s w' + d j] for groups = 1:
    Y = im2col(x) W^T over chunks of samples whose unfolding fits the workspace
    (specs/conv.md#conv2d). Shape (N, O, H', W')."""
    _check_direct_operands([("x", x), ("weight", weight)])
    (o, c, kh, kw), kernel = weight.shape, weight.shape[2:]
    out_hw = _direct_geometry(x.shape, weight.shape, kernel, stride, padding, dilation, 1, "x")
    y = np.empty((len(x), o, *out_hw), dtype=x.dtype)
    rows = weight_rows(weight)
    for chunk in unfolding_chunks((x.shape, padding), out_hw[0] * out_hw[1], kh * kw * c, o, itemsize=x.itemsize):
        y[chunk] = times_weight(im2col(x[chunk], kernel, stride, padding, dilation), rows, out_hw)
    return y


def conv2d_input_grad(grad: np.ndarray, weight: np.ndarray, input_hw, stride, padding, dilation) -> np.ndarray:
    """The VJP of `conv2d` for x: `direct_conv2d_input_grad` with one group, a sum over the taps
    (specs/conv.md#direct). Shape (N, C, H, W)."""
    return direct_conv2d_input_grad(grad, weight, input_hw, stride, padding, dilation, 1)


def conv2d_weight_grad(grad: np.ndarray, x: np.ndarray, kernel, stride, padding, dilation) -> np.ndarray:
    """dW = dY^T im2col(x) over chunks of samples (specs/conv.md#conv2d): the VJP of `conv2d` for
    W. Shape (O, C, kh, kw)."""
    _check_direct_operands([("grad", grad), ("x", x)])
    (n, c), o, (kh, kw) = x.shape[:2], grad.shape[1], kernel
    out_hw = _direct_geometry(x.shape, (o, c, kh, kw), kernel, stride, padding, dilation, 1, "x")
    if grad.shape != (n, o, *out_hw):
        raise ValueError(f"grad must have shape ({n}, {o}, {out_hw[0]}, {out_hw[1]}), got {grad.shape}")
    grad_w = np.zeros((o, kh * kw * c), dtype=grad.dtype)  # columns (i, j, c)
    for chunk in unfolding_chunks((x.shape, padding), out_hw[0] * out_hw[1], o, kh * kw * c, itemsize=grad.itemsize):
        grad_w += channel_rows(grad[chunk], 1)[0].T @ im2col(x[chunk], kernel, stride, padding, dilation)[0]
    return grad_w.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)


def tap_type(kernel) -> np.dtype:
    """The smallest unsigned type that holds every tap index t = i kw + j of `kernel`."""
    return np.min_scalar_type(kernel[0] * kernel[1] - 1)


def max_pool2d(x: np.ndarray, kernel, stride, padding, dilation, out_hw) -> tuple:
    """(best, taps): best[n, c, h', w'] = max_{i, j} x[n, c, s h' + d i - p, s w' + d j - p] over the
    taps inside x, and taps = i kw + j of the winner. Taps are scanned in row-major order, a tap
    winning if greater or NaN, as torch; taps outside x never win (specs/pool.md#max_pool2d)."""
    check_float(x, "x")
    best = np.full(x.shape[:2] + tuple(out_hw), -np.inf, dtype=x.dtype)
    taps = np.zeros(best.shape, dtype=tap_type(kernel))
    for i, j, out, inp in kernel_taps(x.shape[2:], out_hw, kernel, stride, padding, dilation):
        values, current = x[..., inp[0], inp[1]], best[..., out[0], out[1]]
        better = values > current
        better |= np.isnan(values)  # NaN wins, as in torch
        taps[..., out[0], out[1]][better] = i * kernel[1] + j
        np.maximum(current, values, out=current)
    return best, taps


def max_pool2d_backward(grad: np.ndarray, taps: np.ndarray, input_hw, kernel, stride, padding, dilation) -> np.ndarray:
    """dx[n, c, s h' + d i - p, s w' + d j - p] += dY[n, c, h', w'] for each window's winning tap
    (i, j), summed tap by tap: the VJP of `max_pool2d` (specs/pool.md#max_pool2d)."""
    check_float(grad, "grad")
    dx = np.zeros(grad.shape[:2] + tuple(input_hw), dtype=grad.dtype)
    for i, j, out, inp in kernel_taps(input_hw, grad.shape[2:], kernel, stride, padding, dilation):
        won = taps[..., out[0], out[1]] == i * kernel[1] + j
        dx[..., inp[0], inp[1]] += np.where(won, grad[..., out[0], out[1]], 0)
    return dx


def im2col(x: np.ndarray, kernel, stride, padding, dilation, groups: int = 1) -> np.ndarray:
    """cols[g, (n, h', w'), (i, j, c)] = x_pad[n, g*C/G + c, s*h' + d*i, s*w' + d*j], zero padding
    (specs/conv.md#im2col); `kernel`, `stride`, `padding`, `dilation` are (height, width) pairs.

    Shape (G, N*H'*W', kh*kw*C/G). The column order (i, j, c) keeps channels innermost, so on a
    channels-last buffer each copied run is kw*C/G elements long.
    """
    check_float(x, "x")
    if x.ndim != 4:
        raise ValueError(f"x must be a 4-D array (N, C, H, W), got shape {x.shape}")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"groups must divide the {c} input channels, got {groups}")
    out_hw = output_size(h, kh, sh, ph, dh), output_size(w, kw, sw, pw, dw)
    if min(out_hw) < 1:
        raise ValueError(f"the conv output of an input of shape {x.shape} would be empty ({out_hw})")
    source = x
    if ph or pw:  # a zero-padded copy, channels-last so that the windows' channel runs are contiguous
        source = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype).transpose(0, 3, 1, 2)
        source[:, :, ph : ph + h, pw : pw + w] = x
    s_n, s_c, s_h, s_w = source.strides
    windows = np.lib.stride_tricks.as_strided(
        source,
        shape=(n, groups, c // groups, *out_hw, kh, kw),
        strides=(s_n, s_c * (c // groups), s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw),
        writeable=False,
    )
    return windows.transpose(1, 0, 3, 4, 5, 6, 2).reshape(groups, n * out_hw[0] * out_hw[1], kh * kw * (c // groups))


def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast over (N, C, *)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _channel_axes(ndim: int) -> tuple:
    """Every axis but the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def batch_norm_stats(x: np.ndarray) -> np.ndarray:
    """[mean; biased variance] of each channel of x (N, C, *), shape (2, C): the mean, then the
    mean square of x - mean (specs/norm.md#batch_norm)."""
    axes = _channel_axes(x.ndim)
    mean = x.mean(axis=axes)
    centred = x - _channel(mean, x.ndim)
    return np.stack([mean, np.square(centred, out=centred).mean(axis=axes)])


def batch_norm_forward(x, mean, inv_std, weight, bias, keep_x_hat: bool) -> tuple:
    """(x_hat if `keep_x_hat` else None, y): x_hat = (x - mean) inv_std and y = weight x_hat +
    bias per channel, a missing weight 1 and bias 0 (specs/norm.md#batch_norm)."""
    x_hat = x - _channel(mean, x.ndim)
    x_hat *= _channel(inv_std, x.ndim)
    y = x_hat * _channel(weight, x.ndim) if weight is not None and keep_x_hat else x_hat
    if weight is not None and not keep_x_hat:
        y *= _channel(weight, x.ndim)  # x_hat is not kept: scale it in place
    if bias is not None:  # only with a weight (batch_norm checks), so y is not x_hat here
        y += _channel(bias, x.ndim)
    return (x_hat if keep_x_hat else None), y


def batch_norm_backward(grad, x_hat, scale, batch_stats: bool) -> tuple:
    """(dx, [dgamma; dbeta]) of batch normalisation, shape (2, C) for the sums: dgamma = sum g
    x_hat (0 without x_hat), dbeta = sum g, dx = scale g, or with batch statistics
    scale (g - dbeta / m - x_hat dgamma / m), scale = gamma inv_std (specs/norm.md#batch_norm)."""
    axes = _channel_axes(grad.ndim)
    grad_bias = grad.sum(axis=axes)
    grad_weight = np.zeros_like(grad_bias) if x_hat is None else (grad * x_hat).sum(axis=axes)
    if batch_stats:
        count = grad.size // grad.shape[1]
        grad_x = _channel(scale, grad.ndim) * (
            grad - _channel(grad_bias / count, grad.ndim) - x_hat * _channel(grad_weight / count, grad.ndim)
        )
    else:
        grad_x = grad * _channel(scale, grad.ndim)
    return grad_x, np.stack([grad_weight, grad_bias])


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """A bool array as ceil(n / 8) bytes, one bit per element in C order, the first in the most
    significant bit (specs/activation.md#masks)."""
    return np.packbits(mask, axis=None)


def unpack_mask(packed: np.ndarray, shape) -> np.ndarray:
    """The bool array of `shape` that `pack_mask` packed."""
    return np.unpackbits(packed, count=math.prod(shape)).reshape(shape).view(bool)


def clamp(x, low, high, keep_mask: bool) -> tuple:
    """(y, packed mask if `keep_mask` else None): y = low where x < low, then high where that
    exceeds high, in x's dtype (a bound may be None), and the mask [low < x < high], a missing
    bound imposing nothing (specs/activation.md#masks)."""
    low, high = (None if b is None else x.dtype.type(b) for b in (low, high))
    # np.clip with two bounds compares as above; with one it is np.maximum, which makes -0.0 +0.0
    y = np.clip(x, -np.inf if low is None else low, np.inf if high is None else high, dtype=x.dtype)
    if not keep_mask:
        return y, None
    inside = np.ones(x.shape, dtype=bool) if low is None else x > low
    if high is not None:
        inside &= x < high
    return y, pack_mask(inside)


def masked(grad, packed) -> np.ndarray:
    """grad times the mask that `pack_mask` packed: the VJP of an op that saved it
    (specs/activation.md#masks)."""
    return grad * unpack_mask(packed, grad.shape)
