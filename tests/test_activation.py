"""Activations and dropout (specs/activation.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from helpers import assert_float32_matches_float64, gradcheck
from strategies import arrays, shapes

# name -> (op, NumPy reference, input range)
ACTIVATIONS = {
    "relu": (F.relu, lambda x: np.maximum(x, 0), 2.0),
    "relu6": (F.relu6, lambda x: np.minimum(np.maximum(x, 0), 6), 8.0),
    "leaky_relu": (F.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), 2.0),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), 4.0),
    "tanh": (F.tanh, np.tanh, 4.0),
}


@settings(max_examples=30)
@given(st.sampled_from(sorted(ACTIVATIONS)), shapes(max_dims=3, max_side=4), st.data())
def test_activation_gradients(name, shape, data):
    op, _, bound = ACTIVATIONS[name]
    gradcheck(op, data.draw(arrays(shape, low=-bound, high=bound)))


@settings(max_examples=25)
@given(st.floats(0.0, 0.5), shapes(max_dims=3, max_side=4), st.data())
def test_leaky_relu_gradient_for_any_slope(slope, shape, data):
    gradcheck(lambda x: F.leaky_relu(x, slope), data.draw(arrays(shape)))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_values(name):
    op, reference, bound = ACTIVATIONS[name]
    x = np.random.default_rng(0).uniform(-bound, bound, (3, 5))
    np.testing.assert_allclose(op(L.tensor(x)).data, reference(x), rtol=1e-15, atol=1e-15)


def test_relu_and_relu6_keep_a_negative_zero_as_torch():
    for op in (F.relu, F.relu6):
        assert np.signbit(op(L.tensor(np.array([-0.0, 0.0]))).data).tolist() == [True, False]


def test_subgradients_at_the_kinks_follow_torch():
    x = np.array([-1.0, 0.0, 3.0, 6.0, 7.0])
    expected = {"relu": [0, 0, 1, 1, 1], "relu6": [0, 0, 1, 0, 0], "leaky_relu": [0.01, 0.01, 1, 1, 1]}
    for name, grad in expected.items():
        t = L.tensor(x, requires_grad=True)
        ACTIVATIONS[name][0](t).sum().backward()
        np.testing.assert_array_equal(t.grad, grad, err_msg=name)


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise", invalid="raise"):
        y = F.sigmoid(L.tensor(np.array([-1000.0, 0.0, 1000.0])))
    np.testing.assert_array_equal(y.data, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_float32_matches_float64(name):
    op, _, bound = ACTIVATIONS[name]
    x = np.random.default_rng(1).uniform(-bound, bound, (4, 5))
    assert_float32_matches_float64(op, x, atol=1e-7)


# --- dropout --------------------------------------------------------------------------------
@settings(max_examples=25)
@given(st.floats(0.05, 0.9), shapes(max_dims=3, max_side=4), st.integers(0, 2**32 - 1), st.data())
def test_dropout_gradient(p, shape, seed, data):
    gradcheck(lambda x: F.dropout(x, p, generator=np.random.default_rng(seed)), data.draw(arrays(shape)))


def test_dropout_is_deterministic_for_a_seed():
    x = L.tensor(np.ones((8, 8)))
    L.manual_seed(7)
    first = F.dropout(x, 0.5).data
    L.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, first)
    a, b = (F.dropout(x, 0.5, generator=np.random.default_rng(3)).data for _ in range(2))
    np.testing.assert_array_equal(a, b)


def test_dropout_is_the_identity_for_p_zero_and_in_eval():
    x = L.tensor(np.ones(4), requires_grad=True)
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.5, training=False) is x


def test_dropout_scales_kept_elements_and_their_gradient():
    p = 0.25
    x = L.tensor(np.random.default_rng(0).uniform(1, 2, (20, 20)), requires_grad=True)
    y = F.dropout(x, p, generator=np.random.default_rng(1))
    kept = y.data != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(y.data[kept], x.data[kept] / (1 - p))
    y.sum().backward()
    np.testing.assert_allclose(x.grad, kept / (1 - p))


def test_dropout_p_one_zeroes_everything():
    x = L.tensor(np.ones(4), requires_grad=True)
    y = F.dropout(x, 1.0)
    y.sum().backward()
    np.testing.assert_array_equal(y.data, 0)
    np.testing.assert_array_equal(x.grad, 0)


def test_dropout_preserves_the_expectation():
    p, n = 0.3, 200_000
    y = F.dropout(L.tensor(np.ones(n)), p, generator=np.random.default_rng(5)).data
    assert abs(y.mean() - 1) < 4 * np.sqrt(p / (1 - p) / n)
    assert abs((y == 0).mean() - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_dropout_float32_mask_and_scale_stay_float32():
    y = F.dropout(L.tensor(np.ones(6, np.float32)), 0.5, generator=np.random.default_rng(0))
    assert y.dtype == np.float32
    assert set(np.unique(y.data)) <= {0.0, 2.0}


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(L.tensor(np.ones(3)), p)
