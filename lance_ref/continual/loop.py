"""Train task after task, evaluate every seen task after each, checkpoint between tasks
(specs/continual.md#loop).

Every random stream of task t (shuffling, replay draws, dropout, the test order) is seeded from (seed, t), so a
run resumed from the checkpoint of task t - 1 repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import memory, random
from ..data import normalize as normalize_images
from ..io import flatten, load_npz, save_npz, unflatten
from ..optim import SGD
from ..progress import Progress, duration
from ..train import percent
from .steps import evaluate, minibatches

CHECKPOINT = "checkpoint.npz"


@dataclass
class TaskResult:
    """What training one task measured (specs/memory.md)."""

    ledger: memory.Ledger  # of its first step
    trainable_parameters: int
    peak_step_bytes: int  # the second step's measured peak
    persistent_bytes: int  # model, gradients, optimiser state and the strategy's kept bytes


def train_task(model, strategy, task, config, normalize, show: bool) -> TaskResult:
    """Train `task` for `config.epochs`; the first step's graph goes to the ledger and the
    second step (after the first as warm-up) is measured."""
    random.manual_seed(config.seed * 1000 + task.index)
    rng = np.random.default_rng((config.seed, task.index, 0))
    strategy.before_task(task, normalize)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = SGD(trainable, lr=config.lr)
    samples, ledger, peak, steps = strategy.training_samples(task), None, None, 0

    def tested() -> dict:  # the task's test accuracy for the bar (its own stream: no other draw moves)
        return dict(test=percent(evaluate(model, [task], config.setting, normalize, np.random.default_rng((config.seed, task.index, 6)))[0]))

    model.train()
    for epoch in range(1, config.epochs + 1):
        label = f"{task_label(task, strategy.scenario)} epoch {epoch}/{config.epochs}"
        bar = Progress(minibatches(len(samples), config.batch_size, rng), label=label, enabled=show, summary=tested if show else None)
        for index in bar:
            batch = samples.take(index)
            optimizer.zero_grad()

            def step():
                loss = strategy.minibatch_loss(task, batch, rng, normalize)
                step_ledger = memory.ledger(loss, model.parameters(), strategy.fixed_arrays()) if ledger is None else None
                loss.backward()
                strategy.after_backward(task)
                optimizer.step()  # quantised layers re-quantise their weights after it (specs/binary.md#layers)
                strategy.after_step(batch, rng)
                return loss.item(), step_ledger

            if steps == 1:
                resident = memory.resident_bytes(model, optimizer, vars(batch).values()) + strategy.kept_bytes()
                (loss, step_ledger), peak = memory.measure_step(step, resident)
            else:
                loss, step_ledger = step()
            ledger, steps = ledger or step_ledger, steps + 1
            bar.set(loss=loss)
    strategy.after_task(task, normalize)
    persistent = memory.persistent_bytes(model, optimizer) + strategy.kept_bytes()
    return TaskResult(ledger, sum(p.data.size for p in trainable), peak, persistent)


def accuracy_row(matrix: np.ndarray, t: int, count: int) -> str:
    """Row t of the accuracy matrix as the console shows it, in percent."""
    row = " ".join(f"{100 * a:.2f}" for a in matrix[t, : t + 1])
    return f"after task {t + 1}/{count}: test accuracy per task (%) {row}"


def task_label(task, scenario) -> str:
    """"task 2/5": tasks counted from 1, as the console and the plots show them."""
    return f"task {task.index + 1}/{len(scenario.tasks)}"


def normalizer(scenario, dtype):
    """images -> the model's input: normalised by the first task's statistics, in `dtype`."""
    first = scenario.tasks[0].train

    def normalize(images):
        return normalize_images(images, first.mean, first.std, np.dtype(dtype))

    return normalize


def save_progress(path: Path, model, strategy, progress: dict, identity: dict) -> None:
    state = {"model": model.state_dict(), "progress": progress, "strategy": strategy.state(), "run": identity}
    save_npz(path, flatten({key: value for key, value in state.items() if value}))  # an empty mapping cannot be stored


def check_same_run(path: Path, saved: dict, identity: dict) -> None:
    """ValueError listing each setting of `identity` (those that define the run's tasks and
    training) that differs from the one the checkpoint `path` was written with."""
    saved = {key: value.item() for key, value in saved.items()}

    def shown(settings: dict, key: str) -> str:
        return repr(settings[key]) if key in settings else "none"

    differences = [f"{key} {shown(saved, key)} there, {shown(identity, key)} here" for key in dict.fromkeys([*identity, *saved])
                   if key not in saved or key not in identity or saved[key] != identity[key]]
    if differences:
        raise ValueError(f"checkpoint {path} is of a run with other settings ({'; '.join(differences)}): "
                         "resume with its settings, or start afresh without resume")


def load_progress(path: Path, model, strategy, identity: dict) -> dict:
    state = unflatten(load_npz(path))
    if "model" not in state or "progress" not in state:
        raise ValueError(f"{path} is not a continual-learning checkpoint")
    if identity:
        if "run" not in state:
            raise ValueError(f"checkpoint {path} holds no record of its run's settings (an older lance-ref wrote it): start afresh without resume")
        check_same_run(path, state["run"], identity)
    try:
        model.load_state_dict(state["model"])
        strategy.load_state(state.get("strategy", {}))
    except (KeyError, ValueError, TypeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"checkpoint {path} does not fit this model and strategy: {first[:200]}") from error
    return state["progress"]


def run_tasks(model, scenario, strategy, config, out: Path, show: bool = True, resume: bool = False,
              identity: dict | None = None, keep_checkpoint: bool = True) -> dict:
    """Learn every task of `scenario` in turn; returns the accuracy matrix, per-task seconds
    and memory figures. After each task `out`/checkpoint.npz holds the state and `identity`, the
    settings that define the run (numbers, strings, bools); with `resume`, the run continues
    from it if it exists and its settings are `identity`'s. Unless `keep_checkpoint`, the
    checkpoint is removed once every task is learnt."""
    identity = identity or {}
    normalize = normalizer(scenario, config.dtype)
    count = len(scenario.tasks)
    progress = dict(
        accuracy_matrix=np.zeros((count, count)), task_seconds=np.zeros(count),
        activation_bytes=np.zeros((count, 2), dtype=np.int64),  # weight layers, every op
        trainable_parameters=np.zeros(count, dtype=np.int64),
        peak_step_bytes=np.zeros(count, dtype=np.int64), persistent_bytes=np.zeros(count, dtype=np.int64),
    )
    start, matrix = 0, progress["accuracy_matrix"]
    if resume and (out / CHECKPOINT).exists():
        saved = load_progress(out / CHECKPOINT, model, strategy, identity)
        start = int(saved.pop("next_task"))
        progress.update(saved)  # figures absent from older checkpoints keep their zeros
        matrix = progress["accuracy_matrix"]
        if show:
            done = "task 1" if start == 1 else f"tasks 1-{start}"
            print(f"resumed from {out / CHECKPOINT}: {done} done, continuing with task {start + 1}/{count}")
            for t in range(start):
                print(accuracy_row(matrix, t, count))
    names, strategy.show, began_run = strategy.weight_layer_names(), show, time.perf_counter()
    for task in scenario.tasks[start:]:
        began = time.perf_counter()
        trained = train_task(model, strategy, task, config, normalize, show)
        progress["task_seconds"][task.index] = time.perf_counter() - began
        progress["activation_bytes"][task.index] = trained.ledger.bytes(names), trained.ledger.bytes()
        progress["trainable_parameters"][task.index] = trained.trainable_parameters
        progress["peak_step_bytes"][task.index] = trained.peak_step_bytes or 0
        progress["persistent_bytes"][task.index] = trained.persistent_bytes
        seen = scenario.tasks[: task.index + 1]
        rng = np.random.default_rng((config.seed, task.index, 4))
        matrix[task.index, : task.index + 1] = evaluate(model, seen, config.setting, normalize, rng)
        if show:
            left = (time.perf_counter() - began_run) / (task.index + 1 - start) * (count - task.index - 1)
            print(accuracy_row(matrix, task.index, count) + (f" ({duration(left)} left)" if task.index + 1 < count else ""))
        save_progress(out / CHECKPOINT, model, strategy, dict(next_task=task.index + 1, **progress), identity)
    if not keep_checkpoint:
        (out / CHECKPOINT).unlink(missing_ok=True)
    return progress
