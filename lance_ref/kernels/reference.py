"""NumPy reference kernels: the ground truth every Rust kernel is tested against.

Every kernel returns a new C-contiguous array that owns (or is the only view of) its memory, so
keeping a result alive keeps exactly its own elements alive (specs/memory.md#ledger).
"""

import math
import operator

import numpy as np

FLOAT_DTYPES = ("float32", "float64")


def check_float(x, name: str) -> None:
    """TypeError unless `x` is a float32 or float64 numpy.ndarray (named `name` in the message)."""
    if not isinstance(x, np.ndarray) or x.dtype.name not in FLOAT_DTYPES:
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name} must be a float32 or float64 numpy.ndarray, got {kind}")


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


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1, as torch."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


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
    out_hw = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
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
