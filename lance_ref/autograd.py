"""Gradient mode, layer ownership and the backward pass (specs/autograd.md).

This module knows nothing of the ops. The graph's vertices are op nodes and leaf tensors: an op
node is any object with `parents` (per input, the vertex its gradient flows to: the input's own
node, or the input itself if it is a leaf; None if the input needs no gradient),
`input_shapes`, `backward(grad)` and `release()`; a tensor is anything with `.data`,
`.requires_grad`, `.grad` and `._node`. Nodes never hold their inputs' tensors, so an
activation's data lives only as long as the program or a node's saved arrays keep it
(specs/autograd.md#backward).
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


def vertex(tensor):
    """The graph vertex of `tensor`: the node that made it, or the tensor itself if it is a leaf."""
    return tensor if tensor._node is None else tensor._node


def is_node(vertex) -> bool:
    """True for an op node, False for a leaf tensor."""
    return hasattr(vertex, "parents")


def topological_order(root) -> list:
    """The vertices reachable from the tensor `root` (op nodes and the leaf tensors that receive
    gradients), inputs before outputs.

    Iterative depth-first search, so graph depth is not limited by Python's recursion limit.
    """
    order, visited = [], set()
    stack = [(vertex(root), False)]
    while stack:
        v, expanded = stack.pop()
        if expanded:
            order.append(v)
            continue
        if id(v) in visited:
            continue
        visited.add(id(v))
        stack.append((v, True))
        if is_node(v):
            stack.extend((p, False) for p in v.parents if p is not None and id(p) not in visited)
    return order


def backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Propagate `grad` (dL/droot) to every leaf that requires grad (specs/autograd.md#backward).

    Leaf gradients accumulate into `.grad`; unless `retain_graph`, every node releases
    what it saved once its VJP has run, as torch does.
    """
    pending = {id(vertex(root)): grad}
    for v in reversed(topological_order(root)):
        if not is_node(v):
            _accumulate_leaf_grad(v, pending.pop(id(v), None))
            continue
        if id(v) in pending:
            _send_input_grads(v, pending)
        if not retain_graph:
            v.release()


def _accumulate_leaf_grad(leaf, grad) -> None:
    """Add `grad` (None if no gradient reached it) into `leaf.grad`, if the leaf requires grad."""
    if grad is not None and leaf.requires_grad:
        leaf.grad = grad.copy() if leaf.grad is None else leaf.grad + grad


def _send_input_grads(node, pending: dict) -> None:
    """Run `node`'s VJP on its pending gradient and add each input gradient, reduced to its
    input's shape, to the gradient pending for that input's vertex. (A function of its own, so
    that the output's gradient is freed once the VJP has run, before the sums, and the VJP's
    results as soon as they are summed.)"""
    input_grads = node.backward(pending.pop(id(node)))
    for parent, shape, input_grad in zip(node.parents, node.input_shapes, input_grads):
        if parent is None or input_grad is None:
            continue
        input_grad = sum_to_shape(input_grad, shape)
        previous = pending.get(id(parent))
        pending[id(parent)] = input_grad if previous is None else previous + input_grad
