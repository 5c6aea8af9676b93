"""The ledger counts exactly the buffers that backward keeps, each once."""

import tracemalloc

import numpy as np
import pytest

import lance_ref.functional as F
from lance_ref import Tensor, memory, no_grad
from lance_ref.autograd import owner_scope
from lance_ref import kernels
from lance_ref.kernels import set_workspace_bytes
from lance_ref.nn import Module, Sequential
from helpers import run_python


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
    relu_bytes = 4 * 3 * 8 * 8 * 8  # relu's output, saved by conv2 as its input
    mask_bytes = 4 * 3 * 8 * 8 // 8  # relu keeps one bit per element
    assert ledger.bytes() == x_bytes + relu_bytes + mask_bytes
    assert ledger.by_layer() == {"conv1": x_bytes, "act": mask_bytes, "conv2": relu_bytes}
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


# --- what each op keeps, at its natural size (specs/memory.md) -------------------------------
def kept_bytes(output):
    return memory.ledger(output).bytes(kind=None)


@pytest.mark.parametrize("op", [F.relu, F.relu6, lambda x: F.leaky_relu(x, 0.1), lambda x: F.dropout(x, 0.3)])
@pytest.mark.parametrize("n", [1, 8, 13, 1000])
def test_masked_activations_keep_one_bit_per_element(op, n):
    x = Tensor(np.random.default_rng(n).standard_normal(n).astype(np.float32) * 4, requires_grad=True)
    assert kept_bytes(op(x).sum()) == -(-n // 8)


def test_frozen_eval_batch_norm_keeps_only_its_scale():
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 5, 5)), requires_grad=True)
    weight, bias = Tensor(np.full(3, 2.0)), Tensor(np.zeros(3))  # frozen affine parameters
    y = F.batch_norm(x, np.zeros(3), np.ones(3), weight, bias, training=False)
    assert [r.shape for r in memory.ledger(y.sum()).records] == [(3,)]
    assert kept_bytes(y.sum()) == 3 * 8


def test_max_pool_keeps_argmax_taps_in_the_smallest_type():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)), requires_grad=True)
    (record,) = memory.ledger(F.max_pool2d(x, 2).sum()).records
    assert record.dtype == "uint8" and record.nbytes == 2 * 3 * 4 * 4


def test_an_op_whose_inputs_need_no_gradient_keeps_nothing():
    x = Tensor(np.ones((2, 3, 4, 4)))  # nothing requires grad: no node at all
    assert F.relu(F.conv2d(x, Tensor(np.ones((2, 3, 3, 3))))).is_leaf


