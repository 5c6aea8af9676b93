"""Gradient mode, layer ownership and the backward pass (specs/autograd.md).

This module knows nothing of the ops: a graph node is any object with `parents`,
`needs_input_grad`, `backward(grad)` and `release()`; a tensor is anything with `.data`,
`.requires_grad`, `.grad` and `._node`.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

_state = threading.local()


def is_grad_enabled() -> bool:
    """True unless inside `no_grad()`."""
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def set_grad_enabled(mode: bool):
    """Enable or disable graph recording inside the block."""
    previous = is_grad_enabled()
    _state.grad_enabled = bool(mode)
    try:
        yield
    finally:
        _state.grad_enabled = previous


def no_grad():
    """Context manager: ops inside record no graph and keep nothing for backward."""
    return set_grad_enabled(False)


def enable_grad():
    """Context manager: re-enable recording inside a `no_grad()` block."""
    return set_grad_enabled(True)


def current_owner() -> str:
    """Name of the innermost module being called ("" outside any module)."""
    stack = getattr(_state, "owners", None)
    return stack[-1] if stack else ""


@contextlib.contextmanager
def owner_scope(name: str):
    """Attribute the nodes recorded inside the block to the layer `name` (for the ledger)."""
    stack = getattr(_state, "owners", None)
    if stack is None:
        stack = _state.owners = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def sum_to_shape(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Reduce a broadcast gradient back to `shape` (specs/autograd.md#broadcasting)."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1
    )
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad.reshape(shape)


def topological_order(root) -> list:
    """Tensors reachable from `root` through recorded nodes, inputs before outputs.

    Iterative depth-first search, so graph depth is not limited by Python's recursion limit.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            stack.extend((p, False) for p in tensor._node.parents if id(p) not in visited)
    return order


def backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Propagate `grad` (dL/droot) to every leaf that requires grad (specs/autograd.md#backward).

    Leaf gradients accumulate into `.grad`; unless `retain_graph`, every node releases
    what it saved once its VJP has run, as torch does.
    """
    pending = {id(root): grad}
    for tensor in reversed(topological_order(root)):
        g = pending.pop(id(tensor), None)
        node = tensor._node
        if node is None:
            if g is not None and tensor.requires_grad:
                tensor.grad = g.copy() if tensor.grad is None else tensor.grad + g
            continue
        if g is not None:
            input_grads = node.backward(g)
            for parent, needed, pg in zip(node.parents, node.needs_input_grad, input_grads):
                if not needed or pg is None:
                    continue
                pg = sum_to_shape(pg, parent.data.shape)
                previous = pending.get(id(parent))
                pending[id(parent)] = pg if previous is None else previous + pg
        if not retain_graph:
            node.release()
