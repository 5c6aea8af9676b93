"""Gradient-norm clipping (specs/optim.md#clip_grad_norm)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..tensor import Tensor


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0) -> float:
    """Scale all gradients in place by min(1, max_norm / (total_norm + 1e-6)); return total_norm.

    total_norm is the `norm_type`-norm of the per-parameter gradient norms (the max for inf);
    parameters without `.grad` are ignored, as torch.nn.utils.clip_grad_norm_.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    if not isinstance(norm_type, numbers.Real) or not norm_type > 0:
        raise ValueError(f"norm_type must be a positive number or inf, got {norm_type!r}")
    if not isinstance(max_norm, numbers.Real) or max_norm < 0:
        raise ValueError(f"max_norm must be a non-negative number, got {max_norm!r}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        norms = np.array([np.abs(g).max() for g in grads])
        total = norms.max()
    else:
        norms = np.array([np.linalg.norm(g.ravel(), norm_type) for g in grads])
        total = np.linalg.norm(norms, norm_type)
    coefficient = min(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g *= g.dtype.type(coefficient)
    return float(total)
