"""Elementwise ops (specs/elementwise.md): VJPs, values, subgradients, float32 paths."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from helpers import gradcheck
from strategies import arrays, shapes

# name -> (op, NumPy reference, low, high): inputs drawn in [low, high]
UNARY = {
    "neg": (F.neg, np.negative, -2.0, 2.0),
    "exp": (F.exp, np.exp, -2.0, 2.0),
    "log": (F.log, np.log, 0.5, 3.0),
    "sqrt": (F.sqrt, np.sqrt, 0.5, 3.0),
    "abs": (F.abs, np.abs, -2.0, 2.0),
}
BINARY = {
    "add": (F.add, np.add),
    "sub": (F.sub, np.subtract),
    "mul": (F.mul, np.multiply),
    "div": (F.div, np.divide),
}


@settings(max_examples=30)
@given(st.sampled_from(sorted(UNARY)), shapes(max_dims=3, max_side=4), st.data())
def test_unary_gradients(name, shape, data):
    op, _, low, high = UNARY[name]
    gradcheck(op, data.draw(arrays(shape, low=low, high=high)))


@settings(max_examples=30)
@given(st.sampled_from(sorted(BINARY)), shapes(max_dims=3, max_side=4), st.data())
def test_binary_gradients(name, shape, data):
    op, _ = BINARY[name]
    gradcheck(op, data.draw(arrays(shape)), data.draw(arrays(shape, low=0.5, high=2.0)))


@settings(max_examples=30)
@given(st.sampled_from([-2, -1, 0, 1, 2, 3, 0.5, 1.5, -0.5]), shapes(max_dims=3, max_side=4), st.data())
def test_pow_gradient(p, shape, data):
    gradcheck(lambda x: F.pow(x, p), data.draw(arrays(shape, low=0.5, high=2.0)))


@settings(max_examples=30)
@given(
    st.one_of(st.none(), st.floats(-1.5, 0.0)),
    st.one_of(st.none(), st.floats(0.0, 1.5)),
    shapes(max_dims=3, max_side=4),
    st.data(),
)
def test_clamp_gradient(lo, hi, shape, data):
    if lo is None and hi is None:
        lo = 0.0
    gradcheck(lambda x: F.clamp(x, lo, hi), data.draw(arrays(shape)))


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_values(name):
    op, reference, low, high = UNARY[name]
    x = np.random.default_rng(0).uniform(low, high, (3, 4))
    np.testing.assert_array_equal(op(L.tensor(x)).data, reference(x))


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_values(name):
    op, reference = BINARY[name]
    a, b = np.random.default_rng(1).uniform(0.5, 2.0, (2, 3, 4))
    np.testing.assert_array_equal(op(L.tensor(a), L.tensor(b)).data, reference(a, b))


def test_pow_of_negative_bases_with_integer_exponents():
    x = L.tensor(np.array([-2.0, -0.5, 1.5]), requires_grad=True)
    (x**3).sum().backward()
    np.testing.assert_allclose(x.grad, 3 * x.data**2)


def test_subgradients_at_the_kinks_follow_torch():
    x = L.tensor(np.array([-1.0, 0.0, 1.0, 2.0]), requires_grad=True)
    F.abs(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [-1, 0, 1, 1])  # d|x|/dx = 0 at 0
    x.grad = None
    F.clamp(x, 0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 0, 0])  # torch 2.15: 0 at the bounds (2.5: 1)
    y = L.tensor(np.array([-0.5, 0.0, 0.5]), requires_grad=True)
    F.clamp(y, -0.5, 0.5).sum().backward()
    np.testing.assert_array_equal(y.grad, [0, 1, 0])  # the issue's case, torch 2.15's value
    x.grad = None
    F.pow(x, 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 0, 0])  # no 0 * inf at x = 0


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: (a * b + a / b - b).exp().log(),
        lambda a, b: (a.abs() + b).sqrt() ** 1.5 - (-a).clamp(-0.5, 0.5),
    ],
)
def test_float32_matches_float64(fn):
    rng = np.random.default_rng(2)
    inputs = [rng.uniform(-2, 2, (3, 4)), rng.uniform(0.5, 2, (4,))]
    results = {}
    for dtype in (np.float32, np.float64):
        ts = [L.tensor(a.astype(dtype), requires_grad=True) for a in inputs]
        y = fn(*ts)
        y.backward(np.ones(y.shape, dtype))
        assert y.dtype == dtype and all(t.grad.dtype == dtype for t in ts)
        results[dtype] = [y.data] + [t.grad for t in ts]
    for a32, a64 in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise():
    x = L.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        F.clamp(x)
    with pytest.raises(TypeError, match="exponent must be a number"):
        F.pow(x, x)
    with pytest.raises(ValueError, match="broadcast"):
        F.add(L.tensor(np.ones((2, 3))), L.tensor(np.ones(4)))
    with pytest.raises(TypeError, match="expected a Tensor"):
        F.mul(x, "2")
