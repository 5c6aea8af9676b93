"""Module, layers and init: registration and names, state dicts, BatchNorm statistics, dropout,
freezing, dtype conversion, initialisation and owner attribution (specs/nn.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lance_ref as lr
from lance_ref import autograd, nn
from lance_ref import functional as F
from lance_ref.optim import SGD, Adam


class Block(nn.Module):
    def __init__(self, dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, dtype=dtype)
        self.bn = nn.BatchNorm2d(3, dtype=dtype)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self, dtype=None):
        super().__init__()
        self.block = Block(dtype)
        self.features = nn.Sequential(nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Linear(12, 4, dtype=dtype)

    def forward(self, x):
        return self.head(self.features(self.block(x)))


def batch(shape=(5, 2, 4, 4), dtype=np.float64, seed=0):
    return lr.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


# --- registration and names ----------------------------------------------------------------
def test_parameter_is_a_leaf_requiring_grad():
    p = nn.Parameter(np.zeros(3))
    assert p.requires_grad and p.is_leaf and p.dtype == np.float64
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32


def test_names_follow_torch():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "block.conv.weight", "block.conv.bias", "block.bn.weight", "block.bn.bias", "head.weight", "head.bias",
    ]
    assert [n for n, _ in net.named_buffers()] == [
        "block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked",
    ]
    assert [n for n, _ in net.named_modules()] == [
        "", "block", "block.conv", "block.bn", "features", "features.0", "features.1", "head",
    ]
    assert [n for n, _ in net.named_children()] == ["block", "features", "head"]
    assert len(list(net.parameters())) == 6 and len(list(net.modules())) == 8


def test_state_dict_has_torch_keys_and_copies():
    net = Net()
    state = net.state_dict()
    assert list(state) == [
        "block.conv.weight", "block.conv.bias", "block.bn.weight", "block.bn.bias",
        "block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked",
        "head.weight", "head.bias",
    ]
    counter = state["block.bn.num_batches_tracked"]
    assert counter.dtype == np.int64 and counter.shape == ()
    state["head.bias"][...] = 123.0
    assert not np.any(net.head.bias.data == 123.0)


def test_shared_modules_are_listed_once_but_saved_under_each_name():
    net = nn.Module()
    layer = nn.Linear(2, 2)
    net.a, net.b = layer, layer
    assert [n for n, _ in net.named_parameters()] == ["a.weight", "a.bias"]
    assert list(net.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]  # as torch


def test_assignment_rules():
    lin = nn.Linear(2, 3, bias=False)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    with pytest.raises(TypeError, match="weight"):
        lin.weight = np.zeros((3, 2))
    with pytest.raises(TypeError, match="running_mean"):
        nn.BatchNorm1d(2).running_mean = [0.0, 0.0]
    del lin.weight
    assert list(lin.parameters()) == []
    with pytest.raises(AttributeError):
        lin.missing


def test_sequential_and_module_list():
    seq = nn.Sequential(nn.ReLU(), nn.Linear(2, 2), nn.Tanh())
    assert len(seq) == 3 and isinstance(seq[-1], nn.Tanh) and isinstance(seq[1], nn.Linear)
    assert [type(m).__name__ for m in seq] == ["ReLU", "Linear", "Tanh"]
    assert list(seq[1:].state_dict()) == ["1.weight", "1.bias"]  # a slice keeps the names
    del seq[0]
    assert list(seq.state_dict()) == ["0.weight", "0.bias"]  # renumbered, as torch
    with pytest.raises(IndexError, match="out of range"):
        seq[5]
    heads = nn.ModuleList([nn.Linear(2, 1), nn.Linear(2, 3)])
    heads.append(nn.Linear(2, 4))
    assert [h.out_features for h in heads] == [1, 3, 4]
    assert [n for n, _ in heads.named_parameters()][-2:] == ["2.weight", "2.bias"]
    assert [h.out_features for h in heads[1:]] == [3, 4]
    x = batch((2, 2))
    np.testing.assert_allclose(nn.Sequential(nn.Identity(), nn.ReLU())(x).data, np.maximum(x.data, 0))


def test_repr_is_torch_like():
    text = repr(Net())
    assert "(block): Block(" in text
    assert "(conv): Conv2d(2, 3, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in text
    assert "(head): Linear(in_features=12, out_features=4, bias=True)" in text
    assert "(0): MaxPool2d(kernel_size=2, stride=2" in text


# --- state dicts -------------------------------------------------------------------------------
def test_load_state_dict_round_trip_through_npz(tmp_path):
    lr.manual_seed(0)
    source = Net(np.float64)
    source(batch())  # moves the running statistics away from their initial values
    np.savez(tmp_path / "net.npz", **source.state_dict())
    lr.manual_seed(1)
    target = Net(np.float64)
    weight = target.head.weight
    with np.load(tmp_path / "net.npz", allow_pickle=False) as archive:
        result = target.load_state_dict(dict(archive))
    assert result == nn.IncompatibleKeys([], [])
    assert target.head.weight is weight  # loaded in place
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    source.eval(), target.eval()
    np.testing.assert_array_equal(source(batch()).data, target(batch()).data)


def test_load_state_dict_errors_name_the_keys():
    net = Net()
    good = net.state_dict()
    missing = {k: v for k, v in good.items() if k != "head.bias"}
    with pytest.raises(ValueError, match="missing key 'head.bias'"):
        net.load_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected key 'extra.weight'"):
        net.load_state_dict({**good, "extra.weight": np.zeros(1)})
    with pytest.raises(ValueError, match=r"shape mismatch for 'head.weight': expected \(4, 12\), got \(12, 4\)"):
        net.load_state_dict({**good, "head.weight": good["head.weight"].T})
    with pytest.raises(ValueError, match="dtype mismatch for 'head.bias': expected float32, got float64"):
        net.load_state_dict({**good, "head.bias": good["head.bias"].astype(np.float64)})
    with pytest.raises(ValueError, match="num_batches_tracked"):
        net.load_state_dict({**good, "block.bn.num_batches_tracked": np.array(1.5)})
    before = net.head.weight.data.copy()
    with pytest.raises(ValueError):  # nothing is copied when one key fails
        net.load_state_dict({**good, "head.weight": before + 1, "head.bias": np.zeros(5, np.float32)})
    np.testing.assert_array_equal(net.head.weight.data, before)
    result = net.load_state_dict({**missing, "extra": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["head.bias"] and result.unexpected_keys == ["extra"]


# --- BatchNorm ---------------------------------------------------------------------------------
def test_batchnorm_running_stats_update_only_in_training():
    bn = nn.BatchNorm2d(3, momentum=0.3, dtype=np.float64)
    x = batch((4, 3, 2, 5))
    values = x.data.transpose(1, 0, 2, 3).reshape(3, -1)
    y = bn(x)
    np.testing.assert_allclose(bn.running_mean, 0.3 * values.mean(1), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.7 + 0.3 * values.var(1, ddof=1), rtol=1e-12)
    assert bn.num_batches_tracked == 1
    biased = (values - values.mean(1, keepdims=True)) / np.sqrt(values.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.data.transpose(1, 0, 2, 3).reshape(3, -1), biased, rtol=1e-10)

    bn.eval()
    mean, var = bn.running_mean.copy(), bn.running_var.copy()
    y = bn(x)
    np.testing.assert_array_equal(bn.running_mean, mean)
    np.testing.assert_array_equal(bn.running_var, var)
    assert bn.num_batches_tracked == 1
    expected = (x.data - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12)


def test_batchnorm_momentum_none_is_a_cumulative_average():
    bn = nn.BatchNorm1d(2, momentum=None, dtype=np.float64)
    xs = [batch((6, 2), seed=s) for s in range(4)]
    for x in xs:
        bn(x)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.data.mean(0) for x in xs], axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, np.mean([x.data.var(0, ddof=1) for x in xs], axis=0), rtol=1e-12)
    assert bn.num_batches_tracked == 4


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval():
    bn = nn.BatchNorm1d(3, track_running_stats=False, dtype=np.float64).eval()
    assert list(bn.state_dict()) == ["weight", "bias"]
    x = batch((5, 3, 2))
    values = x.data.transpose(1, 0, 2).reshape(3, -1)
    expected = (values - values.mean(1, keepdims=True)) / np.sqrt(values.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(bn(x).data.transpose(1, 0, 2).reshape(3, -1), expected, rtol=1e-10)


def test_batchnorm_checks_input_rank():
    with pytest.raises(ValueError, match="BatchNorm2d expects input with 4 dims"):
        nn.BatchNorm2d(3)(batch((2, 3), np.float32))
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm2d(3, momentum=2.0)


# --- dropout, modes ----------------------------------------------------------------------------
def test_dropout_eval_is_identity_and_training_is_seeded():
    drop = nn.Dropout(0.25)
    x = lr.Tensor(np.ones((200, 50)))
    assert drop.eval()(x) is x
    drop.train()
    lr.manual_seed(3)
    first = drop(x).data
    lr.manual_seed(3)
    np.testing.assert_array_equal(drop(x).data, first)
    assert set(np.unique(first)) == {0.0, 1 / 0.75}
    assert abs((first == 0).mean() - 0.25) < 0.02


def test_train_and_eval_reach_every_module():
    net = Net().eval()
    assert not any(m.training for m in net.modules())
    assert all(m.training for m in net.train().modules())


# --- freezing, gradients, dtype --------------------------------------------------------------
@pytest.mark.parametrize("make_optimizer", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: Adam(ps, lr=0.1, weight_decay=0.1),
])
def test_frozen_parameters_get_no_grad_and_stay_bit_identical(make_optimizer):
    lr.manual_seed(0)
    net = Net(np.float64)
    net.block.freeze()
    frozen = {n: p.data.copy() for n, p in net.named_parameters() if n.startswith("block.")}
    head = net.head.weight.data.copy()
    optimizer = make_optimizer(net.parameters())
    for step in range(3):
        optimizer.zero_grad()
        F.cross_entropy(net(batch(seed=step)), np.array([0, 1, 2, 3, 0])).backward()
        assert all(p.grad is None for p in net.block.parameters())
        assert all(p.grad is not None for p in net.head.parameters())
        optimizer.step()
    for name, p in net.named_parameters():
        if name in frozen:
            np.testing.assert_array_equal(p.data, frozen[name], err_msg=name)
    assert not np.array_equal(net.head.weight.data, head)


def test_zero_grad_and_requires_grad():
    net = Net()
    net(batch(dtype=np.float32)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_to_converts_parameters_and_float_buffers():
    net = Net()
    net(batch(dtype=np.float32)).sum().backward()
    assert net.to(np.float64) is net
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())
    assert net.block.bn.running_var.dtype == np.float64
    assert net.block.bn.num_batches_tracked.dtype == np.int64
    assert net(batch()).dtype == np.float64
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        net.to(np.int32)
    with pytest.raises(TypeError, match="mix float32 and float64"):
        net.float()(batch())


# --- initialisation ----------------------------------------------------------------------------
def test_default_init_follows_torch_bounds():
    lr.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, groups=2)
    fan_in = 4 * 9
    for p in (conv.weight, conv.bias):
        assert np.abs(p.data).max() <= 1 / math.sqrt(fan_in)
    # kaiming_uniform(a=sqrt(5)) has variance bound^2 / 3 with bound 1/sqrt(fan_in)
    assert abs(conv.weight.data.var() - 1 / (3 * fan_in)) < 0.15 / (3 * fan_in)
    bn = nn.BatchNorm2d(4)
    np.testing.assert_array_equal(bn.weight.data, 1)
    np.testing.assert_array_equal(bn.bias.data, 0)
    np.testing.assert_array_equal(bn.running_var, 1)


def test_init_functions():
    w = nn.Parameter(np.zeros((200, 50, 3, 3)))
    nn.init.kaiming_normal_(w, mode="fan_out")
    assert abs(w.data.std() - math.sqrt(2 / (200 * 9))) < 0.01 * math.sqrt(2 / (200 * 9))
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / (50 * 9))
    assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.99 * bound
    assert nn.init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert nn.init.fan_in_and_fan_out(w) == (450, 1800)
    with pytest.raises(ValueError, match="mode"):
        nn.init.kaiming_normal_(w, mode="fan")
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.init.calculate_gain("gelu")


def test_init_is_deterministic_under_manual_seed():
    lr.manual_seed(5)
    a = Net().state_dict()
    lr.manual_seed(5)
    b = Net().state_dict()
    lr.manual_seed(6)
    c = Net().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["head.weight"], c["head.weight"])
    lr.manual_seed(5)
    d = Net(np.float64).state_dict()  # float64 draws, float32 is their rounding
    np.testing.assert_array_equal(d["head.weight"].astype(np.float32), a["head.weight"])


# --- owner attribution ---------------------------------------------------------------------
def owners_of(output):
    return {
        v.owner: type(v).__name__
        for v in autograd.topological_order(output)
        if autograd.is_node(v)
    }


def test_nodes_are_owned_by_the_innermost_module():
    net = Net()
    y = net(batch(dtype=np.float32))
    owners = owners_of(y)
    assert owners["block.conv"] == "Conv2d"
    assert owners["block.bn"] == "BatchNorm"
    assert owners["block"] == "ReLU"  # F.relu in Block.forward
    assert owners["features.0"] == "MaxPool2d"
    assert owners["head"] == "Linear"
    assert autograd.current_owner() == ""


def test_owner_names_refresh_when_the_tree_changes():
    net = Net()
    net(batch(dtype=np.float32))
    net.features = nn.Sequential(nn.Flatten(), nn.Identity())
    net.head = nn.Linear(48, 2)
    assert owners_of(net(batch(dtype=np.float32)))["head"] == "Linear"
    net.features.insert(0, nn.AvgPool2d(2))
    net.head = nn.Linear(12, 2)
    owners = owners_of(net(batch(dtype=np.float32)))
    assert owners["features.0"] == "AvgPool2d"
    # a submodule called on its own is the root of that call
    assert owners_of(net.block(batch(dtype=np.float32)))["conv"] == "Conv2d"
    assert owners_of(net(batch(dtype=np.float32)))["block.conv"] == "Conv2d"


def test_keep_eval_pins_a_module_through_train():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model[1].keep_eval()
    model.train()
    assert model.training and model[0].training and not model[1].training
    model[1].keep_eval(False)
    model.train()
    assert model[1].training


def test_pin_batchnorm_pins_the_chosen_batchnorms_frozen_or_not():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Sequential(nn.BatchNorm2d(2)))
    nn.pin_batchnorm(model, where=lambda name: name == "1")
    model.train()
    assert not model[1].training and model[2][0].training and model[1].weight.requires_grad
    nn.pin_batchnorm(model, freeze=True)
    model.train()
    assert not model[2][0].training and not model[2][0].weight.requires_grad and model[0].weight.requires_grad


def test_eval_mode_restores_the_mode_even_after_an_error():
    model = nn.Sequential(nn.Dropout(0.5))
    with nn.eval_mode(model):
        assert not model.training and not model[0].training
    assert model.training and model[0].training
    with pytest.raises(RuntimeError), nn.eval_mode(model):
        raise RuntimeError
    assert model[0].training
    model.eval()
    with nn.eval_mode(model):
        pass
    assert not model.training


def test_get_submodule():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
    assert model.get_submodule("0.0") is model[0][0]
    assert model.get_submodule("") is model
    with pytest.raises(AttributeError, match="no submodule '1'"):
        model.get_submodule("0.1")


def test_set_submodule():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
    replacement = nn.ReLU()
    model.set_submodule("0.0", replacement)
    assert model.get_submodule("0.0") is replacement and model[0][0] is replacement
    with pytest.raises(AttributeError, match="no submodule '1'"):
        model.set_submodule("0.1", nn.ReLU())


def test_recording_inputs_and_outputs():
    from lance_ref.nn import layer_activations, recording

    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    model.train()
    x = np.array([[1.0, -2.0, 0.5]], dtype=np.float32)
    outputs = layer_activations(model, {"0": model[0], "1": model[1]}, x, kind="output")
    expected = model[0](lr.Tensor(x)).data
    np.testing.assert_array_equal(outputs["0"], expected)
    np.testing.assert_array_equal(outputs["1"], np.maximum(expected, 0))
    np.testing.assert_array_equal(layer_activations(model, {"1": model[1]}, x)["1"], expected)
    assert model.training and "forward" not in model[0].__dict__  # mode and methods restored
    with pytest.raises(ValueError, match="kind must be one of"):
        with recording({"0": model[0]}, kind="gradient"):
            pass
