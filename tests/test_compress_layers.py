"""Compressed layers, the fine-tuning transform, calibration and the `finetune` command."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor, memory, nn
from lance_ref.cli import main
from lance_ref.compress import CompressedConv2d, CompressedLinear, calibrate, prepare_finetune
from helpers import numerical_vjp
from strategies import arrays, grouped_channels


def conv_case(groups=1, seed=0):
    rng = np.random.default_rng(seed)
    conv = nn.Conv2d(4, 6 if groups != 4 else 8, 3, stride=2, padding=1, dilation=1, groups=groups, dtype=np.float64)
    x = rng.standard_normal((5, 4, 7, 6))
    return conv, x


def grads(layer, x):
    x = Tensor(x, requires_grad=True)
    out = layer(x)
    out.backward(np.random.default_rng(1).standard_normal(out.shape))
    return x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_full_rank_hosvd_layer_gives_the_exact_gradients(groups):
    conv, x = conv_case(groups)
    exact = grads(conv, x)
    conv.zero_grad()
    compressed = CompressedConv2d(conv, "hosvd", eps=1.0, mode_set="all")
    for got, want in zip(grads(compressed, x), exact):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["hosvd", "lance"])
def test_ledger_holds_exactly_core_and_factors(method):
    conv, x = conv_case()
    layer = CompressedConv2d(conv, method, eps=0.8, mode_set="all")
    if method == "lance":
        layer.compressor.start_calibration()
        with lance_ref.no_grad():
            layer(Tensor(x))
        layer.compressor.finish_calibration()
    out = layer(Tensor(x, requires_grad=True))
    ledger = memory.ledger(out.sum(), [layer.weight, layer.bias])
    node = out._node
    core, *factors = node.saved_arrays[1:]
    closed_form = (core.size + sum(u.size for u in factors if u is not None)) * 8
    assert ledger.bytes() == closed_form
    assert closed_form < x.nbytes
    assert {r.op for r in ledger.records if r.kind == memory.ACTIVATION} == {"CompressedConv2dFunction"}


def calibrated(layer, x):
    """`layer`, its LANCE bases (if any) calibrated on `x`."""
    if layer.method == "lance":
        layer.compressor.start_calibration()
        with lance_ref.no_grad():
            layer(Tensor(x))
        layer.compressor.finish_calibration()
    return layer


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_compressed_layers_pass_gradcheck(data):
    """Input and bias gradients are exact at any eps; at eps = 1 the weight gradient is too."""
    method = data.draw(st.sampled_from(["hosvd", "lance"]))
    eps = data.draw(st.sampled_from([0.5, 0.9, 1.0]))
    mode_set = data.draw(st.sampled_from(["all", "chw"]))
    if data.draw(st.booleans()):
        groups, c, o = data.draw(grouped_channels(max_channels=3, general_groups=[2]))
        k, stride, padding, dilation = (data.draw(st.integers(1, 2)) for _ in range(4))
        layer = nn.Conv2d(c, o, k, stride=stride, padding=padding - 1, dilation=dilation, groups=groups, dtype=np.float64)
        x = data.draw(arrays((data.draw(st.integers(1, 3)), c, *[data.draw(st.integers(3, 5)) for _ in range(2)])))
        layer = calibrated(CompressedConv2d(layer, method, eps, mode_set), x)
    else:
        lead = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
        layer = nn.Linear(data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3)), dtype=np.float64)
        x = data.draw(arrays((*lead, layer.in_features)))
        layer = calibrated(CompressedLinear(layer, method, eps, mode_set), x)

    params = [x, layer.weight.data.copy(), layer.bias.data.copy()]

    def forward(x, weight, bias):  # finite differences move the layer's own parameters
        layer.weight.data[...], layer.bias.data[...] = weight.data, bias.data
        return layer(x)

    x_tensor = Tensor(x, requires_grad=True)
    out = forward(x_tensor, *map(Tensor, params[1:]))
    v = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(v)
    analytic = [x_tensor.grad, layer.weight.grad, layer.bias.grad]
    for i in (0, 1, 2) if eps == 1.0 else (0, 2):
        np.testing.assert_allclose(analytic[i], numerical_vjp(forward, params, i, v), rtol=1e-6, atol=1e-8)


def test_compressed_linear_full_rank_is_exact_for_tokens():
    rng = np.random.default_rng(2)
    linear = nn.Linear(5, 3, dtype=np.float64)
    x = rng.standard_normal((4, 6, 5))
    exact = grads(linear, x)
    linear.zero_grad()
    for got, want in zip(grads(CompressedLinear(linear, "hosvd", eps=1.0), x), exact):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_lance_layer_before_calibration_raises():
    conv, x = conv_case()
    layer = CompressedConv2d(conv, "lance")
    with pytest.raises(RuntimeError, match="before calibration"):
        layer(Tensor(x, requires_grad=True))


def small_model():
    lance_ref.manual_seed(0)
    return nn.build_model("small-cnn", num_classes=3, in_channels=1, image_size=12, dtype=np.float64)


def test_calibrate_errors():
    model = small_model()
    prepare_finetune(model, 2, "lance")
    with pytest.raises(ValueError, match="no batches"):
        calibrate(model, [])
    bad = np.full((4, 1, 12, 12), np.nan)
    with pytest.raises(ValueError, match="NaN or Inf"):
        calibrate(model, [bad])
    with pytest.raises(ValueError, match="no layer with method 'lance'"):
        calibrate(small_model(), [bad])


def test_prepare_finetune_freezes_the_rest_and_keeps_names():
    model = small_model()
    names_before = list(model.state_dict())
    frozen_before = {k: v.copy() for k, v in model.state_dict().items()}
    names = prepare_finetune(model, 2, "lance", eps=0.9)
    assert names == ["features.4", "features.8", "classifier"]
    assert list(model.state_dict()) == names_before
    x = np.random.default_rng(3).standard_normal((6, 1, 12, 12))
    calibrate(model, [x])
    optimizer = lance_ref.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    F.cross_entropy(model(Tensor(x)), np.arange(6) % 3).backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in frozen_before.items():
        trained = key.split(".weight")[0].split(".bias")[0] in names
        assert np.array_equal(after[key], value) != trained, key
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_a_hosvd_layer_refuses_a_non_finite_input_and_lance_propagates_it():
    """Per-step HOSVD cannot decompose NaN or Inf (LAPACK fails or hangs): a clear error. LANCE's
    fixed bases only multiply, so NaN reaches the gradient as it does in torch."""
    x = np.ones((4, 2, 5, 5))
    x[0, 0, 0, 0] = np.inf
    hosvd_conv = CompressedConv2d(nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), "hosvd")
    with pytest.raises(ValueError, match="the input of a hosvd layer \\(has training diverged\\?\\) holds NaN or Inf"):
        hosvd_conv(Tensor(x))
    lance_conv = CompressedConv2d(nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), "lance")
    calibrate(lance_conv, [np.ones((4, 2, 5, 5)) + np.arange(5)])
    x[0, 0, 0, 0] = np.nan
    lance_conv(Tensor(x)).sum().backward()
    assert np.isnan(lance_conv.weight.grad).any()


def test_prepare_finetune_bad_last_n():
    with pytest.raises(ValueError, match="last_n must be an int in 1..3"):
        prepare_finetune(small_model(), 4, "lance")
    with pytest.raises(ValueError, match="method must be one of"):
        prepare_finetune(small_model(), 1, "svd")
    with pytest.raises(ValueError, match="eps must be a real number in"):
        prepare_finetune(small_model(), 1, "lance", eps=1.5)


@pytest.mark.parametrize("method", ["full", "hosvd", "lance"])
def test_finetune_command(tmp_path, method):
    out = tmp_path / method
    arguments = ["finetune", "--method", method, "--pretrain-epochs", "1", "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(arguments) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("test_accuracy", "activation_bytes", "full_activation_bytes", "ranks", "flops", "calibration_seconds", "step_seconds",
                "activation_bytes_per_step", "peak_step_bytes", "persistent_bytes"):
        assert key in results
    assert results["peak_step_bytes"] > results["persistent_bytes"] + results["activation_bytes_per_step"]
    if method == "full":
        assert results["activation_bytes"] == results["full_activation_bytes"]
    else:
        assert results["activation_bytes"] < results["full_activation_bytes"]
    assert (out / "source_model.npz").is_file()


def test_finetune_bad_arguments(tmp_path, capsys):
    assert main(["finetune", "--eps", "0", "--out", str(tmp_path), "--quiet"]) == 2
    assert "eps must be a real number in (0, 1]" in capsys.readouterr().err
    assert main(["finetune", "--checkpoint", str(tmp_path / "none.npz"), "--out", str(tmp_path), "--quiet"]) == 2


def test_finetune_sweep_runs_every_method_and_summarises(tmp_path):
    arguments = ["finetune-sweep", "--seeds", "0", "--eps-values", "0.9", "--pretrain-epochs", "1", "--epochs", "1"]
    assert main([*arguments, "--out", str(tmp_path), "--quiet"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["eps"]) for r in results["runs"]] == [("full", 1.0), ("hosvd", 0.9), ("lance", 0.9)]
    assert {s["method"] for s in results["summary"]} == {"full", "hosvd", "lance"}
    assert "lance" in results["table"]


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_patch_compressed_conv_gradients(data):
    """PatchCompressedConv2d: the output is the conv's; input gradient exact at any eps; weight
    gradient exact at eps = 1 and, at any eps, the exact one at the reconstructed tokens."""
    from lance_ref.compress.layers import Lance, PatchCompressedConv2d
    from lance_ref.functional.conv import patch_tokens
    from lance_ref.functional.conv import conv_geometry
    from lance_ref.kernels import reference

    k, stride, padding, dilation = (data.draw(st.integers(1, 2)) for _ in range(4))
    eps = data.draw(st.sampled_from([0.5, 0.9, 1.0]))
    conv = nn.Conv2d(2, 3, k, stride=stride, padding=padding - 1, dilation=dilation, bias=False, dtype=np.float64)
    x = data.draw(arrays((data.draw(st.integers(1, 3)), 2, *[data.draw(st.integers(3, 5)) for _ in range(2)])))
    layer = PatchCompressedConv2d(conv, Lance(eps, "all"))
    layer.compressor.start_calibration()
    with lance_ref.no_grad():
        layer(Tensor(x))
    layer.compressor.finish_calibration()
    np.testing.assert_allclose(layer(Tensor(x)).data, conv(Tensor(x)).data, atol=1e-12)

    params = [x, conv.weight.data.copy()]

    def forward(x, weight):
        layer.weight.data[...] = weight.data
        return layer(x)

    x_tensor = Tensor(x, requires_grad=True)
    out = forward(x_tensor, Tensor(params[1]))
    v = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(v)
    np.testing.assert_allclose(x_tensor.grad, numerical_vjp(forward, params, 0, v), rtol=1e-6, atol=1e-8)
    if eps == 1.0:
        np.testing.assert_allclose(layer.weight.grad, numerical_vjp(forward, params, 1, v), rtol=1e-6, atol=1e-8)
    geometry = conv_geometry(x.shape, conv.weight.shape[2:], conv.stride, conv.padding, conv.dilation, 1)
    factors = layer.compressor.factors
    rebuilt = reference.tucker_reconstruct(reference.tucker_project(patch_tokens(x, geometry), factors), factors)
    v_tokens = v.reshape(len(v), 3, -1).transpose(0, 2, 1)  # (B, L, O)
    exact_at_rebuilt = np.einsum("blo,blf->of", v_tokens, rebuilt).reshape(conv.weight.shape)
    np.testing.assert_allclose(layer.weight.grad, exact_at_rebuilt, rtol=1e-9, atol=1e-12)


def test_patch_compressed_conv_refuses_bias_and_groups():
    from lance_ref.compress.layers import PatchCompressedConv2d

    for conv in (nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3, bias=False, groups=2)):
        with pytest.raises(ValueError, match="bias-free conv with groups=1"):
            PatchCompressedConv2d(conv)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_patch_tokens_are_projected_in_chunks_as_a_whole(data):
    """The core of the patch tokens, formed chunk by chunk (one sample at a time at the
    smallest budget), equals the projection of the whole token tensor, with or without U_B."""
    from lance_ref.compress.layers import project_patch_tokens
    from lance_ref.functional.conv import patch_tokens
    from lance_ref.functional.conv import conv_geometry
    from lance_ref.kernels import reference, set_workspace_bytes

    x = data.draw(arrays((data.draw(st.integers(1, 5)), 2, 5, 4)))
    geometry = conv_geometry(x.shape, (2, 3), (1, 2), (1, 0), (1, 1), 1)
    tokens = patch_tokens(x, geometry)
    rng = np.random.default_rng(0)
    factors = [None if data.draw(st.booleans()) else rng.standard_normal((n, min(n, 2))) for n in tokens.shape]
    previous = set_workspace_bytes(data.draw(st.sampled_from([1, 200, 2**40])))
    try:
        core = project_patch_tokens(x, geometry, factors)
    finally:
        set_workspace_bytes(previous)
    np.testing.assert_allclose(core, reference.tucker_project(tokens, factors), rtol=1e-12, atol=1e-12)
