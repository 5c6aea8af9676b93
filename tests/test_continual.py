"""Continual learning: scenarios, metrics, the replay buffer, GPM, the loop and its CLI."""


import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lance_ref import functional as F
from lance_ref.continual import (
    ClassBalancedReservoir, average_accuracy, backward_transfer, extend_memory, forgetting, head_names,
    load_benchmark, make_scenario, patch_rows, project_out, protected_layers, split_classes,
)
from lance_ref.continual.metrics import ragged
from lance_ref.data import Dataset
from lance_ref.experiments.continual import ContinualConfig, run
from lance_ref.experiments.report import pyplot
from lance_ref.nn import BatchNorm2d, Conv2d, Linear, Module, ModuleList, ReLU
from lance_ref.tensor import Tensor

from helpers import cut_before_task_1, interrupted_and_resumed
from strategies import arrays


# --- scenarios -------------------------------------------------------------------------------
@given(st.integers(1, 8), st.integers(1, 6), st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_split_puts_every_class_in_exactly_one_task(tasks, per_task, seed):
    splits = split_classes(tasks * per_task, tasks, seed)
    assert len(splits) == tasks and all(len(s) == per_task for s in splits)
    assert sorted(c for s in splits for c in s) == list(range(tasks * per_task))
    assert splits == split_classes(tasks * per_task, tasks, seed)  # the order is the seed's
    if seed is None:
        assert [c for s in splits for c in s] == list(range(tasks * per_task))


def test_split_rejects_classes_that_do_not_divide():
    with pytest.raises(ValueError, match="10 classes do not divide into 3 tasks"):
        split_classes(10, 3, 0)


def test_split_mnist_tasks_relabel_locally():
    scenario = load_benchmark("split-mnist", seed=0)
    assert len(scenario.tasks) == 5 and scenario.head_sizes("task") == [2] * 5 and scenario.head_sizes("class") == [10]
    for task in scenario.tasks:
        assert set(task.train.labels) == {0, 1} and len(task.test) == 200
        assert task.global_labels(np.array([0, 1])).tolist() == [task.offset, task.offset + 1]


@pytest.mark.parametrize("benchmark, message", [
    ("split-svhn", "unknown benchmark 'split-svhn'"),
    ("split-cifar10", "split-cifar10 needs data_path"),
])
def test_bad_benchmarks_are_clear_errors(benchmark, message):
    with pytest.raises(ValueError, match=message):
        load_benchmark(benchmark, seed=0)


def test_missing_dataset_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark("split-cifar100", seed=0, data_path=str(tmp_path / "nowhere"))


# --- metrics ---------------------------------------------------------------------------------
def test_metrics_by_hand():
    r = np.array([[0.9, 0, 0], [0.8, 0.95, 0], [0.7, 0.9, 1.0]])
    assert average_accuracy(r) == pytest.approx((0.7 + 0.9 + 1.0) / 3)
    assert backward_transfer(r) == pytest.approx(((0.7 - 0.9) + (0.9 - 0.95)) / 2)
    assert forgetting(r) == pytest.approx([0.2, 0.05])
    assert ragged(r) == [[0.9], [0.8, 0.95], [0.7, 0.9, 1.0]]


@given(st.integers(1, 6).flatmap(lambda t: st.lists(st.floats(0, 1), min_size=t * t, max_size=t * t)))
def test_metrics_on_drawn_matrices(values):
    t = int(round(len(values) ** 0.5))
    r = np.tril(np.array(values).reshape(t, t))
    assert average_accuracy(r) == pytest.approx(r[-1].mean())
    bwt = backward_transfer(r)
    assert bwt == pytest.approx(0.0 if t == 1 else np.mean([r[-1, j] - r[j, j] for j in range(t - 1)]))
    assert -1 <= bwt <= 1
    drops = forgetting(r)
    assert len(drops) == t - 1 and all(d >= r[j, j] - r[-1, j] - 1e-12 for j, d in enumerate(drops))
    unchanged = np.tril(np.tile(np.diag(r), (t, 1)))  # every task keeps its accuracy
    assert backward_transfer(unchanged) == pytest.approx(0) and forgetting(unchanged) == pytest.approx([0] * (t - 1))


@pytest.mark.parametrize("matrix", [np.zeros((2, 3)), np.zeros((0, 0)), np.array([[1.5]]), np.array([[np.nan]])])
def test_bad_accuracy_matrices_are_refused(matrix):
    with pytest.raises(ValueError, match="accuracy matrix"):
        average_accuracy(matrix)


# --- replay buffer ---------------------------------------------------------------------------
@given(st.integers(1, 30), st.lists(st.integers(0, 5), min_size=1, max_size=200), st.integers(0, 2**16))
def test_reservoir_stays_class_balanced(capacity, stream, seed):
    buffer = ClassBalancedReservoir(capacity, (1,))
    rng = np.random.default_rng(seed)
    labels = np.array(stream)
    buffer.add(labels[:, None].astype(np.uint8), labels, labels, np.zeros_like(labels), rng)
    held = np.bincount(buffer.classes[: buffer.size], minlength=6)
    assert buffer.size == min(capacity, len(stream))
    assert (buffer.images[: buffer.size, 0] == buffer.classes[: buffer.size]).all()  # samples stay whole
    seen = np.bincount(labels, minlength=6)
    # A class keeps all its samples or is among the largest, within one of each other.
    largest = held.max()
    assert all(held[c] == seen[c] or held[c] >= largest - 1 for c in range(6))


def test_reservoir_state_round_trips_and_zero_size_is_refused():
    buffer = ClassBalancedReservoir(4, (2,))
    buffer.add(np.ones((6, 2), np.uint8), np.arange(6) % 2, np.arange(6) % 2, np.zeros(6, np.int64), np.random.default_rng(0))
    copy = ClassBalancedReservoir(4, (2,))
    copy.load_state(buffer.state())
    assert copy.size == 4 and copy.seen == {0: 3, 1: 3} and (copy.classes == buffer.classes).all()
    assert sum(a.nbytes for a in buffer.state().values()) == 4 * 2 + 3 * 4 * 8 + 2 * 2 * 8  # samples, seen counts
    with pytest.raises(ValueError, match="buffer_size must be a positive int"):
        ClassBalancedReservoir(0, (2,))


# --- GPM -------------------------------------------------------------------------------------
@given(st.integers(0, 2**16), st.integers(2, 12), st.floats(0.5, 0.999))
def test_gpm_memory_is_orthonormal_and_projection_annihilates_it(seed, features, threshold):
    rng = np.random.default_rng(seed)
    memory = None
    for _ in range(3):  # three tasks
        representation = rng.standard_normal((features, 3)) @ rng.standard_normal((3, 20))
        memory = extend_memory(memory, representation, threshold)
        assert memory.shape[0] == features and memory.shape[1] <= features
        np.testing.assert_allclose(memory.T @ memory, np.eye(memory.shape[1]), atol=1e-10)
        grad = rng.standard_normal((5, features))
        assert np.abs(project_out(grad, memory) @ memory).max(initial=0) < 1e-10


def test_gpm_memory_by_hand():
    # Energy 9, 4, 1 along e0, e1, e2: threshold 0.9 keeps e0 (9/14 < 0.9), not e1 (13/14 >= 0.9).
    r = np.diag([3.0, 2.0, 1.0])
    m = extend_memory(None, r, 0.9)
    assert m.shape == (3, 1) and abs(m[0, 0]) == 1
    # The next task: M explains 9/14; e1 is added (9/14 < 0.95), then 13/14 < 0.95 adds e2 too.
    assert extend_memory(m, r, 0.95).shape == (3, 3)
    with pytest.raises(ValueError, match="threshold must lie in"):
        extend_memory(None, r, 1.5)


@given(st.data())
def test_patch_rows_times_weight_is_the_conv(data):
    kernel, stride, padding = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2)), data.draw(st.integers(0, 1))
    conv = Conv2d(2, 3, kernel, stride=stride, padding=padding, bias=False, dtype=np.float64)
    x = data.draw(arrays((2, 2, 5, 5)))
    y = F.conv2d(Tensor(x), conv.weight, None, stride, padding).data
    rows = patch_rows(conv, x)
    expected = (rows @ conv.weight.data.reshape(3, -1).T).reshape(2, y.shape[2], y.shape[3], 3).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(expected, y, atol=1e-12)


