"""The engine (specs/autograd.md): dtypes, broadcasting and the backward pass."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lance_ref as L
from lance_ref import functional as F
from lance_ref.autograd import sum_to_shape
from lance_ref.tensor import Function
from helpers import gradcheck
from strategies import arrays


def leaf(values, dtype=np.float64):
    return L.tensor(np.asarray(values, dtype=dtype), requires_grad=True)


# --- backward -------------------------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [2 + 3, 4 + 3])


def test_tensor_used_twice_gets_both_contributions():
    x = leaf([1.5, -2.0])
    y = x * x
    (y * x + y).sum().backward()  # x^3 + x^2
    np.testing.assert_allclose(x.grad, 3 * x.data**2 + 2 * x.data)


def test_diamond_waits_for_every_consumer():
    x = leaf([0.5, 2.0])
    y = x * 2.0
    (y * y + y * 3.0).sum().backward()  # d/dx = (2y + 3) * 2
    np.testing.assert_allclose(x.grad, (2 * y.data + 3) * 2)


def test_deep_chain_does_not_hit_the_recursion_limit():
    x = leaf([1.0])
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0001**5000])


def test_leaf_without_requires_grad_gets_no_gradient():
    x, c = leaf([1.0, 2.0]), L.tensor(np.array([3.0, 4.0]))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, c.data)


def test_no_grad_records_nothing_and_saves_nothing():
    nodes = []

    class Twice(Function):
        def forward(self, x):
            nodes.append(self)
            self.save(x)
            return 2 * x

    x = leaf([1.0, 2.0])
    with L.no_grad():
        y = Twice.apply(x)
        with L.enable_grad():
            z = Twice.apply(x)
    assert L.is_grad_enabled()
    assert y._node is None and not y.requires_grad and nodes[0].saved == ()
    assert z._node is nodes[1] and nodes[1].saved[0] is x.data


def test_detach_shares_data_and_cuts_the_graph():
    x = leaf([1.0, 2.0])
    d = (x * 2.0).detach()
    assert d.is_leaf and not d.requires_grad
    assert np.shares_memory(x.detach().data, x.data)
    (x * d).sum().backward()
    np.testing.assert_allclose(x.grad, d.data)


def test_backward_releases_saved_arrays_unless_retain_graph():
    x = leaf([1.0, 2.0])
    m = x * x
    y = m.sum()
    y.backward(retain_graph=True)
    assert m._node.saved is not None
    y.backward()
    assert m._node.saved is None
    np.testing.assert_allclose(x.grad, 4 * x.data)
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_backward_on_non_scalar_needs_gradient():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(RuntimeError, match="gradient"):
        y.backward()
    y.backward(np.array([1.0, -1.0]))


def test_gradient_must_match_shape_and_dtype():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(3))
    with pytest.raises(TypeError, match="dtype"):
        y.backward(np.ones(2, np.float32))


def test_backward_without_requires_grad_raises():
    with pytest.raises(RuntimeError, match="require grad"):
        L.tensor([1.0]).backward()


# --- dtypes ---------------------------------------------------------------------------------
def test_float32_is_the_default_and_float64_is_kept():
    assert L.tensor([1.0, 2.0]).dtype == np.float32
    assert L.tensor(3.0).dtype == np.float32
    assert L.tensor(np.ones(2)).dtype == np.float64
    assert L.tensor(np.float64(2.0)).dtype == np.float64
    assert L.tensor([1.0], dtype=np.float64).dtype == np.float64
    assert L.tensor(np.arange(3), dtype=np.float32).dtype == np.float32  # an explicit conversion


@pytest.mark.parametrize("data", [3, [1, 2], np.arange(3), np.ones(2, np.float16), np.ones(2, bool), np.int32(1)])
def test_other_data_dtypes_need_an_explicit_dtype(data):
    """torch keeps integers (and float16) as they are, where lance-ref has float tensors only: an
    error, never a silent conversion."""
    with pytest.raises(TypeError, match="lance-ref tensors are float32 or float64.*pass dtype="):
        L.tensor(data)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64])
def test_other_dtypes_are_rejected(dtype):
    with pytest.raises(TypeError, match="float32 or float64"):
        L.tensor([1.0], dtype=dtype)


@pytest.mark.parametrize("op", [F.add, F.sub, F.mul, F.div, F.matmul])
def test_mixing_float32_and_float64_raises(op):
    a32, a64 = np.ones((2, 2), np.float32), np.ones((2, 2))
    with pytest.raises(TypeError, match="mix float32 and float64"):
        op(L.tensor(a32), L.tensor(a64))
    with pytest.raises(TypeError, match="mix float32 and float64"):
        op(L.tensor(a32), a64)
    with pytest.raises(TypeError, match="mix float32 and float64"):
        op(a64, L.tensor(a32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numbers_adopt_the_tensor_dtype(dtype):
    x = L.tensor(np.ones(2, dtype))
    results = [x + 1, 2.5 * x, x / 3, 1 - x, x * np.float64(2), np.float32(2) * x, x + np.arange(2)]
    results += [x**2, x ** np.float64(0.5), x.clamp(min=np.float64(0.5)), F.leaky_relu(x, np.float64(0.1))]
    assert all(y.dtype == dtype for y in results)


def test_to_casts_and_casts_the_gradient_back():
    x = L.tensor(np.array([1.5, 2.5], np.float32), requires_grad=True)
    y = x.to(np.float64)
    assert y.dtype == np.float64 and x.double().dtype == np.float64
    assert x.to(np.float32) is x and x.float() is x
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, [3.0, 5.0])
    with pytest.raises(TypeError):
        x.to(np.int64)


# --- broadcasting ---------------------------------------------------------------------------
@settings(max_examples=50)
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3), st.data())
def test_sum_to_shape_is_the_adjoint_of_broadcasting(shapes, data):
    shape, target = shapes.input_shapes[0], shapes.result_shape
    u, g = data.draw(arrays(shape)), data.draw(arrays(target))
    reduced = sum_to_shape(g, shape)
    assert reduced.shape == shape
    inner = (np.broadcast_to(u, target) * g).sum()
    np.testing.assert_allclose(inner, (u * reduced).sum(), rtol=1e-12, atol=1e-12)


@settings(max_examples=50)
@given(
    hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
    st.sampled_from([F.add, F.sub, F.mul, F.div]),
    st.data(),
)
def test_broadcast_operands_get_gradients_of_their_own_shape(shapes, op, data):
    a_shape, b_shape = shapes.input_shapes
    gradcheck(op, data.draw(arrays(a_shape)), data.draw(arrays(b_shape, low=0.5, high=2.0)))
