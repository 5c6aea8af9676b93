"""Optimisers, schedulers and clipping against hand-derived values (specs/optim.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lance_ref import nn
from lance_ref.optim import SGD, Adam, AdamW, CosineAnnealingLR, ReduceLROnPlateau, StepLR, clip_grad_norm_


def scalar(value=1.0):
    return nn.Parameter(np.array([value], dtype=np.float64))


def run(optimizer, param, grads):
    """Values of `param` after each step with the given gradients."""
    values = []
    for g in grads:
        param.grad = np.array([g], dtype=np.float64)
        optimizer.step()
        values.append(param.data[0])
    return values


# --- SGD -------------------------------------------------------------------------------------
def test_sgd_plain_and_weight_decay():
    p = scalar()
    assert run(SGD([p], lr=0.1), p, [1, 1]) == pytest.approx([0.9, 0.8], abs=1e-15)
    p = scalar()
    # d = g + 0.1 p: p1 = 1 - 0.1 * 1.1 = 0.89, p2 = 0.89 - 0.1 * 1.089 = 0.7811
    assert run(SGD([p], lr=0.1, weight_decay=0.1), p, [1, 1]) == pytest.approx([0.89, 0.7811], abs=1e-15)


def test_sgd_momentum_first_buffer_is_the_gradient():
    p = scalar()
    # b = 1, 1.9, 2.71; p = 1 - 0.1 b cumulatively
    assert run(SGD([p], lr=0.1, momentum=0.9), p, [1, 1, 1]) == pytest.approx([0.9, 0.71, 0.439], abs=1e-15)
    p = scalar()
    # dampening only from the second step: b = 1, 0.9 + 0.5, 1.26 + 0.5
    assert run(SGD([p], lr=0.1, momentum=0.9, dampening=0.5), p, [1, 1, 1]) == pytest.approx(
        [0.9, 0.76, 0.584], abs=1e-15
    )


def test_sgd_nesterov():
    p = scalar()
    # d = g + 0.9 b: 1.9 then 1 + 0.9 * 1.9 = 2.71
    assert run(SGD([p], lr=0.1, momentum=0.9, nesterov=True), p, [1, 1]) == pytest.approx([0.81, 0.539], abs=1e-15)


def test_sgd_maximize_ascends_before_decay_and_momentum():
    p = scalar()
    # d = -1 + 0.1 p: p1 = 1 + 0.1 * 0.9 = 1.09; d = -1 + 0.109, b = 0.9 * -0.9 - 0.891; p2 = 1.09 + 0.1 * 1.701
    values = run(SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True), p, [1, 1])
    assert values == pytest.approx([1.09, 1.2601], abs=1e-15)  # torch 2.15: 1.09, 1.2601
    with pytest.raises(TypeError, match="maximize must be a bool"):
        SGD([scalar()], lr=0.1, maximize=1)


def test_sgd_keeps_float32():
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    p.grad = np.ones(3, dtype=np.float32)
    optimizer = SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4)
    optimizer.step()
    optimizer.step()
    assert p.data.dtype == np.float32 and optimizer.state[p]["momentum_buffer"].dtype == np.float32


# --- Adam ------------------------------------------------------------------------------------
def test_adam_constant_gradient_moves_lr_per_step():
    p = scalar()
    # m_hat = v_hat = 1 for a constant gradient 1, so every step is lr / (1 + eps)
    values = run(Adam([p], lr=0.1), p, [1, 1, 1])
    assert values == pytest.approx([1 - k * 0.1 / (1 + 1e-8) for k in (1, 2, 3)], abs=1e-14)


def test_adam_bias_correction_by_hand():
    p = scalar()
    values = run(Adam([p], lr=0.1, betas=(0.9, 0.999)), p, [1, -2])
    # step 2: m = 0.9 * 0.1 - 0.2 = -0.11, v = 0.999 * 0.001 + 0.001 * 4 = 0.004999
    step2 = 0.1 / (1 - 0.9**2) * -0.11 / (math.sqrt(0.004999) / math.sqrt(1 - 0.999**2) + 1e-8)
    assert values[1] == pytest.approx(values[0] - step2, abs=1e-14)
    assert values[1] - values[0] == pytest.approx(0.0366101, abs=1e-6)


def test_adam_weight_decay_and_amsgrad():
    p = scalar()
    # L2: g' = 1 + 0.1 * 1 = 1.1, so the first step is lr * 1.1 / (1.1 + eps)
    assert run(Adam([p], lr=0.1, weight_decay=0.1), p, [1]) == pytest.approx([1 - 0.1 * 1.1 / (1.1 + 1e-8)], abs=1e-15)
    grads = [10, 0]  # v falls from 0.1 to 0.0999; AMSGrad keeps 0.1
    p, q = scalar(), scalar()
    plain = run(Adam([p], lr=0.1), p, grads)
    ams = run(Adam([q], lr=0.1, amsgrad=True), q, grads)
    bc2 = math.sqrt(1 - 0.999**2)
    m_hat = 0.9 / (1 - 0.9**2)
    assert plain[1] == pytest.approx(plain[0] - 0.1 * m_hat / (math.sqrt(0.0999) / bc2 + 1e-8), abs=1e-14)
    assert ams[1] == pytest.approx(ams[0] - 0.1 * m_hat / (math.sqrt(0.1) / bc2 + 1e-8), abs=1e-14)


def test_adamw_decays_before_the_step():
    p = scalar()
    assert run(AdamW([p], lr=0.1, weight_decay=0.1), p, [1]) == pytest.approx([0.99 - 0.1 / (1 + 1e-8)], abs=1e-15)
    assert AdamW([scalar()]).param_groups[0]["weight_decay"] == 0.01


# --- groups, skipping, validation ---------------------------------------------------------------
def test_param_groups_and_none_gradients():
    a, b, c = scalar(), scalar(), scalar()
    optimizer = SGD([{"params": [a]}, {"params": [b, c], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.5]
    assert optimizer.param_groups[1]["momentum"] == 0.9
    a.grad, b.grad = np.ones(1), np.ones(1)
    optimizer.step()
    assert (a.data[0], b.data[0], c.data[0]) == pytest.approx((0.9, 0.5, 1.0))
    assert c not in optimizer.state
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None


@pytest.mark.parametrize("make, argument", [
    (lambda p: SGD(p, lr=-0.1), "lr"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov"),
    (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), r"betas\[0\]"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), r"betas\[1\]"),
    (lambda p: Adam(p, eps=-1e-8), "eps"),
    (lambda p: SGD([{"params": p, "lr": -1}], lr=0.1), "lr"),
    (lambda p: SGD([], lr=0.1), "params"),
    (lambda p: SGD(p + p, lr=0.1), "more than once"),
    (lambda p: SGD([p[0] * 2], lr=0.1), "non-leaf"),
])
def test_invalid_arguments_are_named(make, argument):
    with pytest.raises(ValueError, match=argument):
        make([scalar()])


def test_non_numbers_are_type_errors():
    with pytest.raises(TypeError, match="lr"):
        SGD([scalar()], lr="0.1")


# --- state dicts -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01}], amsgrad=True),
])
def test_state_dict_npz_round_trip_resumes_exactly(make, tmp_path):
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal((2, 3)), rng.standard_normal(3)] for _ in range(4)]

    def train(params, optimizer, steps):
        for gs in steps:
            for p, g in zip(params, gs):
                p.grad = g.copy()
            optimizer.step()

    params = [nn.Parameter(np.ones((2, 3))), nn.Parameter(np.zeros(3))]
    reference = make(params)
    train(params, reference, grads)

    resumed_params = [nn.Parameter(np.ones((2, 3))), nn.Parameter(np.zeros(3))]
    first = make(resumed_params)
    train(resumed_params, first, grads[:2])
    np.savez(tmp_path / "opt.npz", **first.state_dict())
    second = make(resumed_params)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as archive:
        second.load_state_dict(dict(archive))
    train(resumed_params, second, grads[2:])
    for p, q in zip(params, resumed_params):
        np.testing.assert_array_equal(p.data, q.data)
    for restored, original in zip(second.param_groups, reference.param_groups):
        assert {k: v for k, v in restored.items() if k != "params"} == {
            k: v for k, v in original.items() if k != "params"
        }


def test_state_dict_layout_and_load_errors():
    p, q = scalar(), scalar()
    optimizer = Adam([p, q], lr=0.1)
    p.grad = np.ones(1)
    optimizer.step()
    state = optimizer.state_dict()
    assert sorted(state) == [
        "param_groups.0.amsgrad", "param_groups.0.betas", "param_groups.0.eps", "param_groups.0.lr",
        "param_groups.0.params", "param_groups.0.weight_decay",
        "state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step",
    ]
    np.testing.assert_array_equal(state["param_groups.0.params"], [0, 1])
    state["state.0.exp_avg"][...] = 5  # a copy
    assert optimizer.state[p]["exp_avg"][0] != 5
    with pytest.raises(ValueError, match="missing keys"):
        SGD([p, q], lr=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="'state.0.exp_avg' must be a float array of shape"):
        optimizer.load_state_dict({**state, "state.0.exp_avg": np.zeros(3)})
    with pytest.raises(ValueError, match="unexpected key 'state.7.exp_avg'"):
        optimizer.load_state_dict({**state, "state.7.exp_avg": np.zeros(1)})
    with pytest.raises(ValueError, match="holds 1 parameters"):
        Adam([p], lr=0.1).load_state_dict(state)


# --- clipping ----------------------------------------------------------------------------------
def test_clip_grad_norm():
    a, b, c = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([12.0])
    assert clip_grad_norm_([a, b, c], max_norm=1.0) == pytest.approx(13.0)
    np.testing.assert_allclose(a.grad, np.array([3.0, 4.0]) / (13 + 1e-6), rtol=1e-15)
    np.testing.assert_allclose(b.grad, [12.0 / (13 + 1e-6)], rtol=1e-15)
    assert c.grad is None
    a.grad, b.grad = np.array([3.0, -4.0]), np.array([1.0])
    assert clip_grad_norm_([a, b], max_norm=10.0, norm_type=math.inf) == 4.0
    np.testing.assert_array_equal(a.grad, [3.0, -4.0])  # c = 1
    assert clip_grad_norm_([a, b], max_norm=10.0, norm_type=1) == 8.0
    assert clip_grad_norm_([c], max_norm=1.0) == 0.0
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm_([a], 1.0, norm_type=0)


# --- schedulers --------------------------------------------------------------------------------
def lrs(scheduler, steps, metrics=None):
    values = [scheduler.get_last_lr()[0]]
    for i in range(steps):
        scheduler.step(*([] if metrics is None else [metrics[i]]))
        values.append(scheduler.get_last_lr()[0])
    return values


def test_step_lr():
    optimizer = SGD([scalar()], lr=1.0)
    assert lrs(StepLR(optimizer, step_size=2, gamma=0.5), 5) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert optimizer.param_groups[0]["lr"] == 0.25


def test_cosine_annealing_matches_the_closed_form_past_t_max():
    optimizer = SGD([{"params": [scalar()]}, {"params": [scalar()], "lr": 0.5}], lr=1.0)
    scheduler = CosineAnnealingLR(optimizer, T_max=4, eta_min=0.1)
    for t in range(12):
        expected = [0.1 + (b - 0.1) * (1 + math.cos(math.pi * t / 4)) / 2 for b in (1.0, 0.5)]
        assert scheduler.get_last_lr() == pytest.approx(expected, abs=1e-14)
        scheduler.step()
    assert lrs(CosineAnnealingLR(SGD([scalar()], lr=1.0), T_max=2), 2) == pytest.approx([1.0, 0.5, 0.0], abs=1e-15)


def test_reduce_on_plateau_patience_and_min_lr():
    optimizer = SGD([scalar()], lr=1.0)
    scheduler = ReduceLROnPlateau(optimizer, factor=0.5, patience=2, min_lr=0.3)
    metrics = [10, 9, 9, 9, 9, 8, 8, 8, 8, 8, 8, 8]
    # bad epochs after 9: 1, 2, 3 > patience -> halve; 8 improves; then 1, 2, 3 -> halve to the floor 0.3
    assert lrs(scheduler, 12, metrics) == [1.0, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3]


def test_reduce_on_plateau_cooldown_threshold_and_max_mode():
    optimizer = SGD([scalar()], lr=1.0)
    scheduler = ReduceLROnPlateau(optimizer, factor=0.5, patience=0, cooldown=1)
    assert lrs(scheduler, 6, [5] * 6) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    # rel threshold 0.1: 9.5 is not better than 10 * 0.9
    scheduler = ReduceLROnPlateau(SGD([scalar()], lr=1.0), factor=0.5, patience=0, threshold=0.1)
    assert lrs(scheduler, 3, [10, 9.5, 8.9]) == [1.0, 1.0, 0.5, 0.5]
    optimizer = SGD([scalar()], lr=1.0)
    scheduler = ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0, threshold=1, threshold_mode="abs")
    assert lrs(scheduler, 3, [0.5, 1.2, 1.6]) == [1.0, 1.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(optimizer, factor=1.0)
    with pytest.raises(ValueError, match="min_lr"):
        ReduceLROnPlateau(optimizer, min_lr=[0.1, 0.2])


def test_scheduler_state_dict_round_trip(tmp_path):
    optimizer = SGD([scalar()], lr=1.0)
    scheduler = ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    for metric in (3, 3, 3):
        scheduler.step(metric)
    np.savez(tmp_path / "s.npz", **scheduler.state_dict())
    other = ReduceLROnPlateau(SGD([scalar()], lr=1.0), factor=0.5, patience=1)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as archive:
        other.load_state_dict(dict(archive))
    assert vars(other).keys() == vars(scheduler).keys()
    assert {k: v for k, v in vars(other).items() if k != "optimizer"} == {
        k: v for k, v in vars(scheduler).items() if k != "optimizer"
    }
    cosine = CosineAnnealingLR(SGD([scalar()], lr=1.0), T_max=5)
    cosine.step()
    restored = CosineAnnealingLR(SGD([scalar()], lr=1.0), T_max=5)
    restored.load_state_dict(cosine.state_dict())
    assert restored.last_epoch == 1 and restored.get_last_lr() == cosine.get_last_lr()


def test_loaded_hyperparameters_keep_their_saved_values():
    optimizer = SGD([scalar()], lr=1.0, momentum=0.9)
    optimizer.param_groups[0]["lr"] = 0.25
    state = {k: np.asarray(v) for k, v in optimizer.state_dict().items()}  # as read from an .npz
    fresh = SGD([scalar()], lr=1, momentum=0.9)  # an int lr must not truncate the loaded 0.25
    fresh.load_state_dict(state)
    group = fresh.param_groups[0]
    assert group["lr"] == 0.25 and type(group["lr"]) is float and group["nesterov"] is False