# --- the loop --------------------------------------------------------------------------------
class TinyNet(Module):
    """conv -> BN -> relu -> linear -> heads: the smallest model with a head per task."""

    def __init__(self, heads, track_running_stats=False, dtype=np.float64):
        super().__init__()
        self.conv = Conv2d(1, 4, 3, bias=False, dtype=dtype)
        self.bn = BatchNorm2d(4, track_running_stats=track_running_stats, dtype=dtype)
        self.relu = ReLU()
        self.fc = Linear(4 * 4 * 4, 8, bias=False, dtype=dtype)
        self.heads = ModuleList([Linear(8, n, bias=False, dtype=dtype) for n in heads])

    def forward(self, x, task=None):
        h = self.relu(self.fc(F.flatten(self.relu(self.bn(self.conv(x))), 1)))
        if task is not None:
            return self.heads[task](h)
        logits = [head(h) for head in self.heads]
        return logits[0] if len(logits) == 1 else logits  # as the zoo's models


def tiny_scenario():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 12)
    images = (rng.random((48, 1, 6, 6)) * 100 + labels[:, None, None, None] * 40).astype(np.uint8)
    data = Dataset(images, labels, tuple("abcd"), "tiny", (0.3,), (0.2,))
    return make_scenario(data, data, 2, seed=1)


