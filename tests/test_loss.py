"""Softmax and losses (specs/loss.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from helpers import arrays, assert_float32_matches_float64, gradcheck, shapes

REDUCE = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}


def log_softmax_reference(x, dim):
    """The textbook formula, fine for moderate logits."""
    return np.log(np.exp(x) / np.exp(x).sum(axis=dim, keepdims=True))


@st.composite
def logits_and_target(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    target = draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))
    return draw(arrays((n, c), low=-3.0, high=3.0)), np.array(target)


@settings(max_examples=40)
@given(shapes(max_dims=3, max_side=4), st.data())
def test_log_softmax_and_softmax(shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(arrays(shape))
    y = F.log_softmax(L.tensor(x), dim)
    np.testing.assert_allclose(y.data, log_softmax_reference(x, dim), rtol=1e-12, atol=1e-15)
    gradcheck(lambda t: F.log_softmax(t, dim), x)
    gradcheck(lambda t: F.softmax(t, dim), x)


@settings(max_examples=50)
@given(logits_and_target(), st.sampled_from(sorted(REDUCE)), st.floats(0.0, 1.0))
def test_cross_entropy_gradient(case, reduction, smoothing):
    logits, target = case
    gradcheck(lambda t: F.cross_entropy(t, target, reduction, smoothing), logits)


@settings(max_examples=30)
@given(shapes(max_dims=3, max_side=4), st.sampled_from(sorted(REDUCE)), st.data())
def test_mse_loss_gradient(shape, reduction, data):
    gradcheck(lambda a, b: F.mse_loss(a, b, reduction), data.draw(arrays(shape)), data.draw(arrays(shape)))


@settings(max_examples=50)
@given(logits_and_target(), st.sampled_from(sorted(REDUCE)), st.floats(0.0, 1.0))
def test_cross_entropy_is_torch_formula(case, reduction, smoothing):
    logits, target = case
    logp = log_softmax_reference(logits, 1)
    nll = -logp[np.arange(len(target)), target]
    smooth = -logp.mean(axis=1)  # -sum_c logp / C
    expected = REDUCE[reduction]((1 - smoothing) * nll + smoothing * smooth)
    got = F.cross_entropy(L.tensor(logits), target, reduction, smoothing).data
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_cross_entropy_by_hand():
    zeros = L.tensor(np.zeros((3, 4)))
    for smoothing in (0.0, 0.3):  # uniform logits: log C whatever the target and smoothing
        loss = F.cross_entropy(zeros, [0, 3, 1], label_smoothing=smoothing)
        np.testing.assert_allclose(loss.data, np.log(4))
    logits = L.tensor(np.array([[np.log(3.0), 0.0]]), requires_grad=True)  # p = (3/4, 1/4)
    loss = F.cross_entropy(logits, np.array([0]))
    np.testing.assert_allclose(loss.data, -np.log(0.75))
    loss.backward()
    np.testing.assert_allclose(logits.grad, [[-0.25, 0.25]])  # p - onehot


def test_log_softmax_is_stable_and_softmax_sums_to_one():
    x = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    with np.errstate(over="raise", invalid="raise"):
        y = F.log_softmax(L.tensor(x), 1).data
    np.testing.assert_allclose(y[0], [0.0, -1000.0, -2000.0])
    np.testing.assert_allclose(y[1], x[1] - np.log(np.exp(x[1]).sum()), rtol=1e-14)
    np.testing.assert_allclose(F.softmax(L.tensor(x), 1).data.sum(1), 1.0, rtol=1e-14)


def test_mse_loss_values():
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    for reduction, reduce in REDUCE.items():
        np.testing.assert_allclose(F.mse_loss(L.tensor(a), L.tensor(b), reduction).data, reduce((a - b) ** 2))


@pytest.mark.parametrize(
    "loss",
    [
        lambda x: F.cross_entropy(x, np.array([2, 0, 1]), label_smoothing=0.1),
        lambda x: F.cross_entropy(x, np.array([2, 0, 1]), reduction="none"),
        lambda x: F.mse_loss(x, x.detach() * 0.5, "sum"),
        lambda x: F.softmax(x, 0),
    ],
)
def test_float32_matches_float64(loss):
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert_float32_matches_float64(loss, x, atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: F.cross_entropy(x, np.array([0, 1]), reduction="avg"), "reduction must be one of"),
        (lambda x: F.cross_entropy(x, np.array([0, 3])), r"target values must lie in \[0, 3\)"),
        (lambda x: F.cross_entropy(x, np.array([0, -1])), "target values must lie"),
        (lambda x: F.cross_entropy(x, np.array([0.0, 1.0])), "integer class indices"),
        (lambda x: F.cross_entropy(x, np.array([0, 1, 2])), "integer class indices"),
        (lambda x: F.cross_entropy(x[0], np.array([0])), r"logits of shape \(N, C\)"),
        (lambda x: F.cross_entropy(x, np.array([0, 1]), label_smoothing=1.5), "label_smoothing"),
        (lambda x: F.mse_loss(x, x[0]), "same shape"),
        (lambda x: F.mse_loss(x, x, reduction="max"), "reduction must be one of"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call(L.tensor(np.ones((2, 3))))
