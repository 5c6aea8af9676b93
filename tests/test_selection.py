"""Budgeted neuron selection: NEq velocity, budgets and the selection policies."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lance_ref.nn import Conv2d, Module, ReLU, Sequential
from lance_ref.selection import VelocityTracker, budget_parameters, conv_neurons, cosine_distance, greedy_prefix, select


def maps(*vectors):
    """(N=1, C, 1, len) outputs, one channel per vector."""
    return np.array(vectors, dtype=np.float64)[None, :, None, :]


def test_velocity_by_hand():
    tracker = VelocityTracker({"conv": 2}, momentum=0.5)
    # Channel 0 turns by 90 degrees, then by 45; channel 1 never moves.
    y0 = maps([1.0, 0.0], [1.0, 1.0])
    y1 = maps([0.0, 1.0], [2.0, 2.0])
    y2 = maps([1.0, 1.0], [3.0, 3.0])
    y3 = maps([1.0, 1.0], [3.0, 3.0])
    assert tracker.update({"conv": y0}).tolist() == [0.0, 0.0]  # no earlier forward
    d1 = np.array([1.0, 0.0])                       # 1 - cos 90 deg; unchanged
    v1 = (0 - d1) - 0 + 0.5 * 0                     # dphi1 = d0 - d1 with d0 = 0
    np.testing.assert_allclose(tracker.update({"conv": y1}), v1, atol=1e-15)
    d2 = np.array([1 - np.sqrt(0.5), 0.0])
    dphi1, dphi2 = -d1, d1 - d2
    v2 = dphi2 - dphi1 + 0.5 * v1
    np.testing.assert_allclose(tracker.update({"conv": y2}), v2, atol=1e-15)
    d3 = np.zeros(2)
    v3 = (d2 - d3) - dphi2 + 0.5 * v2
    np.testing.assert_allclose(tracker.update({"conv": y3}), v3, atol=1e-15)
    assert v3[1] == 0  # a neuron that never moves has velocity 0


def test_cosine_distance_of_zero_maps():
    zero, one = maps([0.0, 0.0]), maps([1.0, 0.0])
    assert cosine_distance(zero, zero).tolist() == [0.0]
    assert cosine_distance(one, zero).tolist() == [1.0]


def test_velocity_checks_its_inputs():
    tracker = VelocityTracker({"conv": 2})
    with pytest.raises(ValueError, match=r"outputs\['conv'\] must have shape \(N >= 1, 2, H, W\)"):
        tracker.update({"conv": np.zeros((0, 2, 3, 3))})
    with pytest.raises(ValueError, match="momentum must lie in"):
        VelocityTracker({"conv": 2}, momentum=1.0)


class Net(Module):
    def __init__(self, widths, depthwise):
        super().__init__()
        layers, previous = [], 3
        for width in widths:
            layers += [Conv2d(previous, width, 3, bias=False), ReLU()]
            previous = width
        if depthwise:
            layers.append(Conv2d(previous, previous, 3, groups=previous))
        self.body = Sequential(*layers)


def convs(model) -> dict:
    return {name: m for name, m in model.named_modules() if isinstance(m, Conv2d)}


def test_neuron_costs_count_their_own_parameters():
    costs = conv_neurons(convs(Net([4, 2], depthwise=True)))
    assert {name: c.tolist() for name, c in costs.items()} == {
        "body.0": [27] * 4, "body.2": [36] * 2, "body.4": [10] * 2}  # depthwise: 3*3 + bias


@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.booleans(), st.floats(0.01, 1.0),
       st.sampled_from(["neq", "random", "su"]), st.integers(0, 2**16))
def test_selection_never_exceeds_the_budget(widths, depthwise, ratio, policy, seed):
    costs = np.concatenate(list(conv_neurons(convs(Net(widths, depthwise))).values()))
    try:
        budget = budget_parameters(ratio, costs)
    except ValueError:
        assert np.floor(ratio * costs.sum()) < costs.min()
        return
    rng = np.random.default_rng(seed)
    mask = select(policy, costs, budget, velocity=rng.standard_normal(len(costs)), norms=rng.random(len(costs)),
                  rng=np.random.default_rng(seed))
    assert costs[mask].sum() <= budget  # possibly nothing: an expensive first neuron ends the prefix
    if policy == "random":  # the budget is summed in the shuffled order: the picks are its prefix
        order = np.random.default_rng(seed).permutation(len(costs))
        prefix = order[np.cumsum(costs[order]) <= budget]
        assert set(prefix) == set(np.flatnonzero(mask))


def test_neq_prefers_fast_cheap_neurons_and_stops_at_the_first_misfit():
    costs = np.array([10, 1, 5, 1])
    velocity = np.array([10.0, 0.5, 50.0, -3.0])  # |v| / p: 1, 0.5, 10, 3
    assert select("neq", costs, 7, velocity=velocity).tolist() == [False, False, True, True]
    # 5 + 1 = 6 fit; neuron 0 (10) does not, and ends the prefix although neuron 1 would fit.
    assert greedy_prefix(np.array([2, 3, 0, 1]), costs, 7).tolist() == [False, False, True, True]
    assert select("su", costs, 11, norms=np.array([3.0, 2.0, 1.0, 0.5])).tolist() == [True, True, False, False]
    assert select("full", costs, 1).all()


@pytest.mark.parametrize("budget, error, message", [
    (0.0, ValueError, "fractional budget must lie in"),
    (1.5, ValueError, "fractional budget must lie in"),
    (2, ValueError, "budget 2 is a count of parameters \\(a ratio has a decimal point: 1.0 is all of them\\); it must lie between "
                    "the cheapest neuron's 5 and all 20 conv parameters"),
    (1000, ValueError, "between the cheapest neuron's 5 and all 20 conv parameters"),
    (0.1, ValueError, "budget 0.1 is 2 of the 20 conv parameters, fewer than the cheapest neuron's 5"),
    ("10%", TypeError, "budget must be a ratio"),
])
def test_bad_budgets_are_clear_errors(budget, error, message):
    with pytest.raises(error, match=message):
        budget_parameters(budget, np.array([10, 5, 5]))


def test_unknown_policy_and_missing_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown policy 'top'"):
        select("top", np.array([1]), 1)
    with pytest.raises(ValueError, match="policy 'neq' needs velocity"):
        select("neq", np.array([1]), 1)
    with pytest.raises(ValueError, match="no conv layer"):
        conv_neurons(convs(Sequential(ReLU())))


@given(st.data())
def test_partial_weight_gradient_is_the_full_ones_rows(data):
    """float64: the selected rows equal the full gradient's, the others are exactly zero; input
    and bias gradients are exact; so with any workspace chunking."""
    from lance_ref import Tensor
    from lance_ref.kernels import set_workspace_bytes
    from lance_ref.selection.layers import SelectiveConv2d
    from helpers import numerical_vjp
    from strategies import arrays, grouped_channels

    groups, c, o = data.draw(grouped_channels(max_channels=4, general_groups=[2]))
    k, stride, padding, dilation = (data.draw(st.integers(1, 2)) for _ in range(4))
    conv = Conv2d(c, o, k, stride=stride, padding=padding - 1, dilation=dilation, groups=groups, dtype=np.float64)
    x = data.draw(arrays((data.draw(st.integers(1, 3)), c, *[data.draw(st.integers(3, 5)) for _ in range(2)])))
    v = np.random.default_rng(0).standard_normal(conv(Tensor(x)).shape)

    def grads(layer):  # a parameter left without a gradient counts as a zero one
        xt = Tensor(x, requires_grad=True)
        layer.weight.grad = layer.bias.grad = None
        layer(xt).backward(v)
        return xt.grad, *(np.zeros_like(p.data) if p.grad is None else p.grad.copy() for p in (layer.weight, layer.bias))

    full = grads(conv)
    selective = SelectiveConv2d(conv)
    selective.mask = np.array(data.draw(st.lists(st.booleans(), min_size=o, max_size=o)))
    previous = set_workspace_bytes(data.draw(st.sampled_from([1, 2**40])))  # one sample per chunk, or the batch
    try:
        dx, dw, db = grads(selective)
    finally:
        set_workspace_bytes(previous)
    np.testing.assert_allclose(dx, full[0], rtol=1e-12, atol=1e-12)
    params = [x, conv.weight.data.copy(), conv.bias.data.copy()]

    def forward(x, weight, bias):  # finite differences move the layer's own parameters
        selective.weight.data[...], selective.bias.data[...] = weight.data, bias.data
        return selective(x)

    for i, analytic in ((0, dx), (1, dw), (2, db)):
        numeric = numerical_vjp(forward, params, i, v)
        rows = Ellipsis if i == 0 else selective.mask
        np.testing.assert_allclose(analytic[rows], numeric[rows], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw[selective.mask], full[1][selective.mask], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db[selective.mask], full[2][selective.mask], rtol=1e-12, atol=1e-12)
    assert not dw[~selective.mask].any() and not db[~selective.mask].any()


def test_frozen_channels_stay_bit_identical_under_sgd():
    from lance_ref import Tensor
    from lance_ref.optim import SGD
    from lance_ref.selection.layers import SelectiveConv2d

    layer = SelectiveConv2d(Conv2d(3, 4, 3))
    layer.mask = np.array([True, False, True, False])
    before = layer.weight.data.copy(), layer.bias.data.copy()
    optimizer = SGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        (layer(Tensor(np.random.default_rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32))) ** 2).sum().backward()
        optimizer.step()
    frozen = ~layer.mask
    assert np.array_equal(layer.weight.data[frozen], before[0][frozen]) and np.array_equal(layer.bias.data[frozen], before[1][frozen])
    assert not np.array_equal(layer.weight.data[layer.mask], before[0][layer.mask])


def test_an_unselected_layer_leaves_the_graph():
    from lance_ref import Tensor
    from lance_ref.selection import SelectiveConv2d

    first, second = SelectiveConv2d(Conv2d(2, 3, 3)), SelectiveConv2d(Conv2d(3, 4, 3))
    first.mask = np.zeros(3, dtype=bool)
    second.mask = np.array([True, False, False, True])
    hidden = first(Tensor(np.ones((1, 2, 6, 6), dtype=np.float32)))
    assert not hidden.requires_grad  # backward will stop at `second`
    second(hidden).sum().backward()
    assert first.weight.grad is None and first.bias.grad is None
    assert second.weight.grad[[0, 3]].any() and not second.weight.grad[[1, 2]].any()


def selective_net(seed=0):
    from lance_ref import random
    from lance_ref.nn import Flatten, Linear
    from lance_ref.selection import SelectiveConv2d

    random.manual_seed(seed)
    model = Sequential(Conv2d(1, 4, 3), ReLU(), Conv2d(4, 6, 3, padding=1), ReLU(), Flatten(), Linear(6 * 4 * 4, 3))
    for name in ("0", "2"):
        model.set_submodule(name, SelectiveConv2d(model.get_submodule(name)))
    return model


def test_selector_masks_fit_the_budget_and_neq_starts_at_random():
    from lance_ref.nn import layer_activations
    from lance_ref.selection import NeuronSelector

    model, images = selective_net(), np.random.default_rng(0).standard_normal((5, 1, 6, 6)).astype(np.float32)
    selector = NeuronSelector(model, "neq", 0.3, images, rng=np.random.default_rng(7))
    costs = np.array([10] * 4 + [37] * 6)
    assert selector.budget == int(0.3 * costs.sum())
    first = selector.before_epoch(1)
    masks = np.concatenate([model[0].mask, model[2].mask])
    assert masks.tolist() == select("random", costs, selector.budget, rng=np.random.default_rng(7)).tolist()
    assert first["updated_parameters"] == costs[masks].sum() <= selector.budget
    tracker = VelocityTracker({"0": 4, "2": 6})
    tracker.update(layer_activations(model, {"0": model[0], "2": model[2]}, images, kind="output"))
    model[2].weight.data[...] *= -1.5  # something moved
    model[0].weight.data[1:] += 0.1
    velocity = tracker.update(layer_activations(model, {"0": model[0], "2": model[2]}, images, kind="output"))
    selector.before_epoch(2)
    masks = np.concatenate([model[0].mask, model[2].mask])
    assert masks.tolist() == select("neq", costs, selector.budget, velocity=velocity).tolist()


def test_frozen_channels_are_bit_identical_after_an_epoch():
    from lance_ref.data import DataLoader
    from lance_ref.optim import SGD
    from lance_ref.selection import NeuronSelector
    from lance_ref.train import train_epoch

    model, rng = selective_net(), np.random.default_rng(1)
    images, labels = rng.standard_normal((40, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 40)
    selector = NeuronSelector(model, "random", 0.4, rng=np.random.default_rng(3))
    optimizer = SGD(list(model.parameters()), lr=0.1)
    for epoch in (1, 2):
        selector.before_epoch(epoch)
        before = {name: p.data.copy() for name, p in model.named_parameters()}
        train_epoch(model, optimizer, DataLoader(images, labels, 8, shuffle=True, seed=epoch), show=False)
        for index in ("0", "2"):
            frozen = ~model[int(index)].mask
            for kind in ("weight", "bias"):
                now, then = getattr(model.get_submodule(index), kind).data, before[f"{index}.{kind}"]
                assert np.array_equal(now[frozen], then[frozen])
                assert not np.array_equal(now[~frozen], then[~frozen]) or not (~frozen).any()


def test_selector_bad_input():
    from lance_ref.selection import NeuronSelector

    images = np.zeros((2, 1, 6, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="the velocity set is empty"):
        NeuronSelector(selective_net(), "neq", 0.5, images[:0], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown policy 'best'"):
        NeuronSelector(selective_net(), "best", 0.5)
    with pytest.raises(ValueError, match="and all 262 conv parameters"):
        NeuronSelector(selective_net(), "su", 10**6)
    with pytest.raises(ValueError, match="no conv layer"):
        NeuronSelector(Sequential(ReLU()), "su", 0.5)
    assert NeuronSelector(selective_net(), "full", None).before_epoch(1)["updated_parameters"] == 40 + 222


def finetune(out, dataset, *extra):
    import json

    from lance_ref.cli import main

    arguments = ["finetune", "--dataset", f"npz:{dataset}", "--last-n", "3", "--batch-size", "16", "--out", str(out), "--quiet"]
    code = main([*arguments, *extra])
    return json.loads((out / "results.json").read_text()) if code == 0 else code


def test_finetune_with_every_policy(tmp_path, tiny_digits):
    full = finetune(tmp_path / "full", tiny_digits, "--method", "full", "--pretrain-epochs", "1", "--epochs", "2")
    checkpoint = str(tmp_path / "full" / "source_model.npz")
    assert full["budget"] is None and full["updated_parameters"] == full["conv_parameters"] == 23184
    for policy in ("neq", "random", "su"):
        results = finetune(tmp_path / policy, tiny_digits, "--method", policy, "--budget", "0.2", "--checkpoint", checkpoint, "--epochs", "3")
        assert results["budget"] == int(0.2 * 23184)
        assert all(0 < e["updated_parameters"] <= results["budget"] for e in results["epochs"])
        assert results["updated_parameters"] == max(e["updated_parameters"] for e in results["epochs"])
        assert results["backward_seconds"] == pytest.approx(sum(e["backward_seconds"] for e in results["epochs"]))
        assert 0 < results["backward_seconds"] < results["wall_seconds"]
    assert finetune(tmp_path / "count", tiny_digits, "--method", "su", "--budget", "5000", "--checkpoint", checkpoint, "--epochs", "1")["budget"] == 5000


@pytest.mark.parametrize("arguments, message", [
    (["--budget", "2.0"], "a fractional budget must lie in (0, 1]"),
    (["--budget", "100000"], "--budget 100000 is a count of parameters (a ratio has a decimal point: 1.0 is all of them)"),
    (["--budget", "ten"], "budget must be a ratio like '0.1' or a parameter count"),
    (["--velocity-samples", "0"], "the velocity set cannot be empty"),
    (["--velocity-samples", "100000"], "--velocity-samples (100000) exceeds the target training images"),
    (["--momentum", "0.9"], "a momentum buffer would move frozen channels"),
])
def test_finetune_selection_bad_arguments(tmp_path, capsys, tiny_digits, arguments, message):
    assert finetune(tmp_path, tiny_digits, "--method", "neq", "--pretrain-epochs", "1", *arguments) == 2
    assert message in capsys.readouterr().err


def test_selection_sweep_compares_policies_per_budget(tmp_path, tiny_digits):
    import json

    from lance_ref.cli import main

    arguments = ["selection-sweep", "--dataset", f"npz:{tiny_digits}", "--seeds", "0", "--budgets", "0.1,0.3",
                 "--policies", "neq,random", "--pretrain-epochs", "1", "--epochs", "2", "--out", str(tmp_path), "--quiet"]
    assert main(arguments) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["budget"]) for r in results["runs"]] == [
        ("full", "all"), ("neq", "0.1"), ("random", "0.1"), ("neq", "0.3"), ("random", "0.3")]
    assert [c["budget"] for c in results["comparisons"]] == ["0.1", "0.3"]
    assert "neq - random at budget 0.3" in results["table"]
    assert main([*arguments[:-3], "--policies", "neq,full", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
