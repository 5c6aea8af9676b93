"""The Rust kernels of lance_ref._core at the Python/Rust boundary against the NumPy reference
(specs/kernels.md): drawn shapes (sizes 1, odd sizes that
exercise the SIMD tails, one axis above 64 now and then), any layout of every array argument
(transposed, sliced with step 2 or 3, reversed), both dtypes, thread counts, the errors of every
argument, zero sizes, overflowing sizes, and every SIMD path the CPU offers (LANCE_CORE_ISA).

Exactness: unfold, fold and im2col only move elements, so they must equal the reference exactly.
The contractions may sum in another order, so their norm-wise relative error
||rust - reference||_F / ||reference||_F must stay within 1e-5 (float32) or 1e-12 (float64).
"""

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided

from lance_ref.kernels import reference
from helpers import run_python
from strategies import kernel_conv_case, normal_arrays, relative_error

core = pytest.importorskip("lance_ref._core")

KERNELS = ("unfold", "fold", "mode_product", "tucker_project", "tucker_reconstruct", "gram", "im2col",
           "direct_conv2d", "direct_conv2d_input_grad", "direct_conv2d_weight_grad",
           "conv2d", "conv2d_input_grad", "conv2d_weight_grad", "max_pool2d", "max_pool2d_backward", "batch_norm_stats", "batch_norm_forward", "batch_norm_backward",
           "clamp", "masked")
DTYPES = (np.float32, np.float64)
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
# Sizes around the SIMD widths (4/8/16 lanes) and their tails; BIG: one axis above 64.
SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33)
BIG = (65, 67, 96, 129)
MAX_ELEMENTS = 12_000  # per drawn tensor, so that the examples stay fast


# --- strategies ---


@st.composite
def shapes4(draw, max_elements=MAX_ELEMENTS):
    """A 4-D shape of sizes from SIZES, sometimes with one axis from BIG, at most `max_elements`."""
    shape = list(draw(st.tuples(*[st.sampled_from(SIZES)] * 4)))
    big = draw(st.sampled_from([None, None, 0, 1, 2, 3]))
    if big is not None:
        shape[big] = draw(st.sampled_from(BIG))
    while math.prod(shape) > max_elements:  # shrink the largest ordinary axis to the next size down
        n = max((a for a in range(4) if a != big), key=lambda a: shape[a])
        shape[n] = max(s for s in SIZES if s < shape[n])
    return tuple(shape)


dtypes = st.sampled_from(DTYPES)
modes = st.integers(0, 3)


@st.composite
def factor_list(draw, shape, dtype):
    """Per mode None or an (I_n, k_n) factor with 1 <= k_n <= I_n, each in a drawn layout."""
    factors = []
    for size in shape:
        if draw(st.booleans()):
            factors.append(None)
        else:
            rank = draw(st.sampled_from(sorted({1, 2, 3, 5, 7, 9, 17, 33, size})).filter(lambda k: k <= size))
            factors.append(draw(normal_arrays((size, rank), dtype)))
    return factors


# --- comparisons ---


def assert_fresh(out, dtype, *inputs):
    assert isinstance(out, np.ndarray) and out.dtype == dtype, (type(out), getattr(out, "dtype", None))
    assert out.flags.c_contiguous
    assert not any(np.shares_memory(out, a) for a in inputs if isinstance(a, np.ndarray))


def assert_exact(got, want, *inputs):
    assert_fresh(got, want.dtype, *inputs)
    np.testing.assert_array_equal(got, want, strict=True)


def assert_close(got, want, *inputs):
    assert_fresh(got, want.dtype, *inputs)
    assert got.shape == want.shape, (got.shape, want.shape)
    error = relative_error(got, want)
    assert error <= TOL[want.dtype], f"norm-wise relative error {error:.3g} > {TOL[want.dtype]:g} ({want.dtype})"


def assert_close_to_terms(got, want, terms):
    """Norm-wise error within 4 TOL of the norm of `terms`, the summands `got` cancels."""
    bound = 4 * TOL[want.dtype] * max(np.linalg.norm(terms.astype(np.float64)), 1e-30)
    assert got.shape == want.shape and np.linalg.norm((got - want).astype(np.float64)) <= bound


# --- Rust equals the reference on drawn shapes and layouts ---


@settings(max_examples=150)
@given(data=st.data(), shape=shapes4(), dtype=dtypes, mode=modes)
def test_unfold(data, shape, dtype, mode):
    x = data.draw(normal_arrays(shape, dtype))
    assert_exact(core.unfold(x, mode), reference.unfold(x, mode), x)


