"""The ledger of what backward keeps: every saved array of a graph, by owning layer (specs/memory.md).

An array keeps alive the whole buffer it views, so the ledger counts root buffers, each once.
Buffers that belong to parameters (weights saved for an input gradient) are reported apart from
activations: they exist whether or not backward runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .autograd import topological_order

ACTIVATION, PARAMETER, FIXED = "activation", "parameter", "fixed"


def root_buffer(array: np.ndarray) -> np.ndarray:
    """The array that owns the memory `array` views."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


@dataclass(frozen=True)
class Record:
    """One array saved by one node: the buffer it keeps alive and who saved it."""

    owner: str
    op: str
    buffer: int
    nbytes: int
    shape: tuple
    dtype: str
    kind: str


class Ledger:
    """The arrays saved for backward by a recorded graph (specs/memory.md#ledger)."""

    def __init__(self, records: list[Record]):
        self.records = records

    def _selected(self, owners, kind):
        def owned(owner):
            return owners is None or any(owner == o or owner.startswith(o + ".") for o in owners)

        return [r for r in self.records if owned(r.owner) and (kind is None or r.kind == kind)]

    def bytes(self, owners=None, kind: str | None = ACTIVATION) -> int:
        """Bytes kept, each buffer counted once; `owners` limits to those layers and their children."""
        return sum({r.buffer: r.nbytes for r in self._selected(owners, kind)}.values())

    def by_layer(self, kind: str | None = ACTIVATION) -> dict:
        """Bytes kept per owning layer, children apart ("" for ops outside any module).

        A buffer saved by two layers (an activation output that the next layer also saves as
        its input) appears under both; `bytes()` counts it once.
        """
        layers = {}
        for r in self.records:
            if kind is None or r.kind == kind:
                layers.setdefault(r.owner, {})[r.buffer] = r.nbytes
            else:
                layers.setdefault(r.owner, {})
        return {name: sum(buffers.values()) for name, buffers in layers.items()}

    def table(self) -> str:
        """A printable summary: layer, activation bytes, parameter bytes."""
        lines = [f"{'layer':<32}{'activation B':>14}{'parameter B':>14}"]
        activations, parameters = self.by_layer(ACTIVATION), self.by_layer(PARAMETER)
        for name in activations:
            lines.append(f"{name or '(functional)':<32}{activations[name]:>14}{parameters[name]:>14}")
        lines.append(f"{'total (each buffer once)':<32}{self.bytes():>14}{self.bytes(kind=PARAMETER):>14}")
        return "\n".join(lines)


def ledger(output, parameters=(), fixed=()) -> Ledger:
    """The ledger of the graph that produced `output` (call it before `backward`).

    Saved arrays whose buffer is the data of a leaf that requires grad, or of one of
    `parameters` (pass a model's parameters to classify frozen weights too), count as
    parameters; those whose buffer is one of the arrays `fixed` (kept from step to step, such
    as bases fixed for a whole task) count as fixed; everything else is activation memory.
    """
    tensors = topological_order(output)
    parameter_buffers = {id(root_buffer(p.data)) for p in parameters}
    parameter_buffers |= {
        id(root_buffer(t.data)) for t in tensors if t._node is None and t.requires_grad
    }
    fixed_buffers = {id(root_buffer(a)) for a in fixed}
    records = []
    for tensor in tensors:
        node = tensor._node
        if node is None:
            continue
        for array in node.saved_arrays:
            if not isinstance(array, np.ndarray):
                continue
            root = root_buffer(array)
            kind = PARAMETER if id(root) in parameter_buffers else FIXED if id(root) in fixed_buffers else ACTIVATION
            records.append(
                Record(node.owner, type(node).__name__, id(root), root.nbytes, array.shape, str(array.dtype), kind)
            )
    return Ledger(records)
