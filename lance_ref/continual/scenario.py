"""Class-split continual-learning scenarios (specs/continual.md#scenarios).

A dataset's classes are put in a seeded order and cut into tasks of `k` classes. Each task's
labels are local (0..k-1, the class's position in the task) for task-incremental learning with
one head per task; `Task.global_labels` gives the labels of a shared head (class-incremental).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..data import Dataset, first_per_class, load_dataset, subset_by_classes

# benchmark -> (dataset kind, number of tasks); CIFAR needs the user's path.
BENCHMARKS = {"split-mnist": ("mnist5k", 5), "split-cifar10": ("cifar10", 5), "split-cifar100": ("cifar100", 10)}
SETTINGS = ("task", "class")  # task-incremental (a head per task), class-incremental (one head)


@dataclass(frozen=True, eq=False)
class Task:
    """Task `index`: its `classes` (labels of the whole dataset) and its train and test data,
    labelled locally (class `classes[i]` has label i); `offset` is the label of its first class
    in a shared head."""

    index: int
    classes: tuple
    offset: int
    train: Dataset
    test: Dataset

    def global_labels(self, local: np.ndarray) -> np.ndarray:
        return self.offset + local


@dataclass(frozen=True, eq=False)
class Scenario:
    name: str
    class_order: tuple
    tasks: tuple

    @property
    def num_classes(self) -> int:
        return len(self.class_order)

    def shortened(self, tasks: int = 0, train_per_class: int = 0) -> "Scenario":
        """The first `tasks` tasks (0: all), each training on the first `train_per_class` samples
        of each of its classes (0: all): a quick run of the same benchmark (the test sets and the
        shared head's classes stay whole)."""
        if isinstance(tasks, bool) or not isinstance(tasks, (int, np.integer)) or not 0 <= tasks <= len(self.tasks):
            raise ValueError(f"tasks must be in 0..{len(self.tasks)} ({self.name} has {len(self.tasks)}; 0: all), got {tasks!r}")
        kept = self.tasks[: tasks or len(self.tasks)]
        if train_per_class:
            kept = tuple(replace(t, train=first_per_class(t.train, train_per_class)) for t in kept)
        return replace(self, tasks=kept)

    def head_sizes(self, setting: str) -> list:
        """Classes per head: one head per task (task-incremental) or one shared head."""
        check_setting(setting)
        return [len(t.classes) for t in self.tasks] if setting == "task" else [self.num_classes]


def check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS} (task- or class-incremental), got {setting!r}")
    return setting


def split_classes(num_classes: int, num_tasks: int, seed: int | None) -> list:
    """The classes 0..num_classes-1 in the order drawn from `seed` (natural order for None),
    cut into `num_tasks` tasks of equal size."""
    for name, value in (("num_classes", num_classes), ("num_tasks", num_tasks)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if num_classes % num_tasks:
        raise ValueError(f"{num_classes} classes do not divide into {num_tasks} tasks of equal size")
    order = np.arange(num_classes) if seed is None else np.random.default_rng(seed).permutation(num_classes)
    return [tuple(int(c) for c in chunk) for chunk in np.split(order, num_tasks)]


def make_scenario(train: Dataset, test: Dataset, num_tasks: int, seed: int | None, name: str = "") -> Scenario:
    """The class-split scenario of (train, test) with `num_tasks` tasks in `seed`'s class order."""
    if train.classes != test.classes:
        raise ValueError("train and test must share their classes")
    splits = split_classes(len(train.classes), num_tasks, seed)
    tasks, offset = [], 0
    for index, classes in enumerate(splits):
        task = Task(index, classes, offset, subset_by_classes(train, classes), subset_by_classes(test, classes))
        if len(task.train) == 0 or len(task.test) == 0:
            raise ValueError(f"task {index} (classes {list(classes)}) has no training or no test samples in {train.name}")
        tasks.append(task)
        offset += len(classes)
    return Scenario(name or f"split-{train.name}", tuple(c for split in splits for c in split), tuple(tasks))


def load_benchmark(benchmark: str, seed: int | None, data_path: str = "") -> Scenario:
    """Split-MNIST from the bundled data, or Split CIFAR-10/100 from `data_path`."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; available: {sorted(BENCHMARKS)}")
    kind, num_tasks = BENCHMARKS[benchmark]
    if kind != "mnist5k" and not data_path:
        raise ValueError(f"{benchmark} needs data_path, the folder of the {kind.upper()} files")
    train, test = load_dataset(kind if kind == "mnist5k" else f"{kind}:{data_path}")
    return make_scenario(train, test, num_tasks, seed, benchmark)

