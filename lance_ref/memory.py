"""Memory of a training step: the ledger of what backward keeps, and the step's measured peak
(specs/memory.md).

The ledger walks the graph: an array keeps alive the whole buffer it views, so it counts root
buffers, each once. Buffers that belong to parameters (weights saved for an input gradient) are
reported apart from activations: they exist whether or not backward runs.

The measured peak is what the process held: tracemalloc sees every allocation that NumPy and
Python make, so a step's traced peak is every array it created and held at once, the
transients of each op included.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import numpy as np

from .autograd import is_node, topological_order

ACTIVATION, PARAMETER, FIXED = "activation", "parameter", "fixed"
FUNCTIONAL = "(functional)"  # the owner of ops called outside any module, in tables and results.json


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
        """Bytes kept per owning layer, children apart (FUNCTIONAL for ops outside any module).

        A buffer saved by two layers (an activation output that the next layer also saves as
        its input) appears under both; `bytes()` counts it once.
        """
        layers = {}
        for r in self.records:
            if kind is None or r.kind == kind:
                layers.setdefault(r.owner or FUNCTIONAL, {})[r.buffer] = r.nbytes
            else:
                layers.setdefault(r.owner or FUNCTIONAL, {})
        return {name: sum(buffers.values()) for name, buffers in layers.items()}

    def table(self) -> str:
        """A printable summary: layer, activation bytes, parameter bytes."""
        lines = [f"{'layer':<32}{'activation B':>14}{'parameter B':>14}"]
        activations, parameters = self.by_layer(ACTIVATION), self.by_layer(PARAMETER)
        for name in activations:
            lines.append(f"{name:<32}{activations[name]:>14}{parameters[name]:>14}")
        lines.append(f"{'total (each buffer once)':<32}{self.bytes():>14}{self.bytes(kind=PARAMETER):>14}")
        return "\n".join(lines)


def ledger(output, parameters=(), fixed=()) -> Ledger:
    """The ledger of the graph that produced `output` (call it before `backward`).

    Saved arrays whose buffer is the data of a leaf that requires grad, or of one of
    `parameters` (pass a model's parameters to classify frozen weights too), count as
    parameters; those whose buffer is one of the arrays `fixed` (kept from step to step, such
    as bases fixed for a whole task) count as fixed; everything else is activation memory.
    """
    vertices = topological_order(output)
    nodes = [v for v in vertices if is_node(v)]
    parameter_buffers = {id(root_buffer(p.data)) for p in parameters}
    parameter_buffers |= {id(root_buffer(v.data)) for v in vertices if not is_node(v) and v.requires_grad}
    fixed_buffers = {id(root_buffer(a)) for a in fixed}
    records = []
    for node in nodes:
        for array in node.saved_arrays:
            if not isinstance(array, np.ndarray):
                continue
            root = root_buffer(array)
            kind = PARAMETER if id(root) in parameter_buffers else FIXED if id(root) in fixed_buffers else ACTIVATION
            records.append(
                Record(node.owner, type(node).__name__, id(root), root.nbytes, array.shape, str(array.dtype), kind)
            )
    return Ledger(records)


def traced_peak(fn):
    """(fn(), the most bytes that the allocations made during the call held at once), measured
    by tracemalloc (specs/memory.md#measured-peak). Memory freed during the call that was
    allocated before it is not subtracted; if tracemalloc was already tracing, it goes on."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        return result, max(0, tracemalloc.get_traced_memory()[1] - base)
    finally:
        if started:
            tracemalloc.stop()


def array_bytes(arrays) -> int:
    """Bytes of the distinct buffers behind `arrays` (None entries skipped)."""
    buffers = {id(root_buffer(a)): root_buffer(a).nbytes for a in arrays if a is not None}
    return sum(buffers.values())


def model_state_arrays(model, optimizer=None) -> list:
    """The model's parameters and buffers and every array of the optimiser's per-parameter state
    (momentum buffers, moments)."""
    state = [] if optimizer is None else [v for s in optimizer.state.values() for v in s.values()]
    arrays = [p.data for p in model.parameters()] + list(model.buffers()) + state
    return [a for a in arrays if isinstance(a, np.ndarray)]


def persistent_bytes(model, optimizer=None) -> int:
    """Bytes a training run keeps from step to step (specs/memory.md#persistent): the model's
    parameters and buffers, one gradient per parameter that requires grad, and the optimiser's
    state."""
    grads = sum(p.data.nbytes for p in model.parameters() if p.requires_grad)
    return array_bytes(model_state_arrays(model, optimizer)) + grads


def resident_bytes(model, optimizer, batch) -> int:
    """Bytes alive when a step starts (after `zero_grad`): the model's parameters and buffers,
    the optimiser's state and the batch's arrays."""
    return array_bytes(model_state_arrays(model, optimizer) + [a for a in batch if isinstance(a, np.ndarray)])


def measure_step(step, resident: int) -> tuple:
    """(step()'s result, the step's peak bytes): `resident`, the bytes alive when the step began
    (see `resident_bytes`), plus the traced peak of the step itself (specs/memory.md#measured-peak).
    Start the step after `optimizer.zero_grad()`, so that the gradients it creates are traced."""
    result, peak = traced_peak(step)
    return result, resident + peak