def test_a_shortened_scenario_keeps_the_first_tasks_and_samples_of_each_class():
    scenario = tiny_scenario()
    short = scenario.shortened(1, 3)
    assert len(short.tasks) == 1 and short.class_order == scenario.class_order
    task, whole = short.tasks[0], scenario.tasks[0]
    assert np.bincount(task.train.labels).tolist() == [3, 3] and task.test is whole.test
    first = [np.flatnonzero(whole.train.labels == label)[:3] for label in (0, 1)]
    np.testing.assert_array_equal(task.train.images, whole.train.images[np.sort(np.concatenate(first))])
    assert scenario.shortened() is not scenario and len(scenario.shortened(0, 0).tasks) == 2
    with pytest.raises(ValueError, match="tasks must be in 0..2"):
        scenario.shortened(3)


def test_heads_and_protected_layers():
    model = TinyNet([2, 2])
    assert head_names(model) == ["heads.0", "heads.1"]
    assert list(protected_layers(model)) == ["conv", "fc"]


def gradient_on_task_1(strategy_name, model, scenario, config):
    """The strategy after training task 0, with the gradient of task 1's first full pass."""
    from lance_ref.continual import make_strategy
    from lance_ref.continual.loop import train_task
    from lance_ref.continual.steps import task_loss
    from lance_ref.data import normalize

    strategy = make_strategy(strategy_name, model, scenario, config)
    norm = lambda images: normalize(images, (0.3,), (0.2,), np.float64)  # noqa: E731
    train_task(model, strategy, scenario.tasks[0], config, norm, show=False)
    task = scenario.tasks[1]
    strategy.before_task(task, norm)
    model.zero_grad()
    samples = strategy.training_samples(task)
    task_loss(model, norm(samples.images[:8]), samples.labels[:8], samples.tasks[:8], "task").backward()
    strategy.after_backward(task)
    return strategy


def test_gpm_gradients_are_orthogonal_to_the_memory():
    config = ContinualConfig(strategy="gpm", epochs=2, batch_size=8, lr=0.05, dtype="float64", gpm_threshold=0.9)
    model = TinyNet([2, 2])
    strategy = gradient_on_task_1("gpm", model, tiny_scenario(), config)
    for name, layer in strategy.layers.items():
        memory = strategy.memory[name]
        assert memory.shape[1] > 0
        assert np.abs(layer.weight.grad.reshape(len(layer.weight.grad), -1) @ memory).max() < 1e-10


TINY_LIGHTCL = dict(lightcl_freeze="fc", lightcl_features="fc", lightcl_buffer=4)  # TinyNet has no defaults


