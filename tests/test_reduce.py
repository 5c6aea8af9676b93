"""Reductions (specs/reduce.md)."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from helpers import gradcheck
from strategies import arrays, shapes


def dims(ndim):
    """None, one (possibly negative) axis, or a tuple of distinct axes."""
    return st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
    )


def count(shape, dim):
    axes = range(len(shape)) if dim is None else [dim] if isinstance(dim, int) else dim
    return int(np.prod([shape[a] for a in axes]))


@settings(max_examples=60)
@given(st.sampled_from(["sum", "mean", "amax"]), shapes(max_dims=3, max_side=4), st.booleans(), st.data())
def test_reduction_gradients(name, shape, keepdim, data):
    dim = data.draw(dims(len(shape)))
    op = getattr(F, name)
    gradcheck(lambda x: op(x, dim, keepdim), data.draw(arrays(shape)))


@settings(max_examples=40)
@given(shapes(max_dims=3, max_side=4), st.booleans(), st.sampled_from([0, 1]), st.data())
def test_var_gradient(shape, keepdim, correction, data):
    dim = data.draw(dims(len(shape)))
    assume(count(shape, dim) > correction)
    gradcheck(lambda x: F.var(x, dim, keepdim, correction), data.draw(arrays(shape)))


@pytest.mark.parametrize("dim", [None, 0, -1, (0, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_values_match_numpy(dim, keepdim):
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    t = L.tensor(x)
    np.testing.assert_allclose(t.sum(dim, keepdim).data, x.sum(dim, keepdims=keepdim), rtol=1e-14)
    np.testing.assert_allclose(t.mean(dim, keepdim).data, x.mean(dim, keepdims=keepdim), rtol=1e-14)
    np.testing.assert_array_equal(t.amax(dim, keepdim).data, x.max(dim, keepdims=keepdim))
    np.testing.assert_allclose(t.var(dim, keepdim).data, x.var(dim, ddof=1, keepdims=keepdim), rtol=1e-13)
    np.testing.assert_allclose(F.var(t, dim, keepdim, 0).data, x.var(dim, keepdims=keepdim), rtol=1e-13)


def test_amax_ties_share_the_gradient():
    x = L.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.amax(1).backward(np.array([1.0, 3.0]))
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1, 1, 1]])


def test_float32_matches_float64():
    x = np.random.default_rng(1).standard_normal((3, 4))
    results = []
    for dtype in (np.float32, np.float64):
        t = L.tensor(x.astype(dtype), requires_grad=True)
        y = t.sum(0) + t.mean(0) + t.amax(0) + t.var(0) + F.var(t, 0, correction=0)
        y.sum().backward()
        assert y.dtype == t.grad.dtype == dtype
        results.append((y.data, t.grad))
    for a32, a64 in zip(*results):
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", [F.sum, F.mean, F.amax, F.var])
@pytest.mark.parametrize("dim", [2, -3, (0, 5)])
def test_dim_out_of_range_raises(op, dim):
    with pytest.raises(ValueError, match="out of range"):
        op(L.tensor(np.ones((2, 3))), dim)