def test_the_graph_keeps_only_saved_arrays_alive():
    """Between forward and backward the process holds the ledger's arrays, not every activation:
    nodes do not keep their inputs' tensors (specs/memory.md#graph)."""
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((64, 64)), requires_grad=True)
    x = rng.standard_normal((1024, 64))  # allocated before tracing starts

    def forward():
        h = F.linear(Tensor(x), w)  # saves x
        for _ in range(8):
            h = F.relu(h * 2.0)  # keeps a mask: the products and outputs are freed
        return F.linear(h, w).sum()  # saves its input

    tracemalloc.start()
    try:
        loss = forward()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    kept = memory.ledger(loss, [w]).bytes()
    assert kept == 2 * x.nbytes + 8 * (x.size // 8 + 8)  # the linears' inputs; masks and 2.0 per loop
    assert kept - x.nbytes <= held <= kept - x.nbytes + 64 * 1024  # and the graph's small objects


# --- measured memory ----------------------------------------------------------------------------
MIB = 2**20


def test_traced_peak_counts_the_arrays_a_call_holds_at_once():
    def two_at_once():
        a = np.ones(MIB // 8)
        b = np.ones(MIB // 8)
        return float(a[0] + b[0])

    result, peak = memory.traced_peak(two_at_once)
    assert result == 2.0 and 2 * MIB <= peak < 2 * MIB + 64 * 1024


class Doubled(Module):
    def forward(self, x):
        return x * 2


def test_a_sequential_frees_each_intermediate_output_even_when_nested():
    """A nested Sequential must not hold its input until its last child returns."""
    chain = Sequential(Doubled(), Sequential(Doubled(), Sequential(Doubled(), Doubled())), Doubled())
    x = Tensor(np.ones(1 << 18, dtype=np.float32))  # 1 MiB
    with no_grad():
        y, peak = memory.traced_peak(lambda: chain(x))
    assert np.all(y.data == 32)
    assert peak < 2.1 * x.data.nbytes  # one layer's input and output at a time


def test_backward_frees_an_output_gradient_before_summing_its_input_gradients():
    """z = relu(2 x) + x: when mul's gradient for x meets the one pending from the shortcut,
    mul's own output gradient is already gone (as in a residual block's backward)."""
    x = Tensor(np.ones(1 << 18, dtype=np.float32), requires_grad=True)  # 1 MiB
    z = F.relu(x * 2) + x
    _, peak = memory.traced_peak(lambda: z.backward(np.ones(z.shape, np.float32)))
    assert np.all(x.grad == 3)
    # the shortcut's pending gradient, mul's input gradient and their sum; then x.grad's copy
    assert peak < 3.2 * x.data.nbytes


def test_depthwise_conv_forward_holds_little_more_than_its_output():
    x = Tensor(np.random.default_rng(0).standard_normal((32, 24, 32, 32)).astype(np.float32))
    w = Tensor(np.random.default_rng(1).standard_normal((24, 1, 3, 3)).astype(np.float32))
    y, peak = memory.traced_peak(lambda: F.conv2d(x, w, padding=1, groups=24))
    assert peak <= 1.1 * y.data.nbytes


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_transients_stay_within_the_workspace_and_outputs(stride):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((32, 16, 24, 24)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), requires_grad=True)
    budget = MIB  # the whole batch's unfolding is 10.6 MiB
    # Rust's implicit GEMM forms no unfolding: its transient is a zero-padded chunk of samples
    transient = budget // 16 if kernels.implicit_unfolding() else budget
    previous = set_workspace_bytes(budget)
    try:
        y, peak = memory.traced_peak(lambda: F.conv2d(x, w, padding=1, stride=stride))
        assert peak <= transient + y.data.nbytes
        grad = np.ones(y.shape, np.float32)
        _, peak = memory.traced_peak(lambda: y.backward(grad))
        # dx (pending, then copied into x.grad), dW, and the workspace
        assert peak <= budget + 2 * x.data.nbytes + 2 * w.data.nbytes
    finally:
        set_workspace_bytes(previous)


def test_persistent_bytes_counts_parameters_buffers_gradients_and_optimiser_state():
    from lance_ref.nn import BatchNorm2d, Conv2d, Sequential
    from lance_ref.optim import SGD

    model = Sequential(Conv2d(3, 4, 3, bias=False), BatchNorm2d(4))
    model[0].requires_grad_(False)
    optimizer = SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    parameters = (4 * 3 * 3 * 3 + 2 * 4) * 4
    buffers = 2 * 4 * 4 + 8  # running mean and variance, num_batches_tracked
    assert memory.persistent_bytes(model, optimizer) == parameters + buffers + 2 * 4 * 4  # the BN grads
    for p in model.parameters():
        if p.requires_grad:
            optimizer.state[p] = {"momentum_buffer": np.zeros_like(p.data)}
    assert memory.persistent_bytes(model, optimizer) == parameters + buffers + 2 * (2 * 4 * 4)  # grads, momentum


# --- the workspace budget ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -1, 1.5, "lots", True, None])
def test_a_bad_workspace_budget_is_a_clear_error(value):
    with pytest.raises(ValueError, match="workspace_bytes must be a positive integer number of bytes"):
        set_workspace_bytes(value)


def test_a_bad_workspace_variable_fails_at_import():
    result = run_python("import lance_ref", {"LANCE_REF_WORKSPACE_BYTES": "32MB"})
    assert result.returncode != 0
    assert "LANCE_REF_WORKSPACE_BYTES must be a positive integer number of bytes, got '32MB'" in result.stderr


def test_the_workspace_variable_sets_the_budget():
    result = run_python("from lance_ref import kernels; print(kernels.workspace_bytes())", {"LANCE_REF_WORKSPACE_BYTES": "4096"})
    assert result.stdout.strip() == "4096", result.stderr