def run_tiny(tmp_path, strategy, monkeypatch, running_stats=False, show=False, **overrides):
    scenario = tiny_scenario()
    monkeypatch.setattr("lance_ref.experiments.continual.load_benchmark", lambda *a, **k: scenario)
    built = []

    def build_tiny(name, **options):
        built.append(TinyNet(options["heads"], running_stats))
        return built[-1]

    monkeypatch.setattr("lance_ref.experiments.continual.build_model", build_tiny)
    settings = dict(epochs=2, batch_size=8, lr=0.05, dtype="float64", buffer_size=6, representation_samples=10, **TINY_LIGHTCL)
    config = ContinualConfig(strategy=strategy, **{**settings, **overrides})
    results = run(config, tmp_path, show=show)
    run_tiny.model = built[-1]
    return results


@pytest.mark.parametrize("strategy", ["gpm", "lance"])
def test_gpm_reads_the_per_layer_sample_counts_the_model_names(tmp_path, monkeypatch, strategy):
    from lance_ref.continual import strategies

    original, seen = strategies.patch_rows, []
    monkeypatch.setattr(strategies, "patch_rows", lambda layer, x: seen.append(len(x)) or original(layer, x))
    monkeypatch.setattr(TinyNet, "representation_samples", {"conv": 3}, raising=False)
    run_tiny(tmp_path, strategy, monkeypatch)
    assert seen == [3, 10, 3, 10]  # conv then fc, after each of the two tasks
    from lance_ref.nn import AlexNetGPM

    assert list(AlexNetGPM.representation_samples.values()) == [24, 100, 100, 125, 125]  # GPM's batch_list


@pytest.mark.parametrize("strategy", ["finetune", "joint", "er", "ewc", "gpm", "lance", "lightcl"])
@pytest.mark.parametrize("setting", ["task", "class"])
def test_every_strategy_runs_and_reports(tmp_path, monkeypatch, strategy, setting):
    results = run_tiny(tmp_path, strategy, monkeypatch, setting=setting)
    assert len(results["accuracy_matrix"]) == 2 and 0 <= results["acc"] <= 100
    assert results["activation_bytes"] > 0 and len(results["task_seconds"]) == 2
    assert (results["strategy_bytes"] > 0) == (strategy != "finetune")
    assert results["persistent_bytes"] > results["strategy_bytes"]  # the model's own bytes too
    assert results["peak_step_bytes"] > results["persistent_bytes"] + results["activation_bytes_all_ops"]
    assert (tmp_path / "results.json").exists() and not (tmp_path / "checkpoint.npz").exists()  # removed once done
    assert (tmp_path / "accuracy_matrix.png").exists() == (pyplot() is not None)  # the `plot` extra


def test_replay_doubles_the_activation_bytes(tmp_path, monkeypatch):
    plain = run_tiny(tmp_path / "a", "finetune", monkeypatch)
    replay = run_tiny(tmp_path / "b", "er", monkeypatch)
    assert replay["activation_bytes"] > plain["activation_bytes"]


@pytest.mark.parametrize("strategy", ["er", "ewc", "gpm", "lance", "lightcl"])
def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch, strategy):
    whole, resumed = interrupted_and_resumed(lambda out, **o: run_tiny(out, strategy, monkeypatch, **o), tmp_path, monkeypatch)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["strategy_bytes"] == whole["strategy_bytes"]


def cut_after_task_0(tmp_path, monkeypatch, strategy="er", **overrides):
    """A run of `strategy` on the tiny tasks, interrupted before task 1: its checkpoint stays."""
    cut_before_task_1(lambda: run_tiny(tmp_path, strategy, monkeypatch, **overrides), monkeypatch)
    assert (tmp_path / "checkpoint.npz").exists()


def test_a_resume_with_other_settings_is_refused_with_each_difference(tmp_path, monkeypatch):
    cut_after_task_0(tmp_path, monkeypatch, "er")
    message = "is of a run with other settings \\(epochs 2 there, 3 here; seed 0 there, 1 here\\)"
    with pytest.raises(ValueError, match=message):
        run_tiny(tmp_path, "er", monkeypatch, resume=True, seed=1, epochs=3)
    with pytest.raises(ValueError, match="strategy 'er' there, 'ewc' here; ewc_lambda none there, 100.0 here; buffer_size 6 there, none here\\)"):
        run_tiny(tmp_path, "ewc", monkeypatch, resume=True)
    kept = run_tiny(tmp_path, "er", monkeypatch, resume=True, keep_checkpoint=True)  # may change on resume
    assert len(kept["accuracy_matrix"]) == 2 and (tmp_path / "checkpoint.npz").exists()


