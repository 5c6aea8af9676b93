"""Minibatches, the loss over samples of several tasks, and evaluation per task."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from ..train import accuracy, predict


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


def evaluate(model, tasks, setting: str, normalize, rng: np.random.Generator) -> list:
    """Test accuracy on each of `tasks`. Task-incremental: each task's test set on its own head.
    Class-incremental: the test sets of all `tasks` pooled in `rng`'s order, so that every
    batch mixes the seen classes as training batches do (BatchNorm's batch statistics see
    them all), scored over the shared head's outputs and split back by task."""
    if setting == "task":
        return [accuracy(model, normalize(t.test.images), t.test.labels, task=t.index) for t in tasks]
    images = np.concatenate([t.test.images for t in tasks])
    labels = np.concatenate([t.global_labels(t.test.labels) for t in tasks])
    owner = np.concatenate([np.full(len(t.test), t.index) for t in tasks])
    order = rng.permutation(len(labels))
    correct = predict(model, normalize(images[order])).argmax(axis=1) == labels[order]
    return [float(correct[owner[order] == t.index].mean()) for t in tasks]
