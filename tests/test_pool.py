"""Pooling (specs/pool.md): max, average, adaptive average and adaptive max pooling."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from lance_ref import nn
from helpers import assert_float32_matches_float64, gradcheck
from strategies import arrays


def torch_pooling_output_size(size, k, s, p, d, ceil_mode):
    """pooling_output_shape of ATen, written out."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def pooled_shape(shape, kernel_size, stride, padding, ceil_mode, dilation=(1, 1)):
    sides = zip(shape[2:], kernel_size, stride, padding, dilation)
    return shape[:2] + tuple(torch_pooling_output_size(*side, ceil_mode) for side in sides)


def windows(shape, kernel_size, stride, padding, ceil_mode, dilation=(1, 1)):
    """For each output (h', w'): its input pixels (h, w) in scan order and its top-left corner."""
    for oh, ow in np.ndindex(*pooled_shape(shape, kernel_size, stride, padding, ceil_mode, dilation)[2:]):
        h0, w0 = oh * stride[0] - padding[0], ow * stride[1] - padding[1]
        taps = [(h0 + dilation[0] * i, w0 + dilation[1] * j) for i, j in np.ndindex(*kernel_size)]
        inside = [(h, w) for h, w in taps if 0 <= h < shape[2] and 0 <= w < shape[3]]
        yield (oh, ow), inside, (h0, w0)


def max_pool_reference(x, **params):
    """Forward value and gradient for an all-ones upstream gradient; the first maximum wins."""
    y, grad = np.zeros(pooled_shape(x.shape, **params)), np.zeros_like(x)
    for (oh, ow), inside, _ in windows(x.shape, **params):
        values = np.stack([x[:, :, h, w] for h, w in inside], -1)
        y[:, :, oh, ow] = values.max(-1)
        first = values.argmax(-1)
        for n, c in np.ndindex(*x.shape[:2]):
            grad[(n, c) + inside[first[n, c]]] += 1
    return y, grad


def avg_pool_reference(x, count_include_pad=True, **params):
    """torch's avg_pool2d loop: divisor from the window clipped to the padded input, or to the input."""
    (kh, kw), (ph, pw), (h, w) = params["kernel_size"], params["padding"], x.shape[2:]
    y = np.zeros(pooled_shape(x.shape, **params))
    for (oh, ow), inside, (h0, w0) in windows(x.shape, **params):
        h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
        if count_include_pad:
            divisor = (h1 - h0) * (w1 - w0)
        else:
            divisor = (min(h1, h) - max(h0, 0)) * (min(w1, w) - max(w0, 0))
        y[:, :, oh, ow] = sum(x[:, :, i, j] for i, j in inside) / divisor
    return y


