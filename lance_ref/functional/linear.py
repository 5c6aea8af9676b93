"""Matrix products (specs/linear.md)."""

from __future__ import annotations

import numpy as np

from ..tensor import Function


class MatMul(Function):
    """y = a @ b for (batched) matrices (specs/linear.md#matmul)."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul needs operands with at least 2 dims, got {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dims differ, {a.shape} @ {b.shape}")
        need_a, need_b = self.needs_input_grad
        self.save(b if need_a else None, a if need_b else None)
        return a @ b

    def backward(self, grad):
        b, a = self.saved_arrays
        grad_a = grad @ np.swapaxes(b, -1, -2) if b is not None else None
        grad_b = np.swapaxes(a, -1, -2) @ grad if a is not None else None
        return grad_a, grad_b


class Linear(Function):
    """y = x W^T + b over the last axis of x (specs/linear.md#linear)."""

    def forward(self, x, weight, bias=None):
        if weight.ndim != 2 or x.shape[-1:] != weight.shape[1:]:
            raise ValueError(
                f"linear: input with last dim {x.shape[-1:]} does not match weight of shape "
                f"{weight.shape} (expected (out_features, in_features))"
            )
        if bias is not None and bias.shape != weight.shape[:1]:
            raise ValueError(f"linear: bias must have shape {weight.shape[:1]}, got {bias.shape}")
        need_x, need_w = self.needs_input_grad[:2]
        self.save(weight if need_x else None, x if need_w else None)
        y = x @ weight.T
        return y + bias if bias is not None else y

    def backward(self, grad):
        weight, x = self.saved_arrays
        grad_x = grad @ weight if weight is not None else None
        grad_w = None
        if x is not None:
            grad_w = grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        grad_b = grad.reshape(-1, grad.shape[-1]).sum(axis=0)
        return grad_x, grad_w, grad_b


def matmul(a, b):
    return MatMul.apply(a, b)


def linear(input, weight, bias=None):
    """torch.nn.functional.linear: input (*, in), weight (out, in), bias (out,)."""
    return Linear.apply(input, weight) if bias is None else Linear.apply(input, weight, bias)
