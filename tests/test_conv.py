"""2-D convolution (specs/conv.md): geometry, im2col/col2im, conv2d and its VJPs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from lance_ref import nn
from lance_ref.functional.conv import ConvGeometry, col2im, im2col
from lance_ref.kernels.reference import output_size
from lance_ref.kernels import reference, set_workspace_bytes
from helpers import gradcheck
from strategies import arrays, conv_case, windows


def torch_output_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv2d_reference(x, w, b, stride, padding, dilation, groups):
    """A direct sum over explicit windows, one output position and group at a time."""
    (n, _, h, wd), (o, cg, kh, kw) = x.shape, w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    oh = torch_output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = torch_output_size(wd, kw, stride[1], padding[1], dilation[1])
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows = i * stride[0] + dilation[0] * np.arange(kh)
            cols = j * stride[1] + dilation[1] * np.arange(kw)
            patch = xp[:, :, rows[:, None], cols[None, :]]
            for g in range(groups):
                y[:, g * og : (g + 1) * og, i, j] = np.einsum(
                    "ncij,ocij->no", patch[:, g * cg : (g + 1) * cg], w[g * og : (g + 1) * og]
                )
    return y if b is None else y + b[None, :, None, None]


# --- geometry -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [((7, 3, 2, 1, 1), 4), ((5, 3, 1, 0, 2), 1), ((4, 3, 1, 0, 2), 0), ((8, 2, 3, 0, 1), 3)],
)
def test_output_size_is_torch_formula(args, expected):
    assert output_size(*args) == expected


@pytest.mark.parametrize(
    "args, expected",
    [((5, 2, 2, 0, 1), 3), ((6, 3, 2, 1, 1), 4), ((5, 2, 2, 1, 1), 3), ((4, 2, 2, 0, 1), 2)],
)
def test_output_size_ceil_mode_drops_a_window_starting_in_the_right_padding(args, expected):
    assert output_size(*args, ceil_mode=True) == expected


# --- im2col ---------------------------------------------------------------------------------
@settings(max_examples=50)
@given(windows(), st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.data())
def test_im2col_layout_and_col2im_is_its_adjoint(geo, n, groups, per_group, data):
    kernel, stride, padding, dilation, size = geo
    out_hw = tuple(torch_output_size(*a) for a in zip(size, kernel, stride, padding, dilation))
    x = data.draw(arrays((n, groups * per_group) + size))
    windows = ConvGeometry(kernel, stride, padding, dilation, groups, out_hw)
    cols = im2col(x, windows)
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    for g, b, i, j, u, v, c in np.ndindex(groups, n, *out_hw, *kernel, per_group):
        row, col = (b * out_hw[0] + i) * out_hw[1] + j, (u * kernel[1] + v) * per_group + c
        pixel = xp[b, g * per_group + c, stride[0] * i + dilation[0] * u, stride[1] * j + dilation[1] * v]
        assert cols[g, row, col] == pixel
    dcols = data.draw(arrays(cols.shape))
    back = col2im(dcols, x.shape, windows)
    np.testing.assert_allclose((cols * dcols).sum(), (x * back).sum(), rtol=1e-12, atol=1e-12)


# --- conv2d ---------------------------------------------------------------------------------
@settings(max_examples=100)
@given(conv_case(), st.booleans(), st.data())
def test_conv2d_gradients(case, with_bias, data):
    x_shape, w_shape, params = case
    x, w = data.draw(arrays(x_shape)), data.draw(arrays(w_shape))
    if with_bias:
        gradcheck(lambda *t: F.conv2d(*t, **params), x, w, data.draw(arrays(w_shape[:1])))
    else:
        gradcheck(lambda *t: F.conv2d(*t, **params), x, w)


@settings(max_examples=100)
@given(conv_case(), st.booleans(), st.data())
def test_conv2d_matches_direct_sum(case, with_bias, data):
    x_shape, w_shape, params = case
    x, w = data.draw(arrays(x_shape)), data.draw(arrays(w_shape))
    b = data.draw(arrays(w_shape[:1])) if with_bias else None
    y = F.conv2d(L.tensor(x), L.tensor(w), None if b is None else L.tensor(b), **params)
    np.testing.assert_allclose(y.data, conv2d_reference(x, w, b, **params), rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.booleans(), st.data())
def test_pointwise_conv_is_a_gemm_per_sample(n, c, o, h, w, with_bias, data):
    x, weight = data.draw(arrays((n, c, h, w))), data.draw(arrays((o, c, 1, 1)))
    b = data.draw(arrays((o,))) if with_bias else None
    y = F.conv2d(L.tensor(x), L.tensor(weight), None if b is None else L.tensor(b))
    np.testing.assert_allclose(y.data, conv2d_reference(x, weight, b, (1, 1), (0, 0), (1, 1), 1), rtol=1e-12, atol=1e-12)
    gradcheck(lambda *t: F.conv2d(*t), x, weight, *([] if b is None else [b]))


@pytest.mark.parametrize("side", [11, 12])
def test_pointwise_weight_gradient_on_both_sides_of_the_one_gemm_rule(side):
    # 121 pixels a sample: one GEMM over all samples; 144: one per sample (specs/conv.md#pointwise)
    rng = np.random.default_rng(side)
    x, weight = rng.standard_normal((3, 2, side, side)), rng.standard_normal((4, 2, 1, 1))
    gradcheck(lambda *t: F.conv2d(*t), x, weight, wrt=[1])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.data())
def test_weight_gradient_alone_takes_the_narrower_unfolding(c, k, data):
    # dx is not needed (the images of a first layer) and O > C: dW from im2col(x), not im2col(dY);
    # with one input channel, from the taps' dot products (specs/conv.md#conv2d, Routes)
    x, weight = data.draw(arrays((2, c, 5, 4))), data.draw(arrays((c + 3, c, k, k)))
    gradcheck(lambda *t: F.conv2d(*t, padding=1), x, weight, wrt=[1])


def test_conv2d_hand_example():
    x = L.tensor(np.arange(16.0).reshape(1, 1, 4, 4))
    y = F.conv2d(x, L.tensor(np.ones((1, 1, 2, 2))), L.tensor(np.array([1.0])), stride=2)
    np.testing.assert_array_equal(y.data, [[[[11, 19], [43, 51]]]])


def test_conv2d_depthwise_keeps_channels_apart():
    x = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))])[None]
    w = np.stack([np.ones((1, 2, 2)), -np.ones((1, 2, 2))])
    y = F.conv2d(L.tensor(x), L.tensor(w), groups=2)
    np.testing.assert_array_equal(y.data[0, 0], 4)
    np.testing.assert_array_equal(y.data[0, 1], -8)


def test_float32_matches_float64():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)
    params = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    results = []
    for dtype in (np.float32, np.float64):
        ts = [L.tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b)]
        y = F.conv2d(*ts, **params)
        y.backward(np.ones(y.shape, dtype))
        assert y.dtype == dtype and all(t.grad.dtype == dtype for t in ts)
        results.append([y.data] + [t.grad for t in ts])
    for a32, a64 in zip(*results):
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-5 * np.abs(a64).max())


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, message",
    [
        ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=0), "stride must be"),
        ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=(1, -1)), "stride must be"),
        ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding=-1), "padding must be"),
        ((1, 2, 5, 5), (3, 2, 3, 3), dict(dilation=0), "dilation must be"),
        ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding="full"), "padding must be"),
        ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding="same", stride=2), "not supported for strided"),
        ((1, 2, 5, 5), (3, 2, 3, 3), dict(groups=0), "groups must be"),
        ((1, 4, 5, 5), (3, 2, 3, 3), dict(groups=2), "groups=2"),
        ((1, 3, 5, 5), (3, 1, 3, 3), dict(groups=2), "groups=2"),
        ((1, 2, 5, 5), (3, 3, 3, 3), dict(), "groups=1"),
        ((5, 5), (3, 2, 3, 3), dict(), "input must have shape"),
        ((1, 2, 5, 5), (3, 2, 3), dict(), "weight must have shape"),
        ((1, 2, 2, 2), (3, 2, 3, 3), dict(), "smaller than the dilated kernel"),
        ((1, 2, 5, 5), (3, 2, 3, 3), dict(bias=np.ones(2)), "bias must have shape"),
    ],
)
def test_bad_arguments_raise(x_shape, w_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.conv2d(L.tensor(np.ones(x_shape)), L.tensor(np.ones(w_shape)), **kwargs)


# --- string padding and unbatched inputs (specs/conv.md#padding, specs/shape.md#unbatched) ---
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 2), st.integers(1, 2), st.data())
def test_same_padding_keeps_the_size_with_the_odd_element_after(kh, kw, dh, dw, data):
    x, w = data.draw(arrays((2, 3, 6, 5))), data.draw(arrays((4, 3, kh, kw)))
    y = F.conv2d(L.tensor(x), L.tensor(w), padding="same", dilation=(dh, dw))
    (top, bottom), (left, right) = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in ((kh, dh), (kw, dw))]
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    expected = conv2d_reference(xp, w, None, (1, 1), (0, 0), (dh, dw), 1)
    assert y.shape == (2, 4, 6, 5)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    gradcheck(lambda *t: F.conv2d(*t, padding="same", dilation=(dh, dw)), x[:1, :2], w[:2, :2], atol=1e-7)


def test_same_padding_of_an_even_kernel_is_torchs():
    # torch 2.15: conv2d(arange(5) as 1x1x1x5, ones 1x1x1x4, padding='same') = [3, 6, 10, 9, 7]
    y = F.conv2d(L.tensor(np.arange(5.0).reshape(1, 1, 1, 5)), L.tensor(np.ones((1, 1, 1, 4))), padding="same")
    np.testing.assert_array_equal(y.data.ravel(), [3, 6, 10, 9, 7])
    valid = F.conv2d(L.tensor(np.arange(5.0).reshape(1, 1, 1, 5)), L.tensor(np.ones((1, 1, 1, 4))), padding="valid")
    np.testing.assert_array_equal(valid.data.ravel(), [6, 10])


@settings(max_examples=20, deadline=None)
@given(conv_case(), st.data())
def test_unbatched_input_is_a_batch_of_one(case, data):
    (_, c, h, w), w_shape, params = case
    x, weight = data.draw(arrays((c, h, w))), data.draw(arrays(w_shape))
    y = F.conv2d(L.tensor(x), L.tensor(weight), **params)
    np.testing.assert_array_equal(y.data, F.conv2d(L.tensor(x[None]), L.tensor(weight), **params).data[0])
    gradcheck(lambda *t: F.conv2d(*t, **params), x, weight)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv2d_module_padding_modes_pad_first(mode):
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode=mode, dtype=np.float64)
    x = rng.standard_normal((2, 2, 5, 6))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)), mode={"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode])
    expected = conv2d_reference(xp, conv.weight.data, conv.bias.data, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(conv(L.tensor(x)).data, expected, rtol=1e-12, atol=1e-12)
    assert ("padding_mode" in repr(conv)) == (mode != "zeros")


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["zeros", "reflect", "replicate", "circular"]), st.integers(0, 2), st.integers(0, 2), st.data())
def test_conv2d_module_padding_modes_gradients(mode, ph, pw, data):
    conv = nn.Conv2d(2, 2, (3, 2), padding=(ph, pw), padding_mode=mode, dtype=np.float64)
    x = data.draw(arrays((1, 2, 4, 5)))
    gradcheck(conv, x)  # the input's gradient through the module's padding
    conv.zero_grad()
    xt = L.tensor(x)
    y = conv(xt)
    g = data.draw(arrays(y.shape))
    y.backward(g)
    weight = L.tensor(conv.weight.data, requires_grad=True)
    F.conv2d(F.pad(xt, (pw, pw, ph, ph), "constant" if mode == "zeros" else mode), weight, conv.bias).backward(g)
    np.testing.assert_allclose(conv.weight.grad, weight.grad, rtol=1e-12, atol=1e-12)


def test_conv2d_module_string_padding_and_its_limits():
    same = nn.Conv2d(2, 3, 3, padding="same")
    assert same.padding == (1, 1) and same.input_padding is None and "padding='same'" in repr(same)
    even = nn.Conv2d(2, 3, 4, padding="same")
    assert even.input_padding == (1, 2, 1, 2) and even(L.tensor(np.ones((1, 2, 5, 5), np.float32))).shape == (1, 3, 5, 5)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(2, 3, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="not supported for strided"):
        nn.Conv2d(2, 3, 3, stride=2, padding="same")
    from lance_ref.compress.layers import CompressedConv2d
    from lance_ref.selection.layers import SelectiveConv2d

    for wrap in (CompressedConv2d, SelectiveConv2d):
        with pytest.raises(ValueError, match="needs a conv with symmetric zero padding.*padding_mode='reflect'"):
            wrap(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"))
    CompressedConv2d(same)  # odd-kernel 'same' is symmetric zero padding


# --- the direct route and the workspace chunks (specs/conv.md#direct, specs/memory.md#workspace) ---
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3), st.integers(0, 3), st.integers(1, 3), st.integers(0, 4))
def test_tap_span_is_the_set_of_outputs_reading_inside_the_input(size, out, stride, padding, dilation, index):
    inside = [o for o in range(out) if 0 <= stride * o + dilation * index - padding < size]
    span = reference.tap_span(size, out, stride, padding, dilation, index)
    if not inside:
        assert span is None
    else:
        outputs, inputs = span
        assert list(range(out))[outputs] == inside
        assert list(range(size))[inputs] == [stride * o + dilation * index - padding for o in inside]


@settings(max_examples=60, deadline=None)
@given(conv_case(), st.integers(1, 4), st.data())
def test_chunked_conv_equals_the_whole_batch_at_once(case, samples, data):
    """Any workspace budget, from one sample per chunk to the whole batch, gives the same
    forward and gradients up to float rounding."""
    x_shape, w_shape, params = case
    x_shape = (samples,) + x_shape[1:]
    x, w, g = data.draw(arrays(x_shape)), data.draw(arrays(w_shape)), None
    results = []
    for budget in (1, data.draw(st.integers(1, 4096)), 2**40):
        previous = set_workspace_bytes(budget)
        try:
            tx, tw = L.tensor(x, requires_grad=True), L.tensor(w, requires_grad=True)
            y = F.conv2d(tx, tw, **params)
            g = np.random.default_rng(0).standard_normal(y.shape) if g is None else g
            y.backward(g)
        finally:
            set_workspace_bytes(previous)
        results.append((y.data, tx.grad, tw.grad))
    for chunked in results[:-1]:
        for got, want in zip(chunked, results[-1]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 1])
def test_gradient_on_wide_planes_with_few_channels(padding):
    # stride 1, 3-wide kernel rows, W' a multiple of 16, few channels: on the Rust backend dW
    # takes the correlated route (specs/conv.md#correlated-weight-gradient)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 18 - 2 * padding))
    w = rng.standard_normal((5, 3, 2, 3))
    gradcheck(lambda *t: F.conv2d(*t, padding=padding), x, w)
