"""Matrix products (specs/linear.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lance_ref as L
from lance_ref import functional as F
from helpers import gradcheck
from strategies import arrays, shapes

sides = st.integers(1, 3)


@settings(max_examples=40)
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=2), sides, sides, sides, st.data())
def test_matmul_gradient_with_broadcast_batches(batches, n, k, m, data):
    a_batch, b_batch = batches.input_shapes
    a, b = data.draw(arrays(a_batch + (n, k))), data.draw(arrays(b_batch + (k, m)))
    gradcheck(F.matmul, a, b)


@settings(max_examples=40)
@given(shapes(min_dims=1, max_dims=3, max_side=3), sides, st.booleans(), st.data())
def test_linear_gradient(lead, out_features, with_bias, data):
    x = data.draw(arrays(lead))
    w = data.draw(arrays((out_features, lead[-1])))
    if with_bias:
        gradcheck(F.linear, x, w, data.draw(arrays((out_features,))))
    else:
        gradcheck(F.linear, x, w)


def test_values_match_einsum():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    y = F.linear(L.tensor(x), L.tensor(w), L.tensor(b))
    np.testing.assert_allclose(y.data, np.einsum("nli,oi->nlo", x, w) + b, rtol=1e-13)
    a, c = rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((3, 4, 2))
    y = L.tensor(a) @ L.tensor(c)
    np.testing.assert_allclose(y.data, np.einsum("bxik,yko->byio", a, c), rtol=1e-13)


def test_linear_saves_only_what_each_gradient_needs():
    x, w = np.ones((2, 3)), np.ones((4, 3))
    only_x = F.linear(L.tensor(x, requires_grad=True), L.tensor(w))
    only_w = F.linear(L.tensor(x), L.tensor(w, requires_grad=True))
    assert only_x._node.saved[0] is w and only_x._node.saved[1] is None
    assert only_w._node.saved[0] is None and only_w._node.saved[1] is x


def test_float32_matches_float64():
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal(shape) for shape in [(2, 3, 4), (5, 4), (5,), (5, 2)]]
    results = []
    for dtype in (np.float32, np.float64):
        x, w, b, m = (L.tensor(a.astype(dtype), requires_grad=True) for a in inputs)
        y = F.linear(x, w, b) @ m
        y.backward(np.ones(y.shape, dtype))
        grads = [t.grad for t in (x, w, b, m)]
        assert all(g.dtype == dtype for g in grads) and y.dtype == dtype
        results.append([y.data] + grads)
    for a32, a64 in zip(*results):
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-5)


def test_bad_shapes_raise():
    x = L.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least 2 dims"):
        F.matmul(x, L.tensor(np.ones(3)))
    with pytest.raises(ValueError, match="inner dims differ"):
        F.matmul(x, L.tensor(np.ones((2, 3))))
    with pytest.raises(ValueError, match="does not match weight"):
        F.linear(x, L.tensor(np.ones((4, 2))))
    with pytest.raises(ValueError, match="bias must have shape"):
        F.linear(x, L.tensor(np.ones((4, 3))), L.tensor(np.ones(3)))
