"""Minibatch training and evaluation of a classifier (the loop behind `lance-ref train`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import memory
from .autograd import no_grad
from .optim import clip_grad_norm_
from .progress import Progress
from .tensor import Tensor


@dataclass
class EpochResult:
    """What one training epoch measured."""

    loss: float
    accuracy: float
    seconds: float
    backward_seconds: float  # of the epoch's `loss.backward()` calls alone
    ledger: memory.Ledger  # what backward kept in the epoch's first step


def train_epoch(model, optimizer, loader, clip_grad_norm: float | None = None, label: str = "", show: bool = True) -> EpochResult:
    """One pass over `loader` with cross-entropy loss; the first step's graph goes to the ledger."""
    model.train()
    start, ledger, backward_seconds = time.perf_counter(), None, 0.0
    total_loss, correct, seen = 0.0, 0, 0
    bar = Progress(loader, label=label, enabled=show)
    for x, y in bar:
        logits = model(Tensor(x))
        loss = F.cross_entropy(logits, y)
        if ledger is None:
            ledger = memory.ledger(loss, model.parameters())
        optimizer.zero_grad()
        backward_start = time.perf_counter()
        loss.backward()
        backward_seconds += time.perf_counter() - backward_start
        if clip_grad_norm is not None:
            clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.data.argmax(axis=1) == y).sum())
        seen += len(y)
        bar.set(loss=total_loss / seen, acc=correct / seen)
    return EpochResult(total_loss / seen, correct / seen, time.perf_counter() - start, backward_seconds, ledger)


def fit(model, optimizer, loader, test_images, test_labels, epochs: int, schedule=None,
        clip_grad_norm: float | None = None, show: bool = True, before_epoch=None) -> tuple[list, memory.Ledger]:
    """Train for `epochs`, testing after each; returns the per-epoch history and the ledger of
    the first step. `before_epoch(epoch)`, if given, runs before each epoch and may return a dict
    of figures for that epoch's history row."""
    history, first_ledger = [], None
    for epoch in range(1, epochs + 1):
        figures = before_epoch(epoch) if before_epoch is not None else None
        result = train_epoch(model, optimizer, loader, clip_grad_norm, label=f"epoch {epoch}/{epochs}", show=show)
        if schedule is not None:
            schedule.step()
        first_ledger = first_ledger or result.ledger
        history.append(
            dict(epoch=epoch, loss=result.loss, train_accuracy=result.accuracy,
                 test_accuracy=accuracy(model, test_images, test_labels), seconds=result.seconds,
                 backward_seconds=result.backward_seconds, steps=len(loader), **(figures or {}))
        )
    return history, first_ledger


def predict(model, images: np.ndarray, batch_size: int = 500, **forward_options) -> np.ndarray:
    """Logits for already-normalised `images`, in eval mode and without recording a graph."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            outputs = [model(Tensor(images[i : i + batch_size]), **forward_options).data for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outputs)


def accuracy(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 500, **forward_options) -> float:
    """Top-1 accuracy on already-normalised `images`."""
    return float((predict(model, images, batch_size, **forward_options).argmax(axis=1) == labels).mean())
