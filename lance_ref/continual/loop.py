"""Train task after task, evaluate every seen task after each, checkpoint between tasks
(specs/continual.md#loop).

Every random stream of task t (shuffling, replay draws, dropout, the test order) is seeded from (seed, t), so a
run resumed from the checkpoint of task t - 1 repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import memory, random
from ..binary import requantize_
from ..data import normalize as normalize_images
from ..io import flatten, load_npz, save_npz, unflatten
from ..optim import SGD
from ..progress import Progress
from .steps import evaluate, minibatches

CHECKPOINT = "checkpoint.npz"


def train_task(model, strategy, task, config, normalize, show: bool) -> tuple[memory.Ledger, int]:
    """Train `task` for `config.epochs`; returns the ledger of its first step and the number of
    parameters trained."""
    random.manual_seed(config.seed * 1000 + task.index)
    rng = np.random.default_rng((config.seed, task.index, 0))
    strategy.before_task(task, normalize)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = SGD(trainable, lr=config.lr)
    samples, ledger = strategy.training_samples(task), None
    model.train()
    for epoch in range(1, config.epochs + 1):
        label = f"task {task.index + 1}/{len(strategy.scenario.tasks)} epoch {epoch}/{config.epochs}"
        bar = Progress(minibatches(len(samples), config.batch_size, rng), label=label, enabled=show)
        for index in bar:
            batch = samples.take(index)
            loss = strategy.minibatch_loss(task, batch, rng, normalize)
            ledger = ledger or memory.ledger(loss, model.parameters(), strategy.fixed_arrays())
            optimizer.zero_grad()
            loss.backward()
            strategy.after_backward(task)
            optimizer.step()
            requantize_(model)
            strategy.after_step(batch, rng)
            bar.set(loss=loss.item())
    strategy.after_task(task, normalize)
    return ledger, sum(p.data.size for p in trainable)


def normalizer(scenario, dtype):
    """images -> the model's input: normalised by the first task's statistics, in `dtype`."""
    first = scenario.tasks[0].train

    def normalize(images):
        return normalize_images(images, first.mean, first.std, np.dtype(dtype))

    return normalize


def save_progress(path: Path, model, strategy, progress: dict) -> None:
    state = {"model": model.state_dict(), "progress": progress, "strategy": strategy.state()}
    save_npz(path, flatten({key: value for key, value in state.items() if value}))  # an empty mapping cannot be stored


def load_progress(path: Path, model, strategy) -> dict:
    state = unflatten(load_npz(path))
    if "model" not in state or "progress" not in state:
        raise ValueError(f"{path} is not a continual-learning checkpoint")
    try:
        model.load_state_dict(state["model"])
        strategy.load_state(state.get("strategy", {}))
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"checkpoint {path} does not fit this run: {error}") from error
    return state["progress"]


def run_tasks(model, scenario, strategy, config, out: Path, show: bool = True, resume: bool = False) -> dict:
    """Learn every task of `scenario` in turn; returns the accuracy matrix, per-task seconds
    and memory figures. With `resume`, continues from `out`/checkpoint.npz if it exists."""
    normalize = normalizer(scenario, config.dtype)
    count = len(scenario.tasks)
    matrix, seconds = np.zeros((count, count)), np.zeros(count)
    activation = np.zeros((count, 2), dtype=np.int64)  # weight layers, every op
    trainable = np.zeros(count, dtype=np.int64)
    start = 0
    if resume and (out / CHECKPOINT).exists():
        progress = load_progress(out / CHECKPOINT, model, strategy)
        start = int(progress["next_task"])
        matrix, seconds, activation = progress["accuracy_matrix"], progress["task_seconds"], progress["activation_bytes"]
        trainable = progress.get("trainable_parameters", trainable)  # absent from older checkpoints
    names = strategy.weight_layer_names()
    for task in scenario.tasks[start:]:
        began = time.perf_counter()
        ledger, trainable[task.index] = train_task(model, strategy, task, config, normalize, show)
        seconds[task.index] = time.perf_counter() - began
        activation[task.index] = ledger.bytes(names), ledger.bytes()
        seen = scenario.tasks[: task.index + 1]
        rng = np.random.default_rng((config.seed, task.index, 4))
        matrix[task.index, : task.index + 1] = evaluate(model, seen, config.setting, normalize, rng)
        if show:
            row = " ".join(f"{a:.3f}" for a in matrix[task.index, : task.index + 1])
            print(f"after task {task.index + 1}/{count}: accuracy per task {row}")
        progress = dict(next_task=task.index + 1, accuracy_matrix=matrix, task_seconds=seconds, activation_bytes=activation,
                        trainable_parameters=trainable)
        save_progress(out / CHECKPOINT, model, strategy, progress)
    return dict(accuracy_matrix=matrix, task_seconds=seconds, activation_bytes=activation, trainable_parameters=trainable)