@settings(max_examples=150)
@given(data=st.data(), shape=shapes4(), dtype=dtypes, mode=modes)
def test_fold(data, shape, dtype, mode):
    m = data.draw(normal_arrays((shape[mode], math.prod(shape) // shape[mode]), dtype))
    got = core.fold(m, mode, shape)
    assert_exact(got, reference.fold(m, mode, shape), m)
    assert_exact(core.unfold(got, mode), np.ascontiguousarray(m))


@settings(max_examples=150)
@given(data=st.data(), shape=shapes4(), dtype=dtypes, mode=modes, rows=st.sampled_from((1, 2, 3, 7, 9, 17, 33, 65)))
def test_mode_product(data, shape, dtype, mode, rows):
    x = data.draw(normal_arrays(shape, dtype))
    matrix = data.draw(normal_arrays((rows, shape[mode]), dtype))
    assert_close(core.mode_product(x, matrix, mode), reference.mode_product(x, matrix, mode), x, matrix)


@settings(max_examples=150)
@given(data=st.data(), shape=shapes4(), dtype=dtypes)
def test_tucker_project(data, shape, dtype):
    x = data.draw(normal_arrays(shape, dtype))
    factors = data.draw(factor_list(shape, dtype))
    got = core.tucker_project(x, factors)
    assert_close(got, reference.tucker_project(x, factors), x, *factors)


@settings(max_examples=150)
@given(data=st.data(), shape=shapes4(), dtype=dtypes)
def test_tucker_reconstruct(data, shape, dtype):
    factors = data.draw(factor_list(shape, dtype))
    core_shape = tuple(s if u is None else u.shape[1] for s, u in zip(shape, factors))
    c = data.draw(normal_arrays(core_shape, dtype))
    got = core.tucker_reconstruct(c, factors)
    assert got.shape == shape
    assert_close(got, reference.tucker_reconstruct(c, factors), c, *factors)


@settings(max_examples=150)
@given(data=st.data(), shape=shapes4(), dtype=dtypes, mode=modes)
def test_gram(data, shape, dtype, mode):
    x = data.draw(normal_arrays(shape, dtype))
    got = core.gram(x, mode)
    assert_close(got, reference.gram(x, mode), x)
    np.testing.assert_array_equal(got, got.T, err_msg="gram is not exactly symmetric")


@settings(max_examples=150)
@given(data=st.data(), case=kernel_conv_case(), dtype=dtypes)
def test_im2col(data, case, dtype):
    shape, kernel, stride, padding, dilation, groups = case
    x = data.draw(normal_arrays(shape, dtype))
    got = core.im2col(x, kernel, stride, padding, dilation, groups)
    want = reference.im2col(x, kernel, stride, padding, dilation, groups)
    oh, ow = ((s + 2 * p - d * (k - 1) - 1) // st_ + 1 for s, k, st_, p, d in zip(shape[2:], kernel, stride, padding, dilation))
    assert want.shape == (groups, shape[0] * oh * ow, kernel[0] * kernel[1] * shape[1] // groups)
    assert_exact(got, want, x)


@settings(max_examples=150)
@given(data=st.data(), case=kernel_conv_case(), dtype=dtypes, out_channels=st.sampled_from([1, 2, 5, 17]))
def test_conv2d_and_its_gradients_as_implicit_gemms(data, case, dtype, out_channels):
    shape, kernel, stride, padding, dilation, _ = case
    x = data.draw(normal_arrays(shape, dtype))
    w = data.draw(normal_arrays((out_channels, shape[1], *kernel), dtype))
    # padded one sample at a time, a few, or all at once
    workspace_bytes = data.draw(st.sampled_from([1, 4096, 1 << 30]))
    y = reference.conv2d(x, w, stride, padding, dilation)
    assert_close(core.conv2d(x, w, stride, padding, dilation, workspace_bytes), y, x, w)
    g = data.draw(normal_arrays(y.shape, dtype))
    assert_close(core.conv2d_weight_grad(g, x, kernel, stride, padding, dilation, workspace_bytes),
                 reference.conv2d_weight_grad(g, x, kernel, stride, padding, dilation), g, x)
    assert_close(core.conv2d_input_grad(g, w, shape[2:], stride, padding, dilation),
                 reference.conv2d_input_grad(g, w, shape[2:], stride, padding, dilation), g, w)


@settings(max_examples=60)
@given(data=st.data(), dtype=dtypes, n=st.sampled_from([1, 2, 3]), c=st.sampled_from([1, 2, 3, 8]),
       o=st.sampled_from([4, 5, 7, 9, 16]), h=st.integers(1, 6), ow=st.sampled_from([16, 32, 48]), kh=st.integers(1, 3),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)))
def test_conv2d_weight_grad_by_correlated_planes(data, dtype, n, c, o, h, ow, kh, padding):
    # stride 1, 3-tap kernel rows, rows of whole vectors, few channels: specs/conv.md#correlated-weight-gradient
    h, w = max(h, kh - 2 * padding[0]), ow + 2 - 2 * padding[1]
    x = data.draw(normal_arrays((n, c, h, w), dtype))
    g = data.draw(normal_arrays((n, o, h + 2 * padding[0] - kh + 1, ow), dtype))
    workspace_bytes = data.draw(st.sampled_from([1, 1 << 30]))
    got = core.conv2d_weight_grad(g, x, (kh, 3), (1, 1), padding, (1, 1), workspace_bytes)
    assert_close(got, reference.conv2d_weight_grad(g, x, (kh, 3), (1, 1), padding, (1, 1)), g, x)


def test_conv2d_errors():
    x, w = np.ones((2, 4, 5, 5)), np.ones((3, 4, 3, 3))
    with pytest.raises(ValueError, match=r"weight must have shape \(O, 4, 3, 3\)"):
        core.conv2d(x, np.ones((3, 2, 3, 3)), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(TypeError, match="weight has dtype"):
        core.conv2d(x, w.astype(np.float32), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="grad must have shape"):
        core.conv2d_weight_grad(np.ones((2, 3, 2, 2)), x, (3, 3), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        core.conv2d(np.ones((1, 4, 2, 2)), w, (1, 1), (0, 0), (1, 1), 1)


@st.composite
def depthwise_cases(draw):
    """(x shape, weight shape, stride, padding, dilation): `conv_cases` made depthwise, with a
    channel multiplier of 1 to 3."""
    shape, kernel, stride, padding, dilation, _ = draw(kernel_conv_case())
    return shape, (shape[1] * draw(st.integers(1, 3)), 1, *kernel), stride, padding, dilation


@settings(max_examples=150)
@given(data=st.data(), case=depthwise_cases(), dtype=dtypes)
def test_direct_depthwise_conv2d_and_its_vjps(data, case, dtype):
    shape, w_shape, stride, padding, dilation = case
    x, w = data.draw(normal_arrays(shape, dtype)), data.draw(normal_arrays(w_shape, dtype))
    geometry = (stride, padding, dilation, shape[1])
    y = reference.direct_conv2d(x, w, *geometry)
    assert_close(core.direct_conv2d(x, w, *geometry), y, x, w)
    g = data.draw(normal_arrays(y.shape, dtype))
    assert_close(core.direct_conv2d_input_grad(g, w, shape[2:], *geometry),
                 reference.direct_conv2d_input_grad(g, w, shape[2:], *geometry), g, w)
    assert_close(core.direct_conv2d_weight_grad(g, x, w_shape[2:], *geometry),
                 reference.direct_conv2d_weight_grad(g, x, w_shape[2:], *geometry), g, x)


@settings(max_examples=150)
@given(data=st.data(), shape=shapes4(), dtype=dtypes, affine=st.booleans(), keep=st.booleans(), batch_stats=st.booleans())
def test_batch_norm_passes(data, shape, dtype, affine, keep, batch_stats):
    if shape[0] * shape[2] * shape[3] < 2:
        shape = (2,) + shape[1:]
    x = data.draw(normal_arrays(shape, dtype))
    stats = reference.batch_norm_stats(x)
    assert_close(core.batch_norm_stats(x), stats, x)
    c, rng = shape[1], np.random.default_rng(0)
    inv_std = (1 / np.sqrt(stats[1] + 1e-5)).astype(dtype)
    weight, bias = (rng.standard_normal((2, c)).astype(dtype) if affine else (None, None))
    x_hat, y = core.batch_norm_forward(x, stats[0], inv_std, weight, bias, keep)
    want_hat, want_y = reference.batch_norm_forward(x, stats[0], inv_std, weight, bias, True)
    assert_exact(y, want_y, x)  # the reference's operations in its order: the same roundings
    assert (x_hat is None) == (not keep)
    if keep:
        assert_exact(x_hat, want_hat, x)
    g = data.draw(normal_arrays(shape, dtype))
    hat = np.asfortranarray(want_hat) if batch_stats or keep else None  # a layout other than g's
    scale = inv_std * (weight if affine else 1)
    dx, sums = core.batch_norm_backward(g, hat, scale, batch_stats and hat is not None)
    want_dx, want_sums = reference.batch_norm_backward(g, hat, scale, batch_stats and hat is not None)
    # dx = scale (g - mean g - x_hat mean(g x_hat)) and the sums [sum g x_hat; sum g] may cancel
    # almost entirely: their rounding error is relative to the terms' size, not to the result's
    assert_fresh(dx, dx.dtype, g)
    assert_close_to_terms(dx, want_dx, g * _channel_scale(scale))
    assert_fresh(sums, sums.dtype, g)
    g_hat = np.abs(g * (want_hat if hat is not None else 0)).sum(axis=(0, 2, 3))
    assert_close_to_terms(sums, want_sums, np.stack([g_hat, np.abs(g).sum(axis=(0, 2, 3))]))



@st.composite
def pool_cases(draw):
    """(x shape, kernel, stride, padding, dilation, out_hw) of max pooling, ceil mode or not
    (torch's rules: padding at most half the kernel, windows that start inside the input)."""
    from lance_ref.functional.pool import _geometry

    shape = (draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2, 5])),
             draw(st.sampled_from([1, 2, 5, 7, 8, 9, 16, 17])), draw(st.sampled_from([1, 2, 5, 7, 8, 9, 16, 33])))
    kernel = draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
    stride = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    shape = shape[:2] + tuple(max(s, span - 2 * p) for s, span, p in zip(shape[2:], spans, padding))
    geometry = _geometry(shape, kernel, stride, padding, dilation, draw(st.booleans()))
    return shape, *geometry[:5]


@settings(max_examples=150)
@given(data=st.data(), case=pool_cases(), dtype=dtypes, levels=st.sampled_from([None, 3]), nan=st.booleans())
def test_max_pool2d_and_its_vjp_equal_the_reference_exactly(data, case, dtype, levels, nan):
    """Ties (values rounded to a few levels) go to the first tap, NaN wins; the backward sums an
    input element's windows in the reference's order, so both results are exact."""
    shape, *pool = case
    x = data.draw(normal_arrays(shape, dtype))
    if levels:
        x[...] = np.round(x * levels)
    if nan:
        x[(0,) * 4] = np.nan
    best, taps = core.max_pool2d(x, *pool)
    want_best, want_taps = reference.max_pool2d(x, *pool)
    assert_exact(best, want_best, x)
    assert_exact(taps, want_taps, x)
    g = data.draw(normal_arrays(best.shape, dtype))
    t = data.draw(normal_arrays(taps.shape, np.float64)).argsort(axis=-1).astype(taps.dtype) % (pool[0][0] * pool[0][1])
    for winners in (taps, t):  # the forward's taps, and any valid taps in any layout
        assert_exact(core.max_pool2d_backward(g, winners, shape[2:], *pool[:4]),
                     reference.max_pool2d_backward(g, winners, shape[2:], *pool[:4]), g)


@settings(max_examples=150)
@given(data=st.data(), shape=shapes4(), ndim=st.integers(1, 4), dtype=dtypes,
       bounds=st.sampled_from([(0, None), (0, 6), (None, 1.5), (-0.5, 0.5), (3, 1), (0.1, None)]), keep=st.booleans())
def test_clamp_and_masked_equal_the_reference_exactly(data, shape, ndim, dtype, bounds, keep):
    """Any shape and layout, with zeros of both signs, infinities and NaN at drawn places; the
    mask's last byte is padded with zero bits, as np.packbits."""
    shape = shape[:ndim - 1] + (math.prod(shape[ndim - 1:]),)
    x = data.draw(normal_arrays(shape, dtype))
    flat = x.reshape(-1)  # a copy unless x is contiguous: write the specials through x itself
    for value in data.draw(st.lists(st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 6.0, 1.5]), max_size=4)):
        x[np.unravel_index(data.draw(st.integers(0, flat.size - 1)), shape)] = value
    y, packed = core.clamp(x, *bounds, keep)
    want_y, want_packed = reference.clamp(x, *bounds, keep)
    assert_exact(y, want_y, x)
    assert (packed is None) == (not keep)
    if keep:
        assert_exact(packed, want_packed, x)
        g = data.draw(normal_arrays(shape, dtype))
        assert_exact(core.masked(g, packed), reference.masked(g, packed), g)


