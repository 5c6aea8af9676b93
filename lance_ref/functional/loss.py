"""Softmax and losses (specs/loss.md)."""

from __future__ import annotations

import numpy as np

from ..tensor import Function, Tensor
from .elementwise import exp, sub
from .reduce import mean, sum

REDUCTIONS = ("mean", "sum", "none")


class LogSoftmax(Function):
    """y = x - log sum_j exp(x_j) along `dim` (specs/loss.md#log_softmax)."""

    def forward(self, x, dim):
        shifted = x - x.max(axis=dim, keepdims=True)
        y = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        self.dim = dim
        self.save(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_arrays
        return (grad - np.exp(y) * grad.sum(axis=self.dim, keepdims=True),)


def smoothed_targets(target, classes: int, smoothing: float, dtype) -> np.ndarray:
    """q = (1 - e) onehot(t) + e / C, one row per sample (specs/loss.md#cross_entropy)."""
    q = np.full((len(target), classes), smoothing / classes, dtype=dtype)
    q[np.arange(len(target)), target] += 1 - smoothing
    return q


class SmoothedNLL(Function):
    """l_i = -sum_c q_ic logp_ic (specs/loss.md#cross_entropy)."""

    def forward(self, logp, target, smoothing):
        self.save(target)
        self.smoothing, self.classes = smoothing, logp.shape[1]
        return -(smoothed_targets(target, self.classes, smoothing, logp.dtype) * logp).sum(axis=1)

    def backward(self, grad):
        (target,) = self.saved_arrays
        q = smoothed_targets(target, self.classes, self.smoothing, grad.dtype)
        return (-q * grad[:, None],)


def log_softmax(input, dim: int = 1):
    return LogSoftmax.apply(input, dim=dim)


def softmax(input, dim: int = 1):
    return exp(log_softmax(input, dim))


def _reduce(losses, reduction: str):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return mean(losses) if reduction == "mean" else sum(losses) if reduction == "sum" else losses


def cross_entropy(input, target, reduction: str = "mean", label_smoothing: float = 0.0):
    """torch.nn.functional.cross_entropy for logits (N, C) and class indices (N,)."""
    logits = input.data if isinstance(input, Tensor) else np.asarray(input)
    target = np.asarray(target.data if isinstance(target, Tensor) else target)
    if logits.ndim != 2:
        raise ValueError(f"input must be logits of shape (N, C), got {logits.shape}")
    if target.shape != logits.shape[:1] or not np.issubdtype(target.dtype, np.integer):
        raise ValueError(
            f"target must be integer class indices of shape {logits.shape[:1]}, "
            f"got {target.dtype} {target.shape}"
        )
    if target.size and (target.min() < 0 or target.max() >= logits.shape[1]):
        raise ValueError(f"target values must lie in [0, {logits.shape[1]}), got {target.min()}..{target.max()}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    losses = SmoothedNLL.apply(log_softmax(input, 1), target=target.astype(np.int64), smoothing=label_smoothing)
    return _reduce(losses, reduction)


def mse_loss(input, target, reduction: str = "mean"):
    """torch.nn.functional.mse_loss: (input - target)^2, reduced."""
    if tuple(np.shape(input.data if isinstance(input, Tensor) else input)) != tuple(
        np.shape(target.data if isinstance(target, Tensor) else target)
    ):
        raise ValueError("mse_loss: input and target must have the same shape")
    diff = sub(input, target)
    return _reduce(diff * diff, reduction)
