"""Minibatches, the loss over samples of several tasks, and evaluation per task."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from ..train import accuracy


def minibatches(count: int, batch_size: int, rng: np.random.Generator):
    """Index arrays of a shuffled pass over `count` samples."""
    order = rng.permutation(count)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def task_loss(model, x: np.ndarray, labels: np.ndarray, tasks: np.ndarray, setting: str):
    """Mean cross-entropy; with a head per task ("task" setting) each sample is scored by its
    own task's head, on one forward pass of the shared layers."""
    outputs = model(Tensor(x))
    if setting == "class":
        return F.cross_entropy(outputs, labels)
    heads = outputs if isinstance(outputs, list) else [outputs]
    present = np.unique(tasks)
    if len(present) == 1:
        return F.cross_entropy(heads[present[0]], labels)
    total = None
    for t in present:
        index = np.flatnonzero(tasks == t)
        term = F.cross_entropy(heads[t][index], labels[index], reduction="sum")
        total = term if total is None else total + term
    return total / len(labels)


def evaluate(model, task, setting: str, normalize) -> float:
    """Test accuracy on `task`: its own head (task-incremental) or the shared head over all classes."""
    images = normalize(task.test.images)
    if setting == "task":
        return accuracy(model, images, task.test.labels, task=task.index)
    return accuracy(model, images, task.global_labels(task.test.labels))
