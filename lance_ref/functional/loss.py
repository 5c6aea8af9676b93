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


class NLL(Function):
    """l[n, *] = -w[t[n, *]] logp[n, t[n, *], *], 0 where t = ignore_index, for logp of shape
    (N, C, *) (specs/loss.md#nll_loss)."""

    def forward(self, logp, *, target, scale):
        self.shape = logp.shape
        self.save(target, scale)
        picked = np.take_along_axis(logp, target[:, None], axis=1)[:, 0]
        return -(scale * picked)

    def backward(self, grad):
        target, scale = self.saved_arrays
        dlogp = np.zeros(self.shape, dtype=grad.dtype)
        np.put_along_axis(dlogp, target[:, None], (-scale * grad)[:, None], axis=1)
        return (dlogp,)


def log_softmax(input, dim: int = 1):
    return LogSoftmax.apply(input, dim=dim)


def softmax(input, dim: int = 1):
    return exp(log_softmax(input, dim))


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(losses, reduction: str, denominator=None):
    """mean (over `denominator`, default the element count), sum or none."""
    _check_reduction(reduction)
    if reduction == "mean":
        if denominator is None:
            return mean(losses)
        # Every entry ignored: torch's mean is 0/0 = NaN, and its gradient 0.
        return sum(losses) / denominator if denominator else sum(losses) * 0.0 + np.nan
    return sum(losses) if reduction == "sum" else losses


def _array(value) -> np.ndarray:
    return np.asarray(value.data if isinstance(value, Tensor) else value)


def _class_weights(weight, classes: int, dtype) -> np.ndarray | None:
    """`weight` as a (C,) array of the input's dtype (None stays None)."""
    if weight is None:
        return None
    w = _array(weight)
    if w.shape != (classes,):
        raise ValueError(f"weight must have shape ({classes},) (one per class), got {w.shape}")
    if w.dtype.kind == "f" and w.dtype != dtype:
        raise TypeError(f"weight has dtype {w.dtype} but the input has {dtype}; convert one explicitly")
    return w.astype(dtype)


def _class_targets(target: np.ndarray, shape: tuple, ignore_index: int) -> np.ndarray:
    """Integer class indices of `shape` (the input's without its class axis), checked."""
    classes, expected = shape[1], shape[:1] + shape[2:]
    if not np.issubdtype(target.dtype, np.integer) or target.shape != expected:
        raise _target_error(target, shape)
    outside = (target != ignore_index) & ((target < 0) | (target >= classes))
    if outside.any():
        raise ValueError(f"target values must lie in [0, {classes}) or equal ignore_index ({ignore_index}), got {target[outside][0]}")
    return target.astype(np.int64)


def _target_error(target: np.ndarray, shape: tuple) -> ValueError:
    expected = shape[:1] + shape[2:]
    return ValueError(
        f"target must be integer class indices of shape {expected} or probabilities of shape {shape}, "
        f"got {target.dtype} {target.shape}"
    )


def _batched(input, target):
    """(input, target, unbatched): an unbatched input (C,) becomes (1, C), its target (1,) or (1, C)."""
    if input.ndim != 1:
        return input, target, False
    return input.reshape(1, -1), target.reshape((1,) + target.shape), True


def _weighted_nll(logp, target, weight, ignore_index):
    """(losses (N, *) and their mean's denominator): the NLL node of `target`, weighted, with
    ignored entries 0, and the sum of the kept entries' weights (their count without weights)."""
    keep = target != ignore_index
    safe = np.where(keep, target, 0)
    scale = keep.astype(logp.dtype) if weight is None else np.where(keep, weight[safe], 0).astype(logp.dtype)
    return NLL.apply(logp, target=safe, scale=scale), scale.sum()


def nll_loss(input, target, weight=None, *, ignore_index: int = -100, reduction: str = "mean"):
    """torch.nn.functional.nll_loss: log-probabilities (N, C, *) or (C,), class indices (N, *)
    or (); `mean` divides by the kept entries' total weight (specs/loss.md#nll_loss)."""
    _check_reduction(reduction)
    logp, target, unbatched = _batched(input, _array(target))
    target = _class_targets(target, logp.shape, ignore_index)
    losses, denominator = _weighted_nll(logp, target, _class_weights(weight, logp.shape[1], logp.dtype), ignore_index)
    out = _reduce(losses, reduction, denominator)
    return out.reshape(()) if unbatched and reduction == "none" else out


def cross_entropy(input, target, weight=None, *, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0):
    """torch.nn.functional.cross_entropy: logits (N, C, *) or (C,); targets either class indices
    (N, *) or () (entries equal to `ignore_index` ignored), or class probabilities of the
    logits' shape (specs/loss.md#cross_entropy). The arguments after `weight` are keywords, as
    torch's deprecated `size_average` and `reduce` sit between them."""
    _check_reduction(reduction)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if input.ndim < 1:
        raise ValueError(f"input must be logits of shape (N, C, *) or (C,), got {input.shape}")
    x, target, unbatched = _batched(input, _array(target))
    classes, dtype = x.shape[1], x.dtype
    weight = _class_weights(weight, classes, dtype)
    per_class = 1 if weight is None else weight.reshape((1, classes) + (1,) * (x.ndim - 2))
    logp = log_softmax(x, 1)
    if target.dtype.kind == "f":  # class probabilities
        if target.shape != x.shape:
            raise _target_error(target, x.shape)
        if ignore_index != -100:
            raise ValueError("ignore_index is not supported with probability targets (as in torch)")
        q = target.astype(dtype) * (1 - label_smoothing) + label_smoothing / classes if label_smoothing else target
        losses = -sum(logp * (q * per_class).astype(dtype), 1)
        out = _reduce(losses, reduction)
    else:
        target = _class_targets(target, x.shape, ignore_index)
        losses, denominator = _weighted_nll(logp, target, weight, ignore_index)
        if label_smoothing:
            kept = (target != ignore_index).astype(dtype)
            smooth = -sum(logp if weight is None else logp * per_class, 1) * kept
            losses = losses * (1 - label_smoothing) + smooth * (label_smoothing / classes)
        out = _reduce(losses, reduction, denominator)
    return out.reshape(()) if unbatched and reduction == "none" else out


def mse_loss(input, target, reduction: str = "mean"):
    """torch.nn.functional.mse_loss: (input - target)^2, reduced."""
    if tuple(np.shape(input.data if isinstance(input, Tensor) else input)) != tuple(
        np.shape(target.data if isinstance(target, Tensor) else target)
    ):
        raise ValueError("mse_loss: input and target must have the same shape")
    diff = sub(input, target)
    return _reduce(diff * diff, reduction)
