"""The ledger counts exactly the buffers that backward keeps, each once."""

import numpy as np
import pytest

import lance_ref.functional as F
from lance_ref import Tensor, memory, no_grad
from lance_ref.autograd import owner_scope


def small_graph(x_requires_grad=False):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 2, 8, 8)), requires_grad=x_requires_grad)
    w1 = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    w2 = Tensor(rng.standard_normal((5, 3, 3, 3)), requires_grad=True)
    with owner_scope("conv1"):
        h = F.conv2d(x, w1, padding=1)
    with owner_scope("act"):
        h = F.relu(h)
    with owner_scope("conv2"):
        out = F.conv2d(h, w2)
    return x, (w1, w2), out.mean()


def test_ledger_counts_input_and_shared_activation_once():
    x, _, loss = small_graph()
    ledger = memory.ledger(loss)
    x_bytes = 4 * 2 * 8 * 8 * 8
    relu_bytes = 4 * 3 * 8 * 8 * 8  # saved by relu and by conv2: one buffer
    assert ledger.bytes() == x_bytes + relu_bytes
    assert ledger.by_layer() == {"conv1": x_bytes, "act": relu_bytes, "conv2": relu_bytes}
    assert ledger.bytes(["conv2"]) == relu_bytes
    # conv2 keeps its weight for the input gradient: a parameter, not an activation
    assert ledger.bytes(kind=memory.PARAMETER) == 5 * 3 * 3 * 3 * 8


def test_ledger_charges_the_whole_buffer_a_view_keeps_alive():
    storage = np.ones((10, 3))
    x = Tensor(storage[:2])  # a view: saving it keeps all of `storage` alive
    w = Tensor(np.ones((4, 3)), requires_grad=True)
    loss = F.linear(x, w).sum()
    assert memory.ledger(loss).bytes() == storage.nbytes


def test_frozen_weights_count_as_parameters_when_named():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    frozen = Tensor(rng.standard_normal((4, 3)))
    loss = F.linear(x, frozen).sum()
    assert memory.ledger(loss).bytes() == frozen.data.nbytes  # not known as a parameter
    assert memory.ledger(loss, parameters=[frozen]).bytes() == 0


def test_no_grad_graph_keeps_nothing():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with no_grad():
        y = F.exp(x)
    assert y._node is None and not y.requires_grad


def test_ledger_after_backward_raises():
    _, _, loss = small_graph()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        memory.ledger(loss)