def test_a_resumed_run_says_so_and_reprints_the_earlier_rows(tmp_path, monkeypatch, capsys):
    cut_after_task_0(tmp_path, monkeypatch, "gpm")
    capsys.readouterr()
    run_tiny(tmp_path, "gpm", monkeypatch, show=True, resume=True)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"resumed from {tmp_path / 'checkpoint.npz'}: task 1 done, continuing with task 2/2"
    assert lines[1].startswith("after task 1/2: test accuracy per task (%) ")
    assert lines[-1].startswith("after task 2/2: test accuracy per task (%) ") and "left" not in lines[-1]
    assert "task 2/2 epoch 2/2 [" in err and "task 2 memory update [" in err and " test=" in err


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line(tmp_path):
    from lance_ref.continual import make_strategy
    from lance_ref.continual.loop import load_progress, save_progress

    scenario, config = tiny_scenario(), ContinualConfig()
    model = TinyNet([2, 2])
    save_progress(tmp_path / "c.npz", model, make_strategy("finetune", model, scenario, config), {"next_task": 1}, {})
    other = TinyNet([2, 2, 2])
    with pytest.raises(ValueError) as raised:
        load_progress(tmp_path / "c.npz", other, make_strategy("finetune", other, scenario, config), {})
    assert str(raised.value).startswith(f"checkpoint {tmp_path / 'c.npz'} does not fit this model and strategy: ")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("change, message", [
    (dict(strategy="lwf"), "unknown strategy 'lwf'"),
    (dict(strategy="er", buffer_size=0), "buffer_size must be >= 1"),
    (dict(setting="domain"), "setting must be one of"),
    (dict(gpm_threshold=0.0, strategy="gpm"), "gpm_threshold must lie in"),
    (dict(strategy="lightcl", lightcl_freeze="conv9"), "freeze point 'conv9' names no layer with parameters"),
    (dict(strategy="lightcl", lightcl_freeze="relu"), "freeze point 'relu' names no layer with parameters"),
    (dict(strategy="lightcl", lightcl_features="fc,head"), "lightcl_features names no module of the model: \\['head'\\]"),
    (dict(strategy="lightcl", lightcl_mask_ratio=0.0), "lightcl_mask_ratio must lie in \\(0, 1\\]"),
    (dict(strategy="lightcl", lightcl_mask_ratio=1.5), "lightcl_mask_ratio must lie in \\(0, 1\\]"),
    (dict(strategy="lightcl", lightcl_buffer=25), "lightcl_buffer \\(25\\) is larger than a task's training data \\(24 samples\\)"),
])
def test_bad_configs_are_clear_errors(tmp_path, monkeypatch, change, message):
    with pytest.raises(ValueError, match=message):
        run_tiny(tmp_path, change.pop("strategy", "finetune"), monkeypatch, **change)


def test_every_strategy_option_is_a_config_field_and_a_flag():
    from dataclasses import fields

    from lance_ref.cli import build_parser
    from lance_ref.continual import STRATEGIES

    config = {f.name: f.default for f in fields(ContinualConfig)}
    continual = build_parser()._subparsers._group_actions[0].choices["continual"]
    flags = {option for action in continual._actions for option in action.option_strings}
    for strategy in STRATEGIES.values():
        for option in fields(strategy.Options):
            assert config[option.name] == option.default
            assert "--" + option.name.replace("_", "-") in flags


def test_two_strategies_may_not_give_one_option_two_defaults():
    from dataclasses import dataclass

    from lance_ref.continual import STRATEGIES
    from lance_ref.experiments.continual import RunSettings
    from lance_ref.options import Options, flat_config

    @dataclass(frozen=True)
    class Stricter(Options):
        buffer_size: int = 10

    with pytest.raises(TypeError, match="Stricter gives option buffer_size another default"):
        flat_config("Config", RunSettings, [*(s.Options for s in STRATEGIES.values()), Stricter], "")


