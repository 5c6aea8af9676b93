"""Softmax and losses (specs/loss.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lance_ref as L
from lance_ref import functional as F
from helpers import assert_float32_matches_float64, gradcheck
from strategies import arrays, shapes

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
    gradcheck(lambda t: F.cross_entropy(t, target, reduction=reduction, label_smoothing=smoothing), logits)


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
    got = F.cross_entropy(L.tensor(logits), target, reduction=reduction, label_smoothing=smoothing).data
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
        (lambda x: F.cross_entropy(x, np.array([0, 3])), r"target values must lie in \[0, 3\) or equal ignore_index \(-100\), got 3"),
        (lambda x: F.cross_entropy(x, np.array([0, -1])), "target values must lie"),
        (lambda x: F.cross_entropy(x, np.array([0.0, 1.0])), "integer class indices of shape"),
        (lambda x: F.cross_entropy(x, np.array([0, 1, 2])), "integer class indices"),
        (lambda x: F.cross_entropy(x.sum(), np.array(0)), r"logits of shape \(N, C, \*\) or \(C,\)"),
        (lambda x: F.cross_entropy(x, np.ones((2, 3)), ignore_index=0), "ignore_index is not supported with probability"),
        (lambda x: F.cross_entropy(x, np.array([0, 1]), weight=np.ones(2)), r"weight must have shape \(3,\)"),
        (lambda x: F.cross_entropy(x, np.array([0, 1]), label_smoothing=1.5), "label_smoothing"),
        (lambda x: F.nll_loss(x, np.array([0, 5])), "target values must lie"),
        (lambda x: F.mse_loss(x, x[0]), "same shape"),
        (lambda x: F.mse_loss(x, x, reduction="max"), "reduction must be one of"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call(L.tensor(np.ones((2, 3))))


def test_float32_weight_for_float64_logits_is_a_type_error():
    with pytest.raises(TypeError, match="weight has dtype float32"):
        F.cross_entropy(L.tensor(np.ones((2, 3))), np.array([0, 1]), weight=np.ones(3, np.float32))


# --- torch's full cross_entropy / nll_loss (specs/loss.md#cross_entropy, #nll_loss) ------------
IGNORE = 7


@st.composite
def loss_case(draw):
    """Logits (C,), (N, C) or (N, C, d1[, d2]) in any layout; targets as class indices (some
    equal to IGNORE) or probabilities; optional class weights; smoothing; reduction."""
    c = draw(st.integers(1, 4))
    shape = draw(st.sampled_from([(c,), (draw(st.integers(1, 3)), c), (2, c, draw(st.integers(1, 3))), (2, c, 2, 2)]))
    x = draw(arrays(shape, low=-3.0, high=3.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    target_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
    probabilities = draw(st.booleans())
    if probabilities:
        t = rng.random(shape)
        t /= t.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)
    else:
        t = np.where(rng.random(target_shape) < 0.25, IGNORE, rng.integers(0, c, target_shape))
    weight = rng.random(c) + 0.5 if draw(st.booleans()) else None
    return x, t, weight, draw(st.sampled_from([0.0, 0.3])), draw(st.sampled_from(sorted(REDUCE))), probabilities


def cross_entropy_reference(x, t, weight, smoothing, reduction, probabilities):
    """torch's definitions, written out with NumPy on (N, C, *) arrays."""
    if x.ndim == 1:
        loss = cross_entropy_reference(x[None], t[None], weight, smoothing, reduction, probabilities)
        return loss[0] if reduction == "none" else loss
    c = x.shape[1]
    logp = log_softmax_reference(x, 1)
    w = np.ones(c) if weight is None else weight
    wc = w.reshape((1, c) + (1,) * (x.ndim - 2))
    if probabilities:
        q = t * (1 - smoothing) + smoothing / c
        losses = -(logp * q * wc).sum(axis=1)
        return losses.mean() if reduction == "mean" else REDUCE[reduction](losses)
    keep = t != IGNORE
    safe = np.where(keep, t, 0)
    picked = np.take_along_axis(logp, safe[:, None], 1)[:, 0]
    nll = np.where(keep, -w[safe] * picked, 0.0)
    smooth = np.where(keep, -(logp * wc).sum(axis=1), 0.0)
    losses = (1 - smoothing) * nll + smoothing / c * smooth
    if reduction == "mean":
        return losses.sum() / np.where(keep, w[safe], 0.0).sum()
    return REDUCE[reduction](losses)


@settings(max_examples=80, deadline=None)
@given(loss_case())
def test_cross_entropy_matches_torchs_definition(case):
    x, t, weight, smoothing, reduction, probabilities = case
    ignore = -100 if probabilities else IGNORE
    with np.errstate(invalid="ignore", divide="ignore"):  # every entry ignored: NaN, as torch
        got = F.cross_entropy(L.tensor(x), t, weight, ignore_index=ignore, reduction=reduction, label_smoothing=smoothing).data
        want = cross_entropy_reference(x, t, weight, smoothing, reduction, probabilities)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(loss_case())
def test_cross_entropy_gradients(case):
    x, t, weight, smoothing, reduction, probabilities = case
    if not probabilities and reduction == "mean" and (t == IGNORE).all():
        return  # the loss is NaN
    ignore = -100 if probabilities else IGNORE
    gradcheck(lambda v: F.cross_entropy(v, t, weight, ignore_index=ignore, reduction=reduction, label_smoothing=smoothing), x)


@settings(max_examples=40, deadline=None)
@given(loss_case())
def test_nll_loss_is_cross_entropy_of_log_probabilities(case):
    x, t, weight, _, reduction, probabilities = case
    if probabilities or (reduction == "mean" and (t == IGNORE).all()):
        return
    logp = F.log_softmax(L.tensor(x), 0 if x.ndim == 1 else 1)
    got = F.nll_loss(logp, t, weight, ignore_index=IGNORE, reduction=reduction).data
    np.testing.assert_allclose(got, F.cross_entropy(L.tensor(x), t, weight, ignore_index=IGNORE, reduction=reduction).data, rtol=1e-13, atol=1e-15)
    gradcheck(lambda v: F.nll_loss(v, t, weight, ignore_index=IGNORE, reduction=reduction), x)


def test_minus_infinity_logits_of_other_classes_as_torch():
    """Masked classes (-inf logits) are fine while the target's own logit is finite: torch 2.15
    gives 0.31607740674710544 here (the smoothed sum would give NaN)."""
    x = L.tensor(np.array([[1, 2, -np.inf, 0.5], [0.3, -np.inf, -np.inf, 2]]), requires_grad=True)
    loss = F.cross_entropy(x, [1, 3])
    assert loss.item() == 0.31607740674710544
    loss.backward()
    assert np.isfinite(x.grad).all() and (x.grad[np.isinf(x.data)] == 0).all()


def test_every_target_ignored_is_nan_with_zero_gradient_as_torch():
    x = L.tensor(np.ones((2, 3)), requires_grad=True)
    loss = F.cross_entropy(x, [5, 5], ignore_index=5, label_smoothing=0.2)
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(x.grad, 0)
