"""Binary layers, quantisers, bit-packed latents and latent replay with a CWR* head."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lance_ref as lr
from lance_ref import functional as F
from lance_ref.binary import (
    QuantConv2d, QuantLinear, binary_weight, pack_signs, quantize, quantize_array, quantize_grad,
    set_precision, sign, unpack_signs,
)
from lance_ref.nn import build_model
from lance_ref.optim import SGD

from helpers import interrupted_and_resumed
from strategies import arrays



# --- quantisers ------------------------------------------------------------------------------
@given(st.integers(1, 32), st.floats(-1e3, 1e3), st.floats(1e-3, 1e3), st.integers(1, 50), st.integers(0, 2**16))
def test_quantizer_round_trip_is_within_half_a_step(bits, low, width, size, seed):
    x = np.random.default_rng(seed).uniform(low, low + width, size)
    q = quantize_array(x, bits)
    step = (x.max() - x.min()) / (2.0**bits - 1)
    assert np.all(np.abs(q - x) <= step / 2 + 1e-12 * max(1.0, np.abs(x).max()))
    levels = np.round((q - x.min()) / step) if step > 0 else np.zeros_like(q)
    assert levels.min() >= 0 and levels.max() <= 2.0**bits - 1
    if bits <= 8 and size > 1:
        assert len(np.unique(q)) <= 2**bits


def test_quantizer_keeps_the_extremes_and_constant_tensors():
    x = np.array([-1.0, 0.1, 0.5, 2.0], dtype=np.float32)
    q = quantize_array(x, 2)  # levels -1, 0, 1, 2
    assert q.dtype == np.float32 and q.tolist() == [-1.0, 0.0, 1.0, 2.0]
    assert quantize_array(np.full(3, 0.7), 4).tolist() == [0.7] * 3


def test_quantize_passes_the_gradient_straight_through_and_quantize_grad_quantises_it():
    x = lr.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    v = np.array([0.0, 0.1, 0.26, 0.9, 1.0])
    (quantize(x, 1) * lr.tensor(v)).sum().backward()
    assert x.grad.tolist() == v.tolist()
    x.grad = None
    (quantize_grad(x, 1) * lr.tensor(v)).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # two levels: 0 and 1


@given(st.data())
def test_sign_and_quantisers_over_shapes_dtypes_and_layouts(data):
    """sign: +-1 and the |x| <= 1 gradient mask; quantize: its levels forward, the gradient
    straight through; quantize_grad: identity forward, the gradient on its levels; any layout."""
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    bits = data.draw(st.integers(1, 16))
    x_values = data.draw(arrays(shape, dtype))
    v = np.random.default_rng(0).standard_normal(shape).astype(dtype)

    def forward_and_grad(op):
        x = lr.tensor(x_values, requires_grad=True)
        y = op(x)
        (y * lr.tensor(v)).sum().backward()
        assert y.dtype == dtype and y.shape == shape and x.grad.dtype == dtype
        return y.data, x.grad

    y, grad = forward_and_grad(sign)
    np.testing.assert_array_equal(y, np.where(x_values >= 0, 1, -1))
    np.testing.assert_array_equal(grad, v * (np.abs(x_values) <= 1))
    y, grad = forward_and_grad(lambda t: quantize(t, bits))
    np.testing.assert_array_equal(y, quantize_array(np.ascontiguousarray(x_values), bits))
    np.testing.assert_array_equal(grad, v)
    y, grad = forward_and_grad(lambda t: quantize_grad(t, bits))
    np.testing.assert_array_equal(y, x_values)
    np.testing.assert_array_equal(grad, quantize_array(v, bits))


@pytest.mark.parametrize("bits", [0, 33, 8.0, True])
def test_bit_widths_outside_1_to_32_are_clear_errors(bits):
    with pytest.raises(ValueError, match="bits must be an int in 1..32"):
        quantize_array(np.ones(2), bits)
    with pytest.raises(ValueError, match="forward_bits must be an int in 1..32"):
        set_precision(build_model("binary-cnn", 10, 1, 28), bits, 16)


def test_quantizer_rejects_nan():
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_array(np.array([0.0, np.nan]), 8)


# --- binary layers ---------------------------------------------------------------------------
def test_sign_and_its_straight_through_gradient():
    x = lr.tensor(np.array([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]), requires_grad=True)
    y = sign(x)
    assert y.data.tolist() == [-1, -1, 1, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 0]  # passes where |x| <= 1


def test_binary_weights_are_signs_scaled_by_the_mean_magnitude():
    w = lr.tensor(np.array([[1.0, -3.0], [0.5, 0.5]]), requires_grad=True)
    wb = binary_weight(w)
    assert wb.data.tolist() == [[2.0, -2.0], [0.5, 0.5]]
    v = np.array([[1.0, 2.0], [3.0, -1.0]])
    (wb * lr.tensor(v)).sum().backward()
    # d/dW_ij = v_ij alpha_i 1{|W_ij| <= 1} (sign's STE) + sign(W_ij) / n sum_k v_ik sign(W_ik) (alpha's path)
    assert w.grad.tolist() == [[2 - 0.5, 0 + 0.5], [1.5 + 1, -0.5 + 1]]


def losses_of(model, x, y, bits, steps=5):
    """Losses of `steps` SGD steps at `bits` (None: float), latent weights requantised after each."""
    set_precision(model, bits, bits)
    optimizer = SGD(list(model.parameters()), lr=0.05)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(lr.Tensor(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # the quantised layers re-quantise their weights
        losses.append(loss.item())
    return np.array(losses)


def test_thirty_two_bit_training_matches_float_training():
    """float64, where a 32-bit step is ~1e-10 of a tensor's range. A real-valued quantised net
    follows float training closely. The binary CNN only within 3e-3: its binary convs give
    discrete outputs whose exact ties in max-pooling break differently under perturbations of
    1e-10, and that routes some gradients elsewhere (how many depends on the convolution's
    summation order, which differs between the backends: up to 0.13% after 5 steps here)."""
    from lance_ref.data import load_mnist5k, normalize
    from lance_ref.nn import BatchNorm2d, Flatten, MaxPool2d, ReLU, Sequential

    data = load_mnist5k()
    x, y = normalize(data.images[::50], data.mean, data.std, np.float64), data.labels[::50]

    def real_net():
        lr.manual_seed(0)
        return Sequential(QuantConv2d(1, 8, 3, dtype=np.float64), BatchNorm2d(8, dtype=np.float64), ReLU(), MaxPool2d(2),
                          Flatten(), QuantLinear(8 * 13 * 13, 10, dtype=np.float64))

    def binary_net():
        lr.manual_seed(0)
        return build_model("binary-cnn", 10, 1, 28, dtype=np.float64)

    np.testing.assert_allclose(losses_of(real_net(), x, y, 32), losses_of(real_net(), x, y, None), rtol=1e-8)
    binary_float = losses_of(binary_net(), x, y, None)
    np.testing.assert_allclose(losses_of(binary_net(), x, y, 32), binary_float, rtol=3e-3)
    assert binary_float[-1] < binary_float[0]


def test_quantised_layers_train_on_their_levels():
    layer = QuantLinear(3, 2, binary=False)
    set_precision(layer, 2, 4)
    layer.weight.data[...] = np.array([[0.1, -0.2, 0.3], [0.05, 0.0, -0.3]], dtype=np.float32)
    layer.requantize()
    assert len(np.unique(layer.weight.data)) <= 4
    conv = QuantConv2d(2, 3, 3, binary=True)
    y = conv(lr.Tensor(np.ones((1, 2, 4, 4), dtype=np.float32)))
    assert y.shape == (1, 3, 2, 2)


# --- packing ---------------------------------------------------------------------------------
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 2**16))
def test_packed_signs_unpack_exactly_at_a_thirty_second_of_float32(samples, elements, seed):
    latents = np.random.default_rng(seed).standard_normal((samples, elements)).astype(np.float32)
    packed = pack_signs(latents)
    assert packed.dtype == np.uint8 and packed.shape == (samples, -(-elements // 8))
    # 1 bit per element, padded to whole bytes: exactly 1/32 of float32 when 8 divides it
    assert packed.nbytes * 32 - latents.nbytes == samples * (-elements % 8) * 4
    np.testing.assert_array_equal(unpack_signs(packed, (elements,)), np.where(latents >= 0, 1, -1))


def test_unpack_checks_the_shape():
    with pytest.raises(ValueError, match=r"packed latents must have shape \(N, 2\)"):
        unpack_signs(np.zeros((2, 3), dtype=np.uint8), (4, 4))


# --- latent replay ---------------------------------------------------------------------------
def tiny_binary_net(heads=(4,), **_):
    from lance_ref.binary import Sign
    from lance_ref.nn import BatchNorm2d, Flatten, Sequential

    lr.manual_seed(0)
    return Sequential(dict(
        stem=Sequential(QuantConv2d(1, 4, 3, dtype=np.float64), BatchNorm2d(4, dtype=np.float64)),
        latent=Sign(),
        body=Sequential(QuantConv2d(4, 8, 3, padding=1, binary=True, dtype=np.float64), Flatten()),
        classifier=QuantLinear(8 * 4 * 4, heads[0], dtype=np.float64),
    ))


def run_latent(tmp_path, strategy, monkeypatch, **overrides):
    from test_continual import tiny_scenario

    from lance_ref.experiments.continual import ContinualConfig, run

    monkeypatch.setattr("lance_ref.experiments.continual.load_benchmark", lambda *a, **k: tiny_scenario())
    monkeypatch.setattr("lance_ref.experiments.continual.build_model", lambda name, **options: tiny_binary_net(**options))
    settings = dict(model="binary-cnn", setting="class", epochs=2, batch_size=8, lr=0.05, dtype="float64", latent_replay_size=8)
    return run(ContinualConfig(strategy=strategy, **{**settings, **overrides}), tmp_path, show=False)


def test_binary_latents_replay_exactly_as_float_ones_at_32x_less_memory(tmp_path, monkeypatch):
    binary = run_latent(tmp_path / "binary", "binary-latent-replay", monkeypatch)
    floats = run_latent(tmp_path / "float", "float-latent-replay", monkeypatch)
    # the latent layer is a sign: its +-1 outputs lose nothing at one bit each
    assert binary["accuracy_matrix"] == floats["accuracy_matrix"]
    assert binary["replay_bytes"] * 64 == floats["replay_bytes"] == 8 * 4 * 4 * 4 * 8  # 8 latents of 64 float64
    assert run_latent(tmp_path / "cwr", "cwr", monkeypatch)["replay_bytes"] == 0


def test_latent_replay_resumes_to_the_same_result(tmp_path, monkeypatch):
    whole, resumed = interrupted_and_resumed(
        lambda out, **o: run_latent(out, "binary-latent-replay", monkeypatch, **o), tmp_path, monkeypatch)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["strategy_bytes"] == whole["strategy_bytes"]


def test_front_frozen_after_task_0_and_cwr_consolidation_by_hand():
    from test_continual import tiny_scenario

    from lance_ref.continual import make_strategy
    from lance_ref.continual.loop import normalizer, train_task
    from lance_ref.experiments.continual import ContinualConfig

    scenario, model = tiny_scenario(), tiny_binary_net()
    config = ContinualConfig(strategy="binary-latent-replay", model="binary-cnn", setting="class", epochs=1, batch_size=8,
                             dtype="float64", latent_replay_size=8)
    strategy, normalize = make_strategy(config.strategy, model, scenario, config), normalizer(scenario, "float64")
    train_task(model, strategy, scenario.tasks[0], config, normalize, show=False)
    front = {n: p.data.copy() for n, p in model.named_parameters() if n.startswith("stem")}
    head_after_0 = model.classifier.weight.data.copy()
    train_task(model, strategy, scenario.tasks[1], config, normalize, show=False)
    assert all(np.array_equal(p.data, front[n]) for n, p in model.named_parameters() if n.startswith("stem"))
    task0 = scenario.tasks[0].global_labels(np.arange(2))
    np.testing.assert_array_equal(model.classifier.weight.data[task0], head_after_0[task0])  # consolidated rows kept

    # CWR* by hand: a class seen before (past 12) and trained again on 12 more samples
    task = scenario.tasks[1]
    current = task.global_labels(np.arange(2))
    strategy.past[current] = [12, 0]
    strategy.consolidated["weight"][current] = 1.0
    model.classifier.weight.data[current] = np.array([[3.0] * 128, [1.0] * 128])
    strategy.consolidate(task)
    # trained rows minus their mean (2): +1 and -1; class 0: (1 * sqrt(12/12) + 1) / 2 = 1; class 1: -1 (new)
    np.testing.assert_allclose(model.classifier.weight.data[current], [[1.0] * 128, [-1.0] * 128])
    assert strategy.past[current].tolist() == [24, 12]


@pytest.mark.parametrize("change, message", [
    (dict(latent_layer="block9"), "latent_layer 'block9' is not a child of the model before its head"),
    (dict(latent_layer="classifier"), "latent_layer 'classifier' is not a child of the model before its head"),
    (dict(latent_replay_size=3), "latent_replay_size \\(3\\) must hold a latent of each of the 4 classes"),
    (dict(forward_bits=0), "forward_bits must be an int in 1..32"),
    (dict(backward_bits=64), "backward_bits must be an int in 1..32"),
    (dict(setting="task"), "binary-cnn has one shared head"),
])
def test_latent_replay_bad_input(tmp_path, monkeypatch, change, message):
    with pytest.raises(ValueError, match=message):
        run_latent(tmp_path, "binary-latent-replay", monkeypatch, **change)


def test_binary_latent_replay_on_split_cifar10_from_a_path(tmp_path):
    """32x32x3 images through binary-cnn, from a miniature CIFAR-10 release (20 per task)."""
    from test_continual import write_cifar10_binary

    from lance_ref.experiments.continual import ContinualConfig, run

    write_cifar10_binary(tmp_path)
    config = ContinualConfig(benchmark="split-cifar10", data_path=str(tmp_path), strategy="binary-latent-replay",
                             model="binary-cnn", setting="class", epochs=1, batch_size=10, latent_replay_size=10, seed=3)
    results = run(config, tmp_path / "out", show=False)
    assert len(results["accuracy_matrix"]) == 5
    assert results["replay_bytes"] == 10 * 64 * 8 * 8 // 8  # 10 latents of (64, 8, 8) signs, one bit each