def test_clamp_and_masked_errors():
    g = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"mask must have ceil\(15 / 8\) = 2 bytes, got 1"):
        core.masked(g, np.zeros(1, np.uint8))
    with pytest.raises(TypeError, match="mask must be a uint8"):
        core.masked(g, np.zeros(2, np.int8))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        core.clamp(np.ones(3, np.int64), 0.0, None, True)


def test_max_pool2d_errors():
    x = np.ones((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="windows past the end of the input"):
        core.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 1), (3, 2))
    with pytest.raises(ValueError, match=r"kernel\[0\] must be an int in 1\.\."):
        core.max_pool2d(x, (0, 2), (2, 2), (0, 0), (1, 1), (2, 2))
    best, taps = core.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 1), (2, 2))
    assert taps.dtype == np.uint8 and core.max_pool2d(np.ones((1, 1, 17, 16)), (17, 16), (1, 1), (0, 0), (1, 1), (1, 1))[1].dtype == np.uint16
    with pytest.raises(ValueError, match="taps must index the 4 taps"):
        core.max_pool2d_backward(best, np.full(taps.shape, 4, np.uint8), (4, 4), (2, 2), (2, 2), (0, 0), (1, 1))
    with pytest.raises(TypeError, match="taps must be a uint8 or uint16"):
        core.max_pool2d_backward(best, taps.astype(np.int64), (4, 4), (2, 2), (2, 2), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="taps must have shape"):
        core.max_pool2d_backward(best, taps[:, :1], (4, 4), (2, 2), (2, 2), (0, 0), (1, 1))


