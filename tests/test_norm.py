"""Batch normalisation (specs/norm.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from helpers import gradcheck
from strategies import arrays


@st.composite
def bn_input_shape(draw):
    """(N, C) or (N, C, H, W) with more than one value per channel."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (1, 2), (2, 2), (2, 1)]))
    if n * int(np.prod(spatial)) < 2:
        n = 2
    return (n, c) + spatial


def reference(x, mean, var, weight, bias, eps=1e-5):
    view = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(view)) / np.sqrt(var.reshape(view) + eps)
    return y * weight.reshape(view) + bias.reshape(view)


@settings(max_examples=50)
@given(bn_input_shape(), st.booleans(), st.data())
def test_training_gradient(shape, affine, data):
    x = data.draw(arrays(shape))
    if affine:
        w, b = data.draw(arrays(shape[1:2])), data.draw(arrays(shape[1:2]))
        gradcheck(lambda *t: F.batch_norm(t[0], None, None, t[1], t[2], training=True), x, w, b)
    else:
        gradcheck(lambda t: F.batch_norm(t, None, None, training=True), x)


@settings(max_examples=50)
@given(bn_input_shape(), st.booleans(), st.data())
def test_eval_gradient(shape, affine, data):
    x = data.draw(arrays(shape))
    mean, var = data.draw(arrays(shape[1:2])), data.draw(arrays(shape[1:2], low=0.5, high=2.0))
    if affine:
        w, b = data.draw(arrays(shape[1:2])), data.draw(arrays(shape[1:2]))
        gradcheck(lambda *t: F.batch_norm(t[0], mean, var, t[1], t[2]), x, w, b)
    else:
        gradcheck(lambda t: F.batch_norm(t, mean, var), x)


@settings(max_examples=50)
@given(bn_input_shape(), st.floats(0.0, 1.0), st.data())
def test_training_values_and_running_update(shape, momentum, data):
    x = data.draw(arrays(shape))
    w, b = data.draw(arrays(shape[1:2])), data.draw(arrays(shape[1:2]))
    old_mean, old_var = data.draw(arrays(shape[1:2])), data.draw(arrays(shape[1:2], low=0.5, high=2.0))
    running_mean, running_var = old_mean.copy(), old_var.copy()
    axes = (0,) + tuple(range(2, x.ndim))
    y = F.batch_norm(L.tensor(x), running_mean, running_var, L.tensor(w), L.tensor(b), True, momentum)
    np.testing.assert_allclose(y.data, reference(x, x.mean(axes), x.var(axes), w, b), rtol=1e-10, atol=1e-10)
    mean, unbiased = x.mean(axes), x.var(axes, ddof=1)
    np.testing.assert_allclose(running_mean, (1 - momentum) * old_mean + momentum * mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(running_var, (1 - momentum) * old_var + momentum * unbiased, rtol=1e-12, atol=1e-14)


def test_running_update_by_hand():
    running_mean, running_var = np.zeros(1), np.ones(1)
    with L.no_grad():  # the running statistics are updated in training mode even without a graph
        y = F.batch_norm(L.tensor(np.array([[1.0], [3.0]])), running_mean, running_var, training=True)
    np.testing.assert_allclose(y.data, [[-1 / np.sqrt(1 + 1e-5)], [1 / np.sqrt(1 + 1e-5)]])
    np.testing.assert_allclose(running_mean, [0.2])  # 0.9 * 0 + 0.1 * 2
    np.testing.assert_allclose(running_var, [1.1])  # 0.9 * 1 + 0.1 * 2 (unbiased variance)


def test_eval_uses_running_statistics_and_leaves_them_alone():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    mean, var = np.array([0.5, -1.0, 0.0]), np.array([2.0, 0.5, 1.0])
    w, b = np.array([1.0, 2.0, -1.0]), np.ones(3)
    y = F.batch_norm(L.tensor(x), mean, var, L.tensor(w), L.tensor(b), eps=1e-3)
    np.testing.assert_allclose(y.data, reference(x, mean, var, w, b, eps=1e-3), rtol=1e-13)
    np.testing.assert_array_equal(mean, [0.5, -1.0, 0.0])
    np.testing.assert_array_equal(var, [2.0, 0.5, 1.0])


@pytest.mark.parametrize("training", [True, False])
def test_float32_matches_float64(training):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal(3), rng.standard_normal(3)
    upstream = rng.standard_normal(x.shape)
    results = []
    for dtype in (np.float32, np.float64):
        stats = [np.zeros(3, dtype), np.ones(3, dtype)]
        ts = [L.tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b)]
        y = F.batch_norm(ts[0], *stats, ts[1], ts[2], training=training)
        y.backward(upstream.astype(dtype))
        assert y.dtype == dtype and all(t.grad.dtype == dtype and s.dtype == dtype for t, s in zip(ts, stats))
        results.append([y.data] + [t.grad for t in ts] + stats)
    for a32, a64 in zip(*results):
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "shape, kwargs, error, message",
    [
        ((4,), dict(training=True), ValueError, r"\(N, C, \*\)"),
        ((1, 3), dict(training=True), ValueError, "more than 1 value per channel"),
        ((2, 3), dict(running_mean=np.zeros(2), training=True), ValueError, "running_mean must have shape"),
        ((2, 3), dict(running_mean=np.zeros(3)), ValueError, "eval mode needs"),
        ((2, 3), dict(bias=L.tensor(np.ones(3)), training=True), ValueError, "needs a weight"),
        ((2, 3), dict(running_var=np.ones(3, np.float32), training=True), TypeError, "dtype"),
    ],
)
def test_bad_arguments_raise(shape, kwargs, error, message):
    args = dict(running_mean=None, running_var=None) | kwargs
    with pytest.raises(error, match=message):
        F.batch_norm(L.tensor(np.ones(shape)), **args)
