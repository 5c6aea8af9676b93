"""Minibatch training and evaluation of a classifier (the loop behind `lance-ref train`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import memory
from .autograd import no_grad
from .nn import eval_mode
from .optim import clip_grad_norm_
from .progress import Progress, duration
from .tensor import Tensor


@dataclass
class EpochResult:
    """What one training epoch measured."""

    loss: float
    accuracy: float
    seconds: float
    backward_seconds: float  # of the epoch's `loss.backward()` calls alone
    ledger: memory.Ledger  # what backward kept in the epoch's first step
    peak_step_bytes: int | None  # the measured step's peak, if a step was measured


@dataclass
class StepResult:
    logits: np.ndarray
    loss: float
    ledger: memory.Ledger | None
    backward_seconds: float


def train_step(model, optimizer, x, y, clip_grad_norm: float | None = None, keep_ledger: bool = False) -> StepResult:
    """One step on the batch (x, y) with cross-entropy loss: forward, backward, clipping, update;
    call it after `optimizer.zero_grad()`. With `keep_ledger`, the ledger of its graph."""
    logits = model(Tensor(x))
    loss = F.cross_entropy(logits, y)
    ledger = memory.ledger(loss, model.parameters()) if keep_ledger else None
    backward_start = time.perf_counter()
    loss.backward()
    backward_seconds = time.perf_counter() - backward_start
    if clip_grad_norm is not None:
        clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    return StepResult(logits.data, loss.item(), ledger, backward_seconds)


def train_epoch(model, optimizer, loader, clip_grad_norm: float | None = None, label: str = "", show: bool = True,
                measure_at: int | None = None, summary=None) -> EpochResult:
    """One pass over `loader` with cross-entropy loss; the first step's graph goes to the ledger,
    and step `measure_at` (counted from 0), if given, is measured (specs/memory.md#measured-peak).
    `summary()`, if given, runs after the pass (not timed) and returns figures for the bar's last line."""
    model.train()
    start, ledger, backward_seconds, peak = time.perf_counter(), None, 0.0, None
    total_loss, correct, seen, ended = 0.0, 0, 0, []

    def finish() -> dict:
        ended.append(time.perf_counter())
        return summary() if summary is not None else {}

    bar = Progress(loader, label=label, enabled=show, summary=finish)
    for index, (x, y) in enumerate(bar):
        optimizer.zero_grad()

        def step():
            return train_step(model, optimizer, x, y, clip_grad_norm, keep_ledger=ledger is None)

        if index == measure_at:
            result, peak = memory.measure_step(step, memory.resident_bytes(model, optimizer, (x, y)))
        else:
            result = step()
        ledger = ledger or result.ledger
        backward_seconds += result.backward_seconds
        total_loss += result.loss * len(y)
        correct += int((result.logits.argmax(axis=1) == y).sum())
        seen += len(y)
        bar.set(loss=total_loss / seen, train=percent(correct / seen))
    return EpochResult(total_loss / seen, correct / seen, ended[0] - start, backward_seconds, ledger, peak)


def percent(share: float) -> str:
    """0.9876 -> "98.76%" (the console's and the README's unit for accuracies)."""
    return f"{100 * share:.2f}%"


def in_percent(share):
    """A share (0.954) or an array of them in percent (95.4), the unit of results.json; rounded
    to 10 decimals, so that float noise (95.39999999999999) does not reach the file."""
    return np.round(100 * np.asarray(share, dtype=np.float64), 10).tolist()


@dataclass
class FitResult:
    """What `fit` measured: the per-epoch history, the ledger of the first step, the measured
    peak of the second step and the bytes kept from step to step (specs/memory.md)."""

    history: list
    ledger: memory.Ledger
    peak_step_bytes: int | None
    persistent_bytes: int


def fit(model, optimizer, loader, test_images, test_labels, epochs: int, schedule=None,
        clip_grad_norm: float | None = None, show: bool = True, before_epoch=None, label: str = "train") -> FitResult:
    """Train for `epochs`, testing after each. The first step's graph goes to the ledger and the
    second step (after the first as warm-up) is measured. `before_epoch(epoch)`, if given, runs
    before each epoch and may return a dict of figures for that epoch's history row. Accuracies
    in the history are in percent; `label` names the phase on the progress bar."""
    history, first_ledger, peak, started = [], None, None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        figures = before_epoch(epoch) if before_epoch is not None else None
        measure_at = None if peak is not None else (1 if epoch == 1 else 0)
        tested = []

        def summary() -> dict:
            tested.append(accuracy(model, test_images, test_labels))
            left = (time.perf_counter() - started) / epoch * (epochs - epoch)
            return dict(test=percent(tested[0]), **({"left": duration(left)} if epoch < epochs else {}))

        result = train_epoch(model, optimizer, loader, clip_grad_norm, label=f"{label} epoch {epoch}/{epochs}", show=show,
                             measure_at=measure_at, summary=summary)
        if schedule is not None:
            schedule.step()
        first_ledger = first_ledger or result.ledger
        peak = peak or result.peak_step_bytes
        history.append(
            dict(epoch=epoch, loss=result.loss, train_accuracy=in_percent(result.accuracy), test_accuracy=in_percent(tested[0]),
                 seconds=result.seconds, backward_seconds=result.backward_seconds, steps=len(loader), **(figures or {}))
        )
    return FitResult(history, first_ledger, peak, memory.persistent_bytes(model, optimizer))


def predict(model, images: np.ndarray, batch_size: int = 500, **forward_options) -> np.ndarray:
    """Logits for already-normalised `images`, in eval mode and without recording a graph."""
    with eval_mode(model), no_grad():
        outputs = [model(Tensor(images[i : i + batch_size]), **forward_options).data for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs)


def accuracy(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 500, **forward_options) -> float:
    """Top-1 accuracy on already-normalised `images`."""
    return float((predict(model, images, batch_size, **forward_options).argmax(axis=1) == labels).mean())