@st.composite
def pool_case(draw, dilation=True):
    """Input shape and kernel/stride/padding/dilation/ceil_mode with torch's constraints."""
    kernel, stride, padding, dil, size = [], [], [], [], []
    ceil_mode = draw(st.booleans())
    for _ in range(2):
        k, s = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        p, d = draw(st.integers(0, k // 2)), draw(st.integers(1, 2)) if dilation else 1
        kernel.append(k), stride.append(s), padding.append(p), dil.append(d)
        smallest = 1 if ceil_mode else max(1, d * (k - 1) + 1 - 2 * p)  # ceil mode keeps windows that overhang
        size.append(draw(st.integers(smallest, d * (k - 1) + 4)))
        assume(torch_pooling_output_size(size[-1], k, s, p, d, ceil_mode) >= 1)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + tuple(size)
    params = dict(kernel_size=tuple(kernel), stride=tuple(stride), padding=tuple(padding), ceil_mode=ceil_mode)
    if dilation:
        params["dilation"] = tuple(dil)
    assume(all(inside for _, inside, _ in windows(shape, **params)))  # dilation can skip the input
    return shape, params


# --- max_pool2d -----------------------------------------------------------------------------
@settings(max_examples=75)
@given(pool_case(), st.data())
def test_max_pool_gradient(case, data):
    shape, params = case
    gradcheck(lambda t: F.max_pool2d(t, **params), data.draw(arrays(shape)))


@settings(max_examples=75)
@given(pool_case(), st.data())
def test_max_pool_values_and_ties_go_to_the_first_maximum(case, data):
    shape, params = case
    x = data.draw(arrays(shape)).round()  # integers in [-2, 2]: many ties
    t = L.tensor(x, requires_grad=True)
    y = F.max_pool2d(t, **params)
    y.backward(np.ones(y.shape))
    expected_y, expected_grad = max_pool_reference(x, **params)
    np.testing.assert_array_equal(y.data, expected_y)
    np.testing.assert_array_equal(t.grad, expected_grad)


def test_max_pool_stride_defaults_to_kernel_and_nan_propagates():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = F.max_pool2d(L.tensor(x), 2).data
    np.testing.assert_array_equal(y, [[[[np.nan, 7], [13, 15]]]])


# --- avg_pool2d -----------------------------------------------------------------------------
@settings(max_examples=75)
@given(pool_case(dilation=False), st.booleans(), st.data())
def test_avg_pool_gradient(case, count_include_pad, data):
    shape, params = case
    x = data.draw(arrays(shape))
    gradcheck(lambda t: F.avg_pool2d(t, count_include_pad=count_include_pad, **params), x)


@settings(max_examples=75)
@given(pool_case(dilation=False), st.booleans(), st.data())
def test_avg_pool_values_use_torch_divisors(case, count_include_pad, data):
    shape, params = case
    x = data.draw(arrays(shape))
    y = F.avg_pool2d(L.tensor(x), count_include_pad=count_include_pad, **params).data
    np.testing.assert_allclose(y, avg_pool_reference(x, count_include_pad, **params), rtol=1e-13, atol=1e-15)


def test_avg_pool_divisors_by_hand():
    ones = L.tensor(np.ones((1, 1, 2, 2)))
    with_pad = F.avg_pool2d(ones, 2, stride=1, padding=1).data[0, 0]
    np.testing.assert_array_equal(with_pad, [[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])
    np.testing.assert_array_equal(F.avg_pool2d(ones, 2, 1, 1, count_include_pad=False).data, 1)
    # ceil_mode: the last window [4, 6) of a side of 5 is clipped to one element
    x = L.tensor(np.arange(5.0).reshape(1, 1, 1, 5))
    np.testing.assert_array_equal(F.avg_pool2d(x, (1, 2), ceil_mode=True).data, [[[[0.5, 2.5, 4.0]]]])


# --- adaptive_avg_pool2d --------------------------------------------------------------------
def adaptive_reference(x, out):
    """Mean over rows [floor(i H / out), ceil((i + 1) H / out)) and likewise for columns."""
    h, w = x.shape[2:]
    y = np.zeros(x.shape[:2] + tuple(out))
    for i, j in np.ndindex(*out):
        rows = slice(i * h // out[0], -(-(i + 1) * h // out[0]))
        cols = slice(j * w // out[1], -(-(j + 1) * w // out[1]))
        y[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
    return y


@settings(max_examples=50)
@given(st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 6), st.integers(1, 6)), st.data())
def test_adaptive_avg_pool_gradient_and_windows(shape, data):
    x, out = data.draw(arrays(shape)), data.draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
    gradcheck(lambda t: F.adaptive_avg_pool2d(t, out), x)
    y = F.adaptive_avg_pool2d(L.tensor(x), out)
    np.testing.assert_allclose(y.data, adaptive_reference(x, out), rtol=1e-13, atol=1e-15)


def test_adaptive_avg_pool_by_hand():
    x = L.tensor(np.arange(5.0).reshape(1, 1, 1, 5))
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, (1, 3)).data, [[[[0.5, 2.0, 3.5]]]])
    assert F.adaptive_avg_pool2d(x, (None, 2)).shape == (1, 1, 1, 2)
    assert F.adaptive_avg_pool2d(L.tensor(np.ones((2, 3, 4, 4))), 1).shape == (2, 3, 1, 1)


# --- indices, divisor_override, adaptive max, unbatched --------------------------------------
@settings(max_examples=50)
@given(pool_case(), st.data())
def test_max_pool_indices_are_the_winners_flat_positions(case, data):
    shape, params = case
    x = data.draw(arrays(shape)).round()
    y, indices = F.max_pool2d(L.tensor(x), **params, return_indices=True)
    assert indices.dtype == np.int64 and indices.shape == y.shape
    for (oh, ow), inside, _ in windows(shape, **params):
        values = np.stack([x[:, :, h, w] for h, w in inside], -1)
        h, w = np.array(inside)[values.argmax(-1)].transpose(2, 0, 1)
        np.testing.assert_array_equal(indices[:, :, oh, ow], h * shape[3] + w)


def test_max_pool_indices_by_hand():
    # torch 2.15: max_pool2d(arange(16) as 1x1x4x4, 2, return_indices=True)[1] = [[5, 7], [13, 15]]
    y, indices = F.max_pool2d(L.tensor(np.arange(16.0).reshape(1, 1, 4, 4)), 2, return_indices=True)
    np.testing.assert_array_equal(indices, [[[[5, 7], [13, 15]]]])
    for pool in (F.max_pool2d, F.adaptive_max_pool2d):  # a plain array works as well as a Tensor
        np.testing.assert_array_equal(pool(np.arange(16.0).reshape(1, 1, 4, 4), 2, return_indices=True)[1], indices)
    _, indices = F.max_pool2d(L.tensor(np.arange(9.0).reshape(1, 3, 3)), 2, 1, padding=1, return_indices=True)
    np.testing.assert_array_equal(indices, [[[0, 1, 2, 2], [3, 4, 5, 5], [6, 7, 8, 8], [6, 7, 8, 8]]])


@settings(max_examples=50)
@given(pool_case(dilation=False), st.integers(-3, 7).filter(bool), st.data())
def test_avg_pool_divisor_override_divides_every_window(case, divisor, data):
    shape, params = case
    x = data.draw(arrays(shape))
    y = F.avg_pool2d(L.tensor(x), **params, divisor_override=divisor)
    sums = np.zeros(pooled_shape(shape, **params))
    for (oh, ow), inside, _ in windows(shape, **params):
        sums[:, :, oh, ow] = sum(x[:, :, i, j] for i, j in inside)
    np.testing.assert_allclose(y.data, sums / divisor, rtol=1e-12, atol=1e-12)
    gradcheck(lambda t: F.avg_pool2d(t, **params, divisor_override=divisor), x)


def adaptive_max_reference(x, out):
    """Each adaptive window's maximum and flat index, scanning as torch: first maximum, last NaN."""
    (h, w), y = x.shape[2:], np.zeros(x.shape[:2] + out)
    indices = np.zeros(y.shape, dtype=np.int64)
    for n, c, p, q in np.ndindex(*y.shape):
        rows = range(p * h // out[0], -(-(p + 1) * h // out[0]))
        cols = range(q * w // out[1], -(-(q + 1) * w // out[1]))
        best, where = -np.inf, None
        for r in rows:
            for col in cols:
                if x[n, c, r, col] > best or np.isnan(x[n, c, r, col]) or where is None:
                    best, where = x[n, c, r, col], r * w + col
        y[n, c, p, q], indices[n, c, p, q] = best, where
    return y, indices


@settings(max_examples=50)
@given(st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 7), st.integers(1, 7)),
       st.tuples(st.integers(1, 5), st.integers(1, 5)), st.booleans(), st.data())
def test_adaptive_max_pool_windows_indices_and_gradient(shape, out, with_nan, data):
    x = data.draw(arrays(shape)).round()
    if with_nan:
        x.flat[data.draw(st.integers(0, x.size - 1))] = np.nan
    y, indices = F.adaptive_max_pool2d(L.tensor(x), out, return_indices=True)
    expected_y, expected_indices = adaptive_max_reference(x, out)
    np.testing.assert_array_equal(y.data, expected_y)
    np.testing.assert_array_equal(indices, expected_indices)
    if not with_nan:
        gradcheck(lambda t: F.adaptive_max_pool2d(t, out), data.draw(arrays(shape)))


def test_adaptive_max_pool_by_hand():
    # torch 2.15 on [[1, 5, 2, 5, 0]] to width 3, windows [0, 2), [1, 4), [3, 5):
    # values [5, 5, 5], indices [1, 1, 3] (first maximum), gradient [0, 2, 0, 1, 0]
    x = L.tensor(np.array([[[[1.0, 5, 2, 5, 0]]]]), requires_grad=True)
    y, indices = F.adaptive_max_pool2d(x, (1, 3), return_indices=True)
    np.testing.assert_array_equal(y.data.ravel(), [5, 5, 5])
    np.testing.assert_array_equal(indices.ravel(), [1, 1, 3])
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(x.grad.ravel(), [0, 2, 0, 1, 0])


@pytest.mark.parametrize("pool", [
    lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True),
    lambda t: F.avg_pool2d(t, 2, divisor_override=3),
    lambda t: F.adaptive_avg_pool2d(t, (2, 3)),
    lambda t: F.adaptive_max_pool2d(t, (3, 2)),
])
def test_unbatched_input_is_a_batch_of_one(pool):
    x = np.random.default_rng(0).standard_normal((3, 5, 6))
    np.testing.assert_array_equal(pool(L.tensor(x)).data, pool(L.tensor(x[None])).data[0])
    gradcheck(pool, x)


def test_pooling_modules_pass_the_new_options():
    x = L.tensor(np.arange(16.0).reshape(1, 4, 4))
    y, indices = nn.MaxPool2d(2, return_indices=True)(x)
    np.testing.assert_array_equal(indices, [[[5, 7], [13, 15]]])
    np.testing.assert_array_equal(nn.AvgPool2d(2, divisor_override=2)(x).data, [[[5, 9], [21, 25]]])
    y, indices = nn.AdaptiveMaxPool2d(1, return_indices=True)(x)
    assert y.data.ravel() == [15] and indices.ravel() == [15]


# --- all ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pool",
    [
        lambda t: F.max_pool2d(t, 3, 2, 1, dilation=(1, 2), ceil_mode=True),
        lambda t: F.avg_pool2d(t, (3, 2), 2, (1, 0), ceil_mode=True, count_include_pad=False),
        lambda t: F.adaptive_avg_pool2d(t, (3, 4)),
        lambda t: F.adaptive_max_pool2d(t, (3, 4)),
    ],
)
def test_float32_matches_float64(pool):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    assert_float32_matches_float64(pool, x, atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: F.max_pool2d(x, 0), "kernel_size must be"),
        (lambda x: F.max_pool2d(x, 2, stride=0), "stride must be"),
        (lambda x: F.avg_pool2d(x, 2, padding=-1), "padding must be"),
        (lambda x: F.max_pool2d(x, 2, dilation=0), "dilation must be"),
        (lambda x: F.max_pool2d(x, 3, padding=2), "at most half"),
        (lambda x: F.avg_pool2d(x, 6), "too small"),
        (lambda x: F.max_pool2d(x[0, 0], 2), r"\(N, C, H, W\)"),
        (lambda x: F.adaptive_avg_pool2d(x[0, 0], 2), r"\(N, C, H, W\)"),
        (lambda x: F.adaptive_max_pool2d(x[0, 0], 2), r"\(N, C, H, W\)"),
        (lambda x: F.adaptive_max_pool2d(x, (2, -1)), "output_size must be"),
        (lambda x: F.avg_pool2d(x, 2, divisor_override=0), "divisor_override must be"),
        (lambda x: F.avg_pool2d(x, 2, divisor_override=1.5), "divisor_override must be"),
        (lambda x: F.adaptive_avg_pool2d(x, (0, 2)), "output_size must be"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call(L.tensor(np.ones((1, 2, 5, 5))))


@pytest.mark.parametrize("size, kernel, stride, expected_max, expected_avg", [
    ((3, 3), 4, 2, [[8.0]], [[4.0]]),  # torch 2.15: the window overhangs the input
    ((1, 2), 2, 2, [[1.0]], [[0.5]]),
])
def test_ceil_mode_keeps_windows_that_start_inside_the_input_as_torch(size, kernel, stride, expected_max, expected_avg):
    x = L.tensor(np.arange(float(np.prod(size))).reshape(1, 1, *size))
    np.testing.assert_array_equal(F.max_pool2d(x, kernel, stride, ceil_mode=True).data[0, 0], expected_max)
    np.testing.assert_array_equal(F.avg_pool2d(x, kernel, stride, ceil_mode=True).data[0, 0], expected_avg)