def _channel_scale(scale):
    return scale.reshape(1, -1, 1, 1)


def test_batch_norm_errors():
    x = np.ones((2, 3, 4, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        core.batch_norm_stats(np.ones((1, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"mean must have 3 values \(one per channel\), got 2"):
        core.batch_norm_forward(x, np.zeros(2), np.ones(3), None, None, False)
    with pytest.raises(TypeError, match="inv_std has dtype float32"):
        core.batch_norm_forward(x, np.zeros(3), np.ones(3, np.float32), None, None, False)
    with pytest.raises(ValueError, match="batch statistics need x_hat"):
        core.batch_norm_backward(x, None, np.ones(3), True)
    with pytest.raises(ValueError, match="x_hat must have the gradient's shape"):
        core.batch_norm_backward(x, np.ones((2, 3, 4, 5)), np.ones(3), True)


def test_direct_conv2d_takes_depthwise_convolutions_only():
    x, w = np.ones((1, 4, 5, 5)), np.ones((4, 2, 3, 3))
    with pytest.raises(ValueError, match="groups = channels"):
        core.direct_conv2d(x, w, (1, 1), (1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match=r"weight must have shape \(M \* 4, 1, kh, kw\)"):
        core.direct_conv2d(x, w, (1, 1), (1, 1), (1, 1), 4)
    with pytest.raises(ValueError, match=r"grad must have shape \[1, 4, 5, 5\]"):
        core.direct_conv2d_input_grad(np.ones((1, 4, 3, 3)), np.ones((4, 1, 3, 3)), (5, 5), (1, 1), (1, 1), (1, 1), 4)
    with pytest.raises(TypeError, match="weight has dtype float32"):
        core.direct_conv2d(x, w.astype(np.float32), (1, 1), (1, 1), (1, 1), 4)
    with pytest.raises(ValueError, match="stride"):
        core.direct_conv2d_weight_grad(np.ones((1, 4, 5, 5)), x, (3, 3), (0, 1), (1, 1), (1, 1), 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_big_channel_counts_and_tails(dtype):
    """Fixed LANCE-like shapes larger than the drawn ones: many channels, ranks at SIMD tails."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 67, 5, 7)).astype(dtype)
    factors = [rng.standard_normal((9, 3)).astype(dtype), rng.standard_normal((67, 17)).astype(dtype)[::-1], None,
               rng.standard_normal((7, 7)).astype(dtype).T]
    project, reconstruct = core.tucker_project, core.tucker_reconstruct
    s = project(x, factors)
    assert_close(s, reference.tucker_project(x, factors))
    assert_close(reconstruct(s, factors), reference.tucker_reconstruct(s, factors))
    for mode in range(4):
        assert_close(core.gram(x[:, ::-2], mode), reference.gram(x[:, ::-2], mode))
    w = rng.standard_normal((4, 130, 9, 9)).astype(dtype)
    assert_exact(core.im2col(w, (3, 3), (1, 1), (1, 1), (1, 1), 2), reference.im2col(w, (3, 3), (1, 1), (1, 1), (1, 1), 2))


# --- odd layouts NumPy can produce ---


def test_broadcast_unaligned_readonly_fortran_inputs():
    """Stride-0 (broadcast), unaligned fields of structured arrays, read-only and Fortran arrays."""
    rng = np.random.default_rng(3)
    for dtype in DTYPES:
        values = rng.standard_normal((3, 5, 4, 2)).astype(dtype)
        record = np.zeros(values.shape, dtype=[("pad", "u1"), ("v", dtype)])
        record["v"] = values
        read_only = values.copy()
        read_only.flags.writeable = False
        u = rng.standard_normal((5, 2)).astype(dtype)
        u_record = np.zeros(u.shape, dtype=[("pad", "u1"), ("v", dtype)])
        u_record["v"] = u
        cases = {
            "broadcast": np.broadcast_to(values[:, :1], values.shape),
            "structured field": record["v"],
            "read-only": read_only,
            "fortran": np.asfortranarray(values),
        }
        for name, x in cases.items():
            for mode in range(4):
                assert_exact(core.unfold(x, mode), reference.unfold(x, mode))
                assert_close(core.gram(x, mode), reference.gram(x, mode))
            for factor in (u, u_record["v"], np.broadcast_to(u[:1], u.shape), np.asfortranarray(u)):
                factors = [None, factor, None, None]
                assert_close(core.tucker_project(x, factors), reference.tucker_project(x, factors))
                assert_close(core.mode_product(x, factor.T, 1), reference.mode_product(x, factor.T, 1))
            assert_exact(core.im2col(x, (2, 1), (1, 1), (1, 0), (1, 1), 1), reference.im2col(x, (2, 1), (1, 1), (1, 0), (1, 1), 1))


# --- threads ---


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_do_not_change_results(dtype):
    """1, 2 and 3 threads on tensors large enough to be split (>= 2**16 operations per thread)."""
    before = core.num_threads()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 67, 9, 17)).astype(dtype)[:, ::-1]
    factors = [rng.standard_normal((40, 5)).astype(dtype), None, rng.standard_normal((9, 9)).astype(dtype),
               rng.standard_normal((17, 2)).astype(dtype)[::-1]]
    s = reference.tucker_project(x, factors)
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1), 1)
    try:
        for threads in (1, 2, 3):
            core.set_num_threads(threads)
            assert core.num_threads() == threads
            assert_close(core.tucker_project(x, factors), s)
            assert_close(core.tucker_reconstruct(s, factors), reference.tucker_reconstruct(s, factors))
            assert_close(core.mode_product(x, factors[0].T, 0), reference.mode_product(x, factors[0].T, 0))
            for mode in range(4):
                assert_close(core.gram(x, mode), reference.gram(x, mode))
                assert_exact(core.unfold(x, mode), reference.unfold(x, mode))
                m = reference.unfold(x, mode)[:, ::-1][:, ::-1]
                assert_exact(core.fold(m, mode, x.shape), reference.fold(m, mode, x.shape))
            assert_exact(core.im2col(x, *geometry), reference.im2col(x, *geometry))
            w = rng.standard_normal((9, x.shape[1], 3, 3)).astype(dtype)
            assert_close(core.conv2d(x, w, *geometry[1:4], 1 << 20), reference.conv2d(x, w, *geometry[1:4]))
            g = rng.standard_normal((40, 9, 9, 17)).astype(dtype)
            assert_close(core.conv2d_weight_grad(g, x, (3, 3), *geometry[1:4], 1 << 20),
                         reference.conv2d_weight_grad(g, x, (3, 3), *geometry[1:4]))
            assert_close(core.conv2d_input_grad(g, w, x.shape[2:], *geometry[1:4]),
                         reference.conv2d_input_grad(g, w, x.shape[2:], *geometry[1:4]))
            wide, wide_g = x[:, :8, :, :16].repeat(2, axis=3), g[:, :8, :, :16].repeat(2, axis=3)  # correlated
            assert_close(core.conv2d_weight_grad(wide_g, wide, (3, 3), *geometry[1:4], 1 << 20),
                         reference.conv2d_weight_grad(wide_g, wide, (3, 3), *geometry[1:4]))
            pool = ((3, 3), (2, 2), (1, 1), (1, 1), (5, 9))
            best, taps = core.max_pool2d(x, *pool)
            assert_exact(best, reference.max_pool2d(x, *pool)[0])
            assert_exact(core.max_pool2d_backward(best, taps, x.shape[2:], *pool[:4]),
                         reference.max_pool2d_backward(best, taps, x.shape[2:], *pool[:4]))
            y, packed = core.clamp(x, 0.0, 6.0, True)
            assert_exact(y, reference.clamp(x, 0.0, 6.0, True)[0])
            assert_exact(core.masked(x, packed), reference.masked(x, packed))
    finally:
        core.set_num_threads(before)
    with pytest.raises((ValueError, OverflowError)):
        core.set_num_threads(0)
    assert core.num_threads() == before


# --- errors ---


def x4(dtype=np.float64, shape=(2, 3, 4, 5)):
    return np.ones(shape, dtype=dtype)


def calls(dtype_x=np.float64, dtype_other=np.float64):
    """One call per kernel and per array argument: (label, kernel name, thunk building the call
    with that argument in `dtype_other` and every other array in `dtype_x`)."""
    x = x4(dtype_x)
    ux, uo = np.ones((3, 2), dtype=dtype_x), np.ones((3, 2), dtype=dtype_other)
    return [
        ("x", "unfold", lambda: core.unfold(x4(dtype_other), 1)),
        ("m", "fold", lambda: core.fold(np.ones((3, 40), dtype=dtype_other), 1, (2, 3, 4, 5))),
        ("x", "mode_product", lambda: core.mode_product(x4(dtype_other), np.ones((2, 3), dtype=dtype_x), 1)),
        ("matrix", "mode_product", lambda: core.mode_product(x, np.ones((2, 3), dtype=dtype_other), 1)),
        ("x", "tucker_project", lambda: core.tucker_project(x4(dtype_other), [None, ux, None, None])),
        ("factors\\[1\\]", "tucker_project", lambda: core.tucker_project(x, [None, uo, None, None])),
        ("core", "tucker_reconstruct", lambda: core.tucker_reconstruct(x4(dtype_other, (2, 2, 4, 5)), [None, ux, None, None])),
        ("factors\\[1\\]", "tucker_reconstruct", lambda: core.tucker_reconstruct(x4(dtype_x, (2, 2, 4, 5)), [None, uo, None, None])),
        ("x", "gram", lambda: core.gram(x4(dtype_other), 2)),
        ("x", "im2col", lambda: core.im2col(x4(dtype_other), (1, 1), (1, 1), (0, 0), (1, 1), 1)),
    ]


@pytest.mark.parametrize("bad", [np.int64, np.int32, np.float16, np.complex128, np.dtype(np.float64).newbyteorder()],
                         ids=["int64", "int32", "float16", "complex128", "float64-byteswapped"])
def test_wrong_dtype_is_a_type_error(bad):
    for name, kernel, call in calls(np.float64, bad):
        with pytest.raises(TypeError, match=name):
            call()


@pytest.mark.parametrize("first, other", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_float_dtypes_are_a_type_error(first, other):
    """x in one float dtype and a matrix or factor in the other (either way round): TypeError
    naming one of the two arguments."""
    for name, kernel, call in calls(first, other):
        if kernel not in ("mode_product", "tucker_project", "tucker_reconstruct"):
            continue  # a single array argument: nothing to mix
        with pytest.raises(TypeError, match=r"x|core|matrix|factors\[1\]"):
            call()


def test_non_arrays_are_a_type_error():
    for kernel, call in [
        ("unfold", lambda: core.unfold([[[[1.0]]]], 0)),
        ("fold", lambda: core.fold([[1.0]], 0, (1, 1, 1, 1))),
        ("mode_product", lambda: core.mode_product(x4(), [[1.0, 2.0, 3.0]], 1)),
        ("tucker_project", lambda: core.tucker_project(x4(), [None, [[1.0]] * 3, None, None])),
        ("gram", lambda: core.gram(None, 0)),
        ("im2col", lambda: core.im2col("x", (1, 1), (1, 1), (0, 0), (1, 1), 1)),
    ]:
        with pytest.raises(TypeError):
            call()


def test_wrong_ndim_is_a_value_error_naming_the_argument():
    for kernel, name, call in [
        ("unfold", "x", lambda: core.unfold(np.ones((2, 3, 4)), 0)),
        ("unfold", "x", lambda: core.unfold(np.ones((2, 3, 4, 5, 1)), 0)),
        ("fold", "m", lambda: core.fold(np.ones((2, 3, 1)), 0, (2, 3, 1, 1))),
        ("mode_product", "x", lambda: core.mode_product(np.ones((2, 3)), np.ones((2, 2)), 0)),
        ("mode_product", "matrix", lambda: core.mode_product(x4(), np.ones(3), 1)),
        ("mode_product", "matrix", lambda: core.mode_product(x4(), np.ones((1, 2, 3)), 1)),
        ("tucker_project", "x", lambda: core.tucker_project(np.ones((2, 3, 4)), [None] * 3)),
        ("tucker_reconstruct", "core", lambda: core.tucker_reconstruct(np.ones((2, 3, 4)), [None] * 3)),
        ("gram", "x", lambda: core.gram(np.ones((2, 3)), 0)),
        ("im2col", "x", lambda: core.im2col(np.ones((2, 3, 4)), (1, 1), (1, 1), (0, 0), (1, 1), 1)),
    ]:
        with pytest.raises(ValueError, match=name):
            call()


@pytest.mark.parametrize("mode", [4, 7, -1, -4])
def test_bad_mode_is_a_value_error(mode):
    for kernel, call in [
        ("unfold", lambda: core.unfold(x4(), mode)),
        ("fold", lambda: core.fold(np.ones((3, 40)), mode, (2, 3, 4, 5))),
        ("mode_product", lambda: core.mode_product(x4(), np.ones((2, 3)), mode)),
        ("gram", lambda: core.gram(x4(), mode)),
    ]:
        with pytest.raises(ValueError, match="mode"):
            call()


def test_reference_bad_mode():
    """The reference's rule that the Rust kernels follow: a mode outside 0..3 is a ValueError."""
    for mode in (4, -1):
        with pytest.raises(ValueError, match="mode"):
            reference.unfold(x4(), mode)
        with pytest.raises(ValueError, match="mode"):
            reference.gram(x4(), mode)


def test_mode_out_of_c_long_is_a_value_error():
    for kernel, call in [("unfold", lambda: core.unfold(x4(), 2**70)), ("gram", lambda: core.gram(x4(), -(2**70)))]:
        with pytest.raises(ValueError, match="mode"):
            call()


def test_bad_factors_are_value_errors_naming_the_factor():
    project, reconstruct = core.tucker_project, core.tucker_reconstruct
    x = x4()  # (2, 3, 4, 5)
    ones = np.ones
    bad = {
        "factors\\[2\\]": [None, None, ones((3, 2)), None],  # I_n does not match mode 2 (4)
        "factors\\[1\\]": [None, ones((3, 4)), None, None],  # rank 4 > mode size 3
        "factors\\[3\\]": [None, None, None, ones((5, 0))],  # rank 0
        "factors\\[0\\]": [ones(2), None, None, None],  # 1-D
        "factors\\[2\\] ": [None, None, ones((4, 2, 1)), None],  # 3-D
    }
    for name, factors in bad.items():
        with pytest.raises(ValueError, match=name.strip()):
            project(x, factors)
        with pytest.raises(ValueError, match=name.strip()):
            reference.tucker_project(x, factors)
    # Reconstruction checks U_n.shape[1] against the core and 1 <= k_n <= I_n.
    c = ones((2, 2, 4, 5))
    for name, factors in {
        "factors\\[1\\]": [None, ones((3, 3)), None, None],  # k_1 = 3 but the core has 2
        "factors\\[0\\]": [ones((1, 2)), None, None, None],  # rank 2 > size 1
        "factors\\[3\\]": [None, None, None, ones((5,))],
    }.items():
        with pytest.raises(ValueError, match=name):
            reconstruct(c, factors)
        with pytest.raises(ValueError, match=name):
            reference.tucker_reconstruct(c, factors)
    for factors in ([None] * 3, [None] * 5, []):
        with pytest.raises(ValueError, match="factors"):
            project(x, factors)
        with pytest.raises(ValueError, match="factors"):
            reconstruct(x, factors)


def test_bad_shapes_are_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="matrix"):
        core.mode_product(x4(), np.ones((2, 4)), 1)  # I_1 = 3
    with pytest.raises(ValueError, match="m"):
        core.fold(np.ones((3, 41)), 1, (2, 3, 4, 5))
    with pytest.raises(ValueError, match="m"):
        core.fold(np.ones((4, 30)), 1, (2, 3, 4, 5))


def test_fold_shape_of_wrong_length_is_a_value_error_naming_shape():
    for shape in [(2, 3, 4), (2, 3, 4, 5, 1)]:
        with pytest.raises(ValueError, match="shape"):
            core.fold(np.ones((3, 8)), 1, shape)


def test_im2col_bad_geometry_is_a_value_error():
    im2col = core.im2col
    x = x4(shape=(2, 6, 5, 5))
    ok = dict(kernel=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    bad = [
        ("groups", dict(groups=4)),  # does not divide 6
        ("groups", dict(groups=0)),
        ("groups", dict(groups=12)),
        ("kernel", dict(kernel=(0, 3))),
        ("stride", dict(stride=(1, 0))),
        ("dilation", dict(dilation=(0, 1))),
        ("kernel|input|smaller|output", dict(kernel=(6, 3))),  # larger than the input
        ("kernel|input|smaller|output", dict(kernel=(3, 3), dilation=(3, 1))),  # dilated span 7 > 5
        ("kernel", dict(kernel=(3,))),
        ("stride", dict(stride=(1, 1, 1))),
    ]
    for name, change in bad:
        args = {**ok, **change}
        with pytest.raises(ValueError, match=name):
            im2col(x, args["kernel"], args["stride"], args["padding"], args["dilation"], args["groups"])


def test_im2col_negative_geometry_is_a_value_error():
    im2col = core.im2col
    x = x4(shape=(2, 6, 5, 5))
    for args in [((3, 3), (-1, 1), (0, 0), (1, 1), 1), ((3, 3), (1, 1), (0, -1), (1, 1), 1),
                 ((-3, 3), (1, 1), (0, 0), (1, 1), 1), ((3, 3), (1, 1), (0, 0), (1, 1), -2)]:
        with pytest.raises(ValueError):
            im2col(x, *args)


# --- zero-sized dimensions: the Rust kernel does what the reference does ---


def outcome(fn, *args):
    try:
        return fn(*args), None
    except (ValueError, TypeError) as err:
        return None, type(err)


ZERO_SHAPES = [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0), (0, 0, 0, 0), (1, 0, 1, 1)]


@pytest.mark.parametrize("shape", ZERO_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_sized_dimensions_match_the_reference(shape, dtype):
    """Where the reference returns (empty or zero arrays), Rust returns the same; where it raises a
    ValueError (a factor on a mode of size 0 cannot have 1 <= k_n <= 0), Rust raises one too."""
    x = np.ones(shape, dtype=dtype)[:, :, ::-1]
    cases = []
    for mode in range(4):
        cases += [("unfold", (x, mode)), ("gram", (x, mode))]
        others = math.prod(s for n, s in enumerate(shape) if n != mode)
        cases.append(("fold", (np.ones((shape[mode], others), dtype=dtype), mode, shape)))
        for rows in (0, 2):
            cases.append(("mode_product", (x, np.ones((rows, shape[mode]), dtype=dtype), mode)))
        factor = [None] * 4
        factor[mode] = np.ones((shape[mode], 1), dtype=dtype)
        cases += [("tucker_project", (x, factor)), ("tucker_project", (x, [None] * 4))]
        small = np.ones(tuple(1 if n == mode else s for n, s in enumerate(shape)), dtype=dtype)
        cases += [("tucker_reconstruct", (small, factor)), ("tucker_reconstruct", (x, [None] * 4))]
    cases += [("im2col", (x, (1, 1), (1, 1), (0, 0), (1, 1), 1)), ("im2col", (x, (1, 1), (1, 1), (1, 1), (1, 1), 1))]
    for name, args in cases:
        want, want_error = outcome(getattr(reference, name), *args)
        got, got_error = outcome(getattr(core, name), *args)
        label = f"{name} on {[a.shape if isinstance(a, np.ndarray) else a for a in args]}"
        if want_error is not None:
            assert got_error is ValueError or got_error is want_error, f"{label}: reference raised {want_error.__name__}, Rust returned"
        else:
            assert got_error is None, f"{label}: reference returned {want.shape}, Rust raised {got_error}"
            assert_exact(got, np.ascontiguousarray(want))


# --- sizes that overflow: a clear exception, never a crash ---


def huge(shape, dtype=np.float64):
    """A stride-0 view of one element with a huge `shape` (NumPy allows up to 2**63 bytes)."""
    return as_strided(np.zeros(1, dtype=dtype), shape=shape, strides=(0,) * len(shape))


def test_huge_shapes_raise_a_clear_error():
    """Each result would need >= 2**53 bytes or overflows the address space: ValueError or
    MemoryError before anything is allocated or computed (NumPy itself refuses views of more
    than 2**63 bytes, so the inputs stop at 2**59 float64 elements)."""
    x = huge((2**20, 2**20, 2**19, 1))  # 2**59 elements
    wide = huge((2**30, 2**29, 1, 1))
    tiny = np.zeros((1, 1, 1, 1))
    big_factor = huge((2**31, 1))
    cases = [
        ("unfold", lambda: core.unfold(x, 0)),
        ("unfold", lambda: core.unfold(x, 3)),
        ("fold", lambda: core.fold(huge((2**20, 2**39)), 0, (2**20, 2**20, 2**19, 1))),
        ("fold", lambda: core.fold(np.zeros((1, 1)), 0, (2**62, 2**62, 1, 1))),
        ("fold", lambda: core.fold(np.zeros((1, 1)), 0, (1, 2**64 - 1, 2**64 - 1, 1))),
        ("mode_product", lambda: core.mode_product(x, huge((2**4, 2**20)), 0)),
        ("mode_product", lambda: core.mode_product(tiny, huge((2**62, 1)), 0)),
        ("tucker_project", lambda: core.tucker_project(x, [None] * 4)),
        ("tucker_project", lambda: core.tucker_project(x, [huge((2**20, 2**20)), None, None, None])),
        ("tucker_reconstruct", lambda: core.tucker_reconstruct(tiny, [big_factor] * 4)),
        ("tucker_reconstruct", lambda: core.tucker_reconstruct(tiny, [big_factor, big_factor, None, None])),
        ("gram", lambda: core.gram(wide, 0)),
        ("im2col", lambda: core.im2col(x, (1, 1), (1, 1), (0, 0), (1, 1), 1)),
        ("im2col", lambda: core.im2col(wide, (1, 1), (1, 1), (2**62, 2**62), (1, 1), 1)),
        ("im2col", lambda: core.im2col(tiny, (2**40, 2**40), (1, 1), (2**60, 2**60), (1, 1), 1)),
    ]
    for name, call in cases:
        with pytest.raises((ValueError, MemoryError, OverflowError)) as info:
            call()
        assert str(info.value), f"{name}: an exception without a message"


def test_huge_cases_do_not_crash_the_interpreter():
    """The same overflowing calls in a subprocess: it must exit normally (a crash shows as a signal)."""
    code = textwrap.dedent(
        """
        import numpy as np
        from numpy.lib.stride_tricks import as_strided
        import lance_ref._core as core
        def huge(shape):
            return as_strided(np.zeros(1), shape=shape, strides=(0,) * len(shape))
        x = huge((2**20, 2**20, 2**19, 1))
        for call in [lambda: core.unfold(x, 1), lambda: core.gram(huge((2**30, 2**29, 1, 1)), 0),
                     lambda: core.tucker_reconstruct(np.zeros((1, 1, 1, 1)), [huge((2**31, 1))] * 4),
                     lambda: core.im2col(x, (1, 1), (1, 1), (0, 0), (1, 1), 1)]:
            try:
                call()
            except (ValueError, MemoryError, OverflowError):
                pass
        print("survived")
        """
    )
    result = run_python(code, {})
    assert result.returncode == 0 and "survived" in result.stdout, (result.returncode, result.stderr[-2000:])


# --- every SIMD path, forced with LANCE_CORE_ISA, in a fresh interpreter each ---

ISA_ORDER = {"scalar": 0, "avx2": 1, "avx512": 2, "neon": 1}


def isa_paths():
    """scalar, the default path and every path below it that this CPU runs."""
    if not hasattr(core, "simd_isa"):
        return ["scalar"]
    default = core.simd_isa()
    available = core.available_isas() if hasattr(core, "available_isas") else [default]
    family = ("scalar", "neon") if default == "neon" else ("scalar", "avx2", "avx512")
    paths = {"scalar", default} | {i for i in available if i in family and ISA_ORDER[i] <= ISA_ORDER[default]}
    return sorted(paths, key=ISA_ORDER.get)


ISA_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import test_kernels_rust as t
    core = t.core
    report = {{"isa": core.simd_isa(), "threads": core.num_threads(), "failures": [], "checks": 0}}
    rng = np.random.default_rng(11)

    def check(label, fn):
        report["checks"] += 1
        try:
            fn()
        except Exception as err:  # collect every failure, not just the first
            report["failures"].append(f"{{label}}: {{type(err).__name__}}: {{err}}")

    for dtype in (np.float32, np.float64):
        for shape in [(1, 1, 1, 1), (3, 7, 9, 17), (2, 33, 5, 65), (16, 8, 4, 4), (5, 17, 3, 9)]:
            store = rng.standard_normal(shape[::-1]).astype(dtype)
            layouts = {{"contiguous": np.ascontiguousarray(store.T), "transposed": store.T,
                        "reversed": np.ascontiguousarray(store.T)[::-1, :, ::-1]}}
            for name, x in layouts.items():
                label = f"{{dtype.__name__}} {{shape}} {{name}}"
                factors = [rng.standard_normal((s, k)).astype(dtype) for s, k in zip(shape, [1, 3, 2, 9])]
                factors = [u if u.shape[1] <= u.shape[0] else None for u in factors]
                factors[1] = None if factors[1] is None else factors[1][::-1]
                s = t.reference.tucker_project(x, factors)
                for mode in range(4):
                    check(f"unfold {{label}} mode {{mode}}", lambda: t.assert_exact(core.unfold(x, mode), t.reference.unfold(x, mode)))
                    m = t.reference.unfold(x, mode).T.copy().T
                    check(f"fold {{label}} mode {{mode}}", lambda: t.assert_exact(core.fold(m, mode, shape), t.reference.fold(m, mode, shape)))
                    matrix = rng.standard_normal((7, shape[mode])).astype(dtype)[:, ::-1]
                    check(f"mode_product {{label}} mode {{mode}}", lambda: t.assert_close(core.mode_product(x, matrix, mode), t.reference.mode_product(x, matrix, mode)))
                    check(f"gram {{label}} mode {{mode}}", lambda: t.assert_close(core.gram(x, mode), t.reference.gram(x, mode)))
                check(f"tucker_project {{label}}", lambda: t.assert_close(core.tucker_project(x, factors), s))
                check(f"tucker_reconstruct {{label}}", lambda: t.assert_close(core.tucker_reconstruct(s, factors), t.reference.tucker_reconstruct(s, factors)))
                geometry = ((3, 3), (1, 2), (1, 0), (1, 1), 1) if shape[2] >= 1 and shape[3] >= 3 else ((1, 1), (1, 1), (0, 0), (1, 1), 1)
                check(f"im2col {{label}}", lambda: t.assert_exact(core.im2col(x, *geometry), t.reference.im2col(x, *geometry)))
                full = rng.standard_normal((5, shape[1], *geometry[0])).astype(dtype)[::-1]
                check(f"conv2d {{label}}", lambda: t.assert_close(core.conv2d(x, full, *geometry[1:4], 4096), t.reference.conv2d(x, full, *geometry[1:4])))
                y = t.reference.conv2d(x, full, *geometry[1:4])[..., ::-1]
                check(f"conv2d_input_grad {{label}}", lambda: t.assert_close(core.conv2d_input_grad(y, full, shape[2:], *geometry[1:4]), t.reference.conv2d_input_grad(y, full, shape[2:], *geometry[1:4])))
                check(f"conv2d_weight_grad {{label}}", lambda: t.assert_close(core.conv2d_weight_grad(y, x, geometry[0], *geometry[1:4], 4096), t.reference.conv2d_weight_grad(y, x, geometry[0], *geometry[1:4])))
                depthwise = (geometry[1], geometry[2], geometry[3], shape[1])
                w = rng.standard_normal((2 * shape[1], 1, *geometry[0])).astype(dtype)[:, :, ::-1]
                check(f"direct_conv2d {{label}}", lambda: t.assert_close(core.direct_conv2d(x, w, *depthwise), t.reference.direct_conv2d(x, w, *depthwise)))
                g = t.reference.direct_conv2d(x, w, *depthwise)[..., ::-1]
                check(f"direct_conv2d_input_grad {{label}}", lambda: t.assert_close(core.direct_conv2d_input_grad(g, w, shape[2:], *depthwise), t.reference.direct_conv2d_input_grad(g, w, shape[2:], *depthwise)))
                check(f"direct_conv2d_weight_grad {{label}}", lambda: t.assert_close(core.direct_conv2d_weight_grad(g, x, geometry[0], *depthwise), t.reference.direct_conv2d_weight_grad(g, x, geometry[0], *depthwise)))
                x[(0,) * 4] = -0.0
                y, packed = core.clamp(x, 0.0, 6.0, True)
                check(f"clamp {{label}}", lambda: t.assert_exact(y, t.reference.clamp(x, 0.0, 6.0, True)[0]))
                check(f"clamp mask {{label}}", lambda: t.assert_exact(packed, t.reference.clamp(x, 0.0, 6.0, True)[1]))
                check(f"masked {{label}}", lambda: t.assert_exact(core.masked(x, packed), t.reference.masked(x, packed)))
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize("isa", isa_paths())
def test_every_simd_path_equals_the_reference(isa):
    code = ISA_SCRIPT.format(tests=str(Path(__file__).parent))
    result = run_python(code, {"LANCE_CORE_ISA": isa, "LANCE_CORE_THREADS": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["isa"] == isa, f"LANCE_CORE_ISA={isa} but simd_isa() says {report['isa']}"
    assert report["threads"] == 2, "LANCE_CORE_THREADS=2 not honoured"
    assert not report["failures"], "\n".join(report["failures"][:20])
    assert report["checks"] >= 300, report["checks"]


def test_unknown_isa_is_a_clear_error():
    code = "import lance_ref._core as c, numpy as np\ntry:\n    c.unfold(np.ones((1,1,1,1)), 0)\nexcept ValueError as e:\n    print('ValueError', e)\n"
    result = run_python(code, {"LANCE_CORE_ISA": "sse9"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ValueError" in result.stdout and "LANCE_CORE_ISA" in result.stdout
