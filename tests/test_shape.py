"""Shape ops (specs/shape.md): views, indexing, concatenation, padding."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from helpers import gradcheck
from strategies import arrays, shapes


@settings(max_examples=40)
@given(shapes(max_dims=4, max_side=3), st.data())
def test_reshape_permute_transpose_gradients(shape, data):
    x = data.draw(arrays(shape))
    ndim = len(shape)
    order = data.draw(st.permutations(range(ndim)))
    d0, d1 = data.draw(st.integers(-ndim, ndim - 1)), data.draw(st.integers(-ndim, ndim - 1))
    gradcheck(lambda t: F.reshape(t, shape[::-1]), x)
    gradcheck(lambda t: F.reshape(t, -1, 1), x)
    gradcheck(lambda t: F.permute(t, order), x)
    gradcheck(lambda t: F.transpose(t, d0, d1), x)


@settings(max_examples=30)
@given(shapes(max_dims=3, max_side=4), st.data())
def test_flatten_squeeze_unsqueeze_gradients(shape, data):
    x = data.draw(arrays(shape))
    start = data.draw(st.integers(0, len(shape) - 1))
    end = data.draw(st.integers(start, len(shape) - 1))
    dim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    gradcheck(lambda t: F.flatten(t, start, end), x)
    gradcheck(lambda t: F.squeeze(F.unsqueeze(t, dim)), x)


@st.composite
def basic_index(draw, shape):
    """A tuple of slices with drawn bounds and steps (negative too), or an int, per axis."""
    index = []
    for n in shape:
        if draw(st.booleans()):
            index.append(draw(st.integers(-n, n - 1)))
        else:
            bounds = st.one_of(st.none(), st.integers(-n, n))
            index.append(slice(draw(bounds), draw(bounds), draw(st.sampled_from([None, 1, 2, -1, -2]))))
    return tuple(index)


@settings(max_examples=40)
@given(shapes(max_dims=3, max_side=4), st.data())
def test_getitem_gradients(shape, data):
    x = data.draw(arrays(shape))
    index = data.draw(basic_index(shape))
    rows = np.array(data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=6)))
    gradcheck(lambda t: t[index], x)
    gradcheck(lambda t: t[rows], x)


def test_getitem_values_and_repeated_indices_add_up():
    x = L.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    y = x[np.array([0, 2, 0]), 1:]
    np.testing.assert_array_equal(y.data, x.data[[0, 2, 0], 1:])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 2, 2, 2], [0, 0, 0, 0], [0, 1, 1, 1]])


@settings(max_examples=30)
@given(shapes(max_dims=3, max_side=3), st.lists(st.integers(1, 3), min_size=1, max_size=3), st.data())
def test_cat_and_stack_gradients(shape, sizes, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for n in sizes:
        part_shape = list(shape)
        part_shape[dim] = n
        parts.append(data.draw(arrays(part_shape)))
    same = [data.draw(arrays(shape)) for _ in sizes]
    gradcheck(lambda *ts: F.cat(list(ts), dim), *parts)
    gradcheck(lambda *ts: F.stack(list(ts), dim), *same)


def test_cat_and_stack_values():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0, 12.0).reshape(2, 3)
    ta, tb = L.tensor(a), L.tensor(b)
    np.testing.assert_array_equal(F.cat([ta, tb], 1).data, np.concatenate([a, b], 1))
    np.testing.assert_array_equal(F.stack([ta, tb], -1).data, np.stack([a, b], -1))


@st.composite
def pad_case(draw):
    """(shape, pad, mode) within torch's rules: any widths (negative ones crop) for constant; for
    the other modes, 1-3 padded dims of an input with one or two more dims, reflect widths below
    the size, circular ones at most the size."""
    mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    if mode == "constant":
        shape = draw(shapes(min_dims=1, max_dims=3, max_side=3))
        pairs = draw(st.integers(1, len(shape)))
    else:
        pairs = draw(st.integers(1, 2))
        shape = draw(shapes(min_dims=pairs + 1, max_dims=pairs + 2, min_side=1, max_side=4))
    pad = []
    for k in range(pairs):
        size = shape[-1 - k]
        top = {"constant": 2, "reflect": size - 1, "replicate": 3, "circular": size}[mode]
        widths = [draw(st.integers(-(size - 1) // 2 if mode != "constant" else -size // 2, top)) for _ in range(2)]
        assume(size + sum(widths) >= 0)
        pad += widths
    return shape, tuple(pad), mode


def pad_reference(x, pad, mode, value):
    """Crop the negative widths, pad the positive ones with np.pad (crop first for circular,
    which wraps what cropping leaves; the others only read near the side they pad)."""
    numpy_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    pairs = [(0, 0)] * (x.ndim - len(pad) // 2) + [(pad[i], pad[i + 1]) for i in reversed(range(0, len(pad), 2))]
    crop = tuple(slice(max(-b, 0), n - max(-a, 0)) for (b, a), n in zip(pairs, x.shape))
    grow = [(max(b, 0), max(a, 0)) for b, a in pairs]
    extra = dict(constant_values=value) if mode == "constant" else {}
    if mode == "circular":
        return np.pad(x[crop], grow, mode=numpy_mode)
    padded = np.pad(x, grow, mode=numpy_mode, **extra)
    return padded[tuple(slice(max(-b, 0), s - max(-a, 0)) for (b, a), s in zip(pairs, padded.shape))]


@settings(max_examples=80, deadline=None)
@given(pad_case(), st.data())
def test_pad_every_mode_and_negative_width(case, data):
    shape, pad, mode = case
    x = data.draw(arrays(shape))
    value = data.draw(st.floats(-1, 1))
    y = F.pad(L.tensor(x), pad, mode=mode, value=value).data
    np.testing.assert_array_equal(y, pad_reference(x, pad, mode, value))
    gradcheck(lambda t: F.pad(t, pad, mode=mode, value=value), x)


def test_pad_modes_by_hand_as_torch():
    x = L.tensor(np.arange(5.0).reshape(1, 1, 5))
    assert F.pad(x, (2, 1), mode="reflect").data.ravel().tolist() == [2, 1, 0, 1, 2, 3, 4, 3]
    assert F.pad(x, (2, 1), mode="replicate").data.ravel().tolist() == [0, 0, 0, 1, 2, 3, 4, 4]
    assert F.pad(x, (2, 1), mode="circular").data.ravel().tolist() == [3, 4, 0, 1, 2, 3, 4, 0]
    assert F.pad(x, (-1, 2)).data.ravel().tolist() == [1, 2, 3, 4, 0, 0]
    # torch 2.15 wraps what cropping leaves: (-2, 1) -> [2, 3, 4, 2]
    assert F.pad(x, (-2, 1), mode="circular").data.ravel().tolist() == [2, 3, 4, 2]
    # where torch 2.15 returns uninitialised memory (pad 4, crop 2), lance-ref the periodic extension
    assert F.pad(x, (4, -2), mode="circular").data.ravel().tolist() == [2, 0, 1, 2, 0, 1, 2]


def test_pad_follows_torch_argument_order():
    x = np.arange(6.0).reshape(1, 2, 3)
    y = F.pad(L.tensor(x), (1, 2, 0, 1), value=-1.0).data  # (left, right, top, bottom)
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (0, 1), (1, 2)), constant_values=-1.0))


@settings(max_examples=30)
@given(shapes(max_dims=3, max_side=3), st.data())
def test_broadcast_to_gradient(shape, data):
    target = (2,) + tuple(n if data.draw(st.booleans()) else 1 for n in shape)
    source = tuple(1 if n == 1 else n for n in target[1:])
    gradcheck(lambda t: F.broadcast_to(t, target), data.draw(arrays(source)))


def test_values_match_numpy():
    x = np.arange(24.0).reshape(2, 3, 4)
    t = L.tensor(x)
    np.testing.assert_array_equal(t.reshape(4, -1).data, x.reshape(4, -1))
    np.testing.assert_array_equal(t.permute(2, 0, 1).data, x.transpose(2, 0, 1))
    np.testing.assert_array_equal(t.transpose(0, -1).data, x.swapaxes(0, -1))
    np.testing.assert_array_equal(t.flatten(1).data, x.reshape(2, 12))
    assert t.unsqueeze(-1).shape == (2, 3, 4, 1) and t.unsqueeze(1).squeeze(1).shape == (2, 3, 4)
    np.testing.assert_array_equal(F.broadcast_to(t[:, :1], x.shape).data, np.broadcast_to(x[:, :1], x.shape))


def test_shape_ops_save_nothing():
    x = L.tensor(np.ones((2, 3)), requires_grad=True)
    outputs = [x.reshape(3, 2), x.permute(1, 0), x[0], F.cat([x, x]), F.pad(x, (1, 1))]
    outputs.append(F.broadcast_to(x, (4, 2, 3)))
    assert all(y._node.saved == () for y in outputs)


def test_dtype_is_kept():
    x = L.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = F.pad(F.cat([x, x], 0).permute(1, 0)[1:], (1, 0), value=2.0).reshape(-1)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == np.float32


def test_bad_arguments_raise():
    x = L.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="invalid for an input of shape"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="pairs"):
        F.pad(x, (1, 2, 3))
    with pytest.raises(ValueError, match="crops more than the 3 elements"):
        F.pad(x, (-2, -2))
    with pytest.raises(ValueError, match="mode must be one of"):
        F.pad(x, (1, 1), mode="symmetric")
    with pytest.raises(ValueError, match="reflect padding must be smaller than the dim"):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(ValueError, match="circular padding may wrap at most once"):
        F.pad(x, (4, 0), mode="circular")
    with pytest.raises(ValueError, match="reflect padding of 1 dims needs an input with 2 or 3 dims"):
        F.pad(L.tensor(np.ones(3)), (1, 1), mode="reflect")
    with pytest.raises(ValueError, match="at least one"):
        F.cat([])
    with pytest.raises(ValueError):
        F.cat([x, L.tensor(np.ones((2, 4)))], 0)