def test_cli_reports_bad_strategies_before_any_work(tmp_path, capsys):
    from lance_ref.cli import main

    assert main(["continual", "--strategy", "lwf", "--out", str(tmp_path)]) == 2
    assert main(["continual-sweep", "--strategies", "er,lwf", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("unknown strategy 'lwf'") == 2


def test_sweep_table_lists_every_strategy():
    from lance_ref.experiments.continual_sweep import format_table

    row = dict(seeds=3, acc=90.0, acc_std=1.0, bwt=-2.0, activation_bytes=2048, strategy_bytes=0, replay_bytes=0, peak_step_bytes=2**20, task_seconds=1.0)
    table = format_table([dict(strategy="er", **row), dict(strategy="gpm", **row)]).splitlines()
    assert len(table) == 3 and table[1].startswith("er") and "-2.00" in table[2]


# --- LANCE-CL --------------------------------------------------------------------------------
@given(st.integers(0, 2**16), st.integers(1, 120), st.data())
def test_complement_basis_is_orthonormal_and_off_the_protected_span(seed, features, data):
    from lance_ref.continual import complement_basis

    rng = np.random.default_rng(seed)
    protected = np.linalg.qr(rng.standard_normal((features, data.draw(st.integers(0, features)))))[0]
    x = rng.standard_normal((features, 30))
    if data.draw(st.booleans()):  # the task's inputs entirely inside span(P): no energy left
        x = protected @ (protected.T @ x)
    u = complement_basis(x @ x.T, protected, data.draw(st.floats(0.5, 1.0)), np.float64)
    free = features - protected.shape[1]
    if features <= 80 or free == 0:
        assert u.shape[1] == free
    else:
        assert 1 <= u.shape[1] <= free
    np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-10)
    assert np.abs(u.T @ protected).max(initial=0) < 1e-10


def test_lance_updates_annihilate_the_protected_basis():
    """dW P = 0 for every protected layer, so a step leaves outputs on span(P) unchanged."""
    config = ContinualConfig(strategy="lance", epochs=2, batch_size=8, lr=0.05, dtype="float64", gpm_threshold=0.9,
                             lance_eps=0.9)
    model = TinyNet([2, 2])
    strategy = gradient_on_task_1("lance", model, tiny_scenario(), config)
    rng = np.random.default_rng(0)
    for name, layer in strategy.layers.items():
        p = strategy.memory[name]
        grad = layer.weight.grad.reshape(len(layer.weight.grad), -1)
        assert p.shape[1] > 0 and np.abs(grad @ p).max() < 1e-10 * max(1.0, np.abs(grad).max())
        rows = rng.standard_normal((4, p.shape[1])) @ p.T  # inputs in span(P)
        before = rows @ layer.weight.data.reshape(len(grad), -1).T
        after = rows @ (layer.weight.data.reshape(len(grad), -1) - 0.05 * grad).T
        np.testing.assert_allclose(after, before, atol=1e-10)


def test_lance_counts_its_bases_as_persistent_not_activation(tmp_path, monkeypatch):
    gpm = run_tiny(tmp_path / "gpm", "gpm", monkeypatch)
    lance = run_tiny(tmp_path / "lance", "lance", monkeypatch)
    assert lance["activation_bytes_by_task"][0] == gpm["activation_bytes_by_task"][0]  # task 0: full backprop
    assert lance["activation_bytes"] < gpm["activation_bytes"]


def test_projection_strategies_refuse_grouped_convs():
    from lance_ref.continual import make_strategy

    model = TinyNet([2, 2])
    model.conv = Conv2d(2, 4, 3, groups=2, bias=False)  # the strategies check it before any forward
    scenario = tiny_scenario()
    config = ContinualConfig()
    make_strategy("finetune", model, scenario, config)  # any model for the plain strategies
    for strategy in ("gpm", "lance"):
        with pytest.raises(ValueError, match="groups=1 convs only"):
            make_strategy(strategy, model, scenario, config)


def write_cifar10_binary(root, per_class_train=2, per_class_test=1):
    """A miniature CIFAR-10 binary release whose every class has samples."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def records(per_class):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        return np.concatenate([labels[:, None], rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)], 1).tobytes()

    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(records(per_class_train))
    (folder / "test_batch.bin").write_bytes(records(per_class_test))


def test_split_cifar10_from_a_path_runs(tmp_path):
    write_cifar10_binary(tmp_path)
    scenario = load_benchmark("split-cifar10", seed=3, data_path=str(tmp_path))
    assert len(scenario.tasks) == 5 and all(len(t.train) == 20 and len(t.test) == 2 for t in scenario.tasks)
    config = ContinualConfig(benchmark="split-cifar10", data_path=str(tmp_path), strategy="finetune", epochs=1,
                             batch_size=10, representation_samples=8, seed=3)
    results = run(config, tmp_path / "out", show=False)
    assert len(results["accuracy_matrix"]) == 5 and results["class_order"] == list(scenario.class_order)


def test_a_task_without_samples_is_a_clear_error():
    data = Dataset(np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 0, 1, 1]), tuple("abcd"), "tiny", (0.5,), (0.2,))
    with pytest.raises(ValueError, match=r"task 1 \(classes \[2, 3\]\) has no training or no test samples"):
        make_scenario(data, data, 2, seed=None)


@pytest.mark.parametrize("strategy", ["gpm", "lance"])
def test_batchnorm_is_frozen_after_task_0_with_its_running_statistics(tmp_path, monkeypatch, strategy):
    from lance_ref.continual import loop

    original, seen = loop.train_task, []

    def watch(model, strategy, task, *args, **kwargs):
        ledger = original(model, strategy, task, *args, **kwargs)
        seen.append((model.bn.weight.data.copy(), model.bn.running_mean.copy()))
        return ledger

    monkeypatch.setattr(loop, "train_task", watch)
    run_tiny(tmp_path, strategy, monkeypatch, running_stats=True, setting="class")
    (w0, m0), (w1, m1) = seen
    assert np.array_equal(w0, w1) and np.array_equal(m0, m1)


def test_only_models_with_task_heads_are_accepted(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="model must be one of"):
        run_tiny(tmp_path, "finetune", monkeypatch, model="small-cnn")


class PixelLogits(Module):
    """Logits that are the first pixels of each image: predictions independent of batch-mates."""

    def forward(self, x, task=None):
        return F.flatten(x, 1)[:, :4]


def test_class_incremental_evaluation_pools_the_tasks_and_splits_them_back():
    from lance_ref.continual.steps import evaluate

    scenario = tiny_scenario()
    identity = lambda images: images.astype(np.float64)  # noqa: E731
    pooled = evaluate(PixelLogits(), scenario.tasks, "class", identity, np.random.default_rng(0))
    for task, value in zip(scenario.tasks, pooled):
        logits = task.test.images.reshape(len(task.test), -1)[:, :4]
        assert value == pytest.approx((logits.argmax(1) == task.global_labels(task.test.labels)).mean())


# --- LightCL ---------------------------------------------------------------------------------
def lightcl_after_tasks(setting="task"):
    """LightCL on TinyNet through both tiny tasks: (strategy, normalize, snapshots after each task)."""
    from lance_ref.continual import make_strategy
    from lance_ref.continual.loop import normalizer, train_task

    scenario = tiny_scenario()
    config = ContinualConfig(strategy="lightcl", setting=setting, epochs=2, batch_size=8, lr=0.05, dtype="float64", **TINY_LIGHTCL)
    model = TinyNet(scenario.head_sizes(setting))
    strategy, normalize = make_strategy("lightcl", model, scenario, config), normalizer(scenario, "float64")
    snapshots = []
    for task in scenario.tasks:
        train_task(model, strategy, task, config, normalize, show=False)
        snapshots.append(({n: p.data.copy() for n, p in model.named_parameters()}, {n: m.copy() for n, m in strategy.masks.items()}))
    return strategy, normalize, snapshots


def test_lightcl_freezes_the_lower_layers_and_grows_its_masks():
    strategy, _, ((params0, masks0), (params1, masks1)) = lightcl_after_tasks()
    for name in ("conv.weight", "bn.weight", "bn.bias"):  # before the freeze point: bit-identical
        assert np.array_equal(params0[name], params1[name])
    assert not np.array_equal(params0["fc.weight"], params1["fc.weight"])
    assert masks0["fc"].sum() == np.ceil(0.15 * 8)  # the top 15% of fc's 8 units
    assert (masks1["fc"] >= masks0["fc"]).all()  # OR-ed over tasks: never shrinks
    strategy.model.train()
    assert not strategy.model.bn.training and strategy.model.fc.training  # the frozen BatchNorm stays in eval mode


@pytest.mark.parametrize("setting", ["task", "class"])
def test_lightcl_penalty_is_zero_until_the_model_changes(setting):
    strategy, normalize, _ = lightcl_after_tasks(setting)
    task = strategy.scenario.tasks[1]
    strategy.before_task(task, normalize)  # old features and logits of the buffer, from this model
    assert strategy.buffer.size == 4 and set(strategy.buffer.tasks[:4]) == {0, 1}
    assert strategy.penalty(task, normalize).item() == 0
    strategy.model.fc.weight.data[np.flatnonzero(strategy.masks["fc"])[0]] += 0.5  # a masked unit moves
    moved = strategy.penalty(task, normalize)
    assert moved.item() > 0
    moved.backward()
    assert np.abs(strategy.model.fc.weight.grad).sum() > 0 and strategy.model.conv.weight.grad is None


def test_channel_importance_and_top_channels_by_hand():
    from lance_ref.continual.lightcl import channel_importance, top_channels

    features = np.array([[[[1.0, -2.0]], [[0.5, 0.0]], [[-3.0, 0.0]]]])  # (1, 3, 1, 2)
    importance = channel_importance(features)
    assert importance.tolist() == [3.0, 0.5, 3.0]
    assert top_channels(importance, 0.5).tolist() == [True, False, True]  # ceil(1.5) = 2; ties keep order
    assert top_channels(importance, 0.1).tolist() == [True, False, False]
    assert channel_importance(np.array([[1.0, -1.0], [2.0, 0.0]])).tolist() == [3.0, 1.0]  # (N, C) features


@given(st.integers(0, 2**16), st.integers(3, 12), st.integers(1, 6), st.floats(0.1, 10.0))
def test_linear_cka_is_invariant_to_rotations_and_scale(seed, samples, width, scale):
    from lance_ref.continual.metrics import linear_cka

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, width))
    rotation = np.linalg.qr(rng.standard_normal((width, width)))[0]
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, scale * x @ rotation + 3.0) == pytest.approx(1.0)  # and to shifts (centred)
    y = rng.standard_normal((samples, width + 1))
    assert 0 <= linear_cka(x, y) <= 1 + 1e-12
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))


def test_linear_cka_bad_input():
    from lance_ref.continual.metrics import linear_cka

    with pytest.raises(ValueError, match="same n >= 2 samples"):
        linear_cka(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="constant over the samples"):
        linear_cka(np.ones((3, 2)), np.arange(6.0).reshape(3, 2))


def test_lightcl_analysis_reports_every_layer(tmp_path, monkeypatch):
    from lance_ref.cli import main

    scenario = tiny_scenario()
    monkeypatch.setattr("lance_ref.experiments.lightcl_analysis.load_benchmark", lambda *a, **k: scenario)
    monkeypatch.setattr("lance_ref.experiments.continual.build_model", lambda name, **options: TinyNet(options["heads"]))
    arguments = ["lightcl-analysis", "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--dtype", "float64"]
    assert main([*arguments, "--out", str(tmp_path), "--quiet"]) == 0
    import json

    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["layer"] for r in rows] == ["(none)", "conv", "fc"]
    assert rows[0]["plasticity"] == 1.0 and all(0 <= r["stability"] <= 1 + 1e-9 for r in rows[1:])


@pytest.mark.parametrize("model_name, frozen_last, trained_first", [
    ("resnet18-reduced", "layer3.1.bn2.bias", "layer4.0.conv1.weight"),
    ("alexnet-gpm", "bn3.bias", "fc1.weight"),
])
def test_lightcl_defaults_fit_the_zoo_models(model_name, frozen_last, trained_first):
    from lance_ref.continual.lightcl import frozen_before
    from lance_ref.nn import build_model

    model = build_model(model_name, num_classes=4, in_channels=1, image_size=28, heads=[2, 2])
    freeze, features = model.lightcl_layers
    frozen = frozen_before(model, freeze)
    names = [n for n, _ in model.named_parameters()]
    assert frozen[-1] == frozen_last and names[len(frozen)] == trained_first
    modules = dict(model.named_modules())
    assert all(name in modules for name in features.split(","))
