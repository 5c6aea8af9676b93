"""The Tensor and the Function node that records how it was made (specs/autograd.md).

A Tensor wraps a float32 or float64 ndarray. Ops are `Function` subclasses: `forward` maps
ndarrays to an ndarray and saves what its VJP needs through `save`; `backward` maps the output
gradient to one gradient per input. The two dtypes are never mixed silently.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import autograd

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_DTYPE = np.dtype(np.float32)


def float_dtype(dtype, argument: str = "dtype") -> np.dtype:
    """`dtype` as a NumPy dtype, which must be float32 or float64."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{argument} must be float32 or float64, got {dt}")
    return dt


def _inferred_dtype(data) -> np.dtype:
    """The dtype a Tensor of `data` takes without an explicit one: torch's, where torch would
    make a float32 or float64 tensor; a TypeError where it would make another (never a silent
    conversion)."""
    own = getattr(data, "dtype", None)  # arrays and NumPy scalars have one, Python values not
    kind = np.asarray(data).dtype if own is None else np.dtype(own)
    if own is None and kind.kind == "f":  # Python floats
        return DEFAULT_DTYPE
    if own is not None and kind in FLOAT_DTYPES:
        return kind
    raise TypeError(
        f"data has dtype {kind}: lance-ref tensors are float32 or float64 (torch would keep it {kind}, "
        "and an integer tensor cannot require grad); pass dtype=np.float32 or np.float64 to convert it"
    )


class Tensor:
    """An n-dimensional float array with an optional gradient.

    `data` and `grad` are ndarrays; `requires_grad` marks tensors whose gradient `backward`
    computes. float32 and float64 arrays keep their dtype, Python floats (and lists of them)
    become float32 as in torch; any other data (integers, bools, float16) needs an explicit
    `dtype`, since lance-ref's tensors are float32 or float64 only (specs/autograd.md#dtypes).
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "__weakref__")
    __array_priority__ = 1000  # `ndarray op Tensor` defers to the Tensor's reflected method

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is None:
            dtype = _inferred_dtype(data)
        self.data = np.asarray(data, dtype=float_dtype(dtype))
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None

    # --- properties ------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def size(self, dim: int | None = None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return self.data.size

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(self.data.reshape(()))

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4)}, dtype={self.dtype}{grad})"

    # --- graph -----------------------------------------------------------------------------
    def detach(self) -> "Tensor":
        """A tensor sharing `data`, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, mode: bool = True) -> "Tensor":
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only change leaf tensors")
        self.requires_grad = bool(mode)
        return self

    def to(self, dtype) -> "Tensor":
        """This tensor in `dtype` (differentiable; the same tensor if already of that dtype)."""
        dt = float_dtype(dtype)
        return self if dt == self.dtype else Cast.apply(self, dtype=dt)

    def float(self) -> "Tensor":
        return self.to(np.float32)

    def double(self) -> "Tensor":
        return self.to(np.float64)

    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` (specs/autograd.md#backward).

        `gradient` is required unless the tensor has one element, as in torch.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs the "
                    "argument `gradient` (an array of the same shape)"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient)
            if grad.shape != self.shape:
                raise ValueError(f"gradient must have shape {self.shape}, got {grad.shape}")
            if grad.dtype != self.dtype:
                raise TypeError(f"gradient must have dtype {self.dtype}, got {grad.dtype}")
        autograd.backward(self, grad, retain_graph=retain_graph)


def as_operands(inputs) -> list:
    """Tensors for `inputs`: Python numbers and non-float arrays take the tensors' dtype.

    Raises TypeError when float32 and float64 meet (specs/autograd.md#dtypes).
    """
    dtypes = {x.dtype for x in inputs if isinstance(x, Tensor)}
    dtypes |= {x.dtype for x in inputs if isinstance(x, np.ndarray) and x.dtype in FLOAT_DTYPES}
    if len(dtypes) > 1:
        raise TypeError(
            "operands mix float32 and float64; convert one explicitly with .to(dtype)"
        )
    dtype = dtypes.pop() if dtypes else DEFAULT_DTYPE
    out = []
    for x in inputs:
        if isinstance(x, Tensor):
            out.append(x)
        elif isinstance(x, (numbers.Number, np.ndarray, np.number, list, tuple)):
            out.append(Tensor(x, dtype=dtype))
        else:
            raise TypeError(f"expected a Tensor, number or array, got {type(x).__name__}")
    return out


class Function:
    """One op of the graph: `forward` on ndarrays and `backward`, its VJP.

    `Op.apply(*inputs, **params)` runs `forward(*arrays, **params)` and, when any input requires
    grad and recording is on, links the output to this node. `forward` calls `save(...)` for
    what `backward` needs; the memory ledger reads exactly these arrays.
    """

    __slots__ = ("parents", "input_shapes", "needs_input_grad", "saved", "owner")

    def forward(self, *arrays, **params) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> tuple:
        raise NotImplementedError

    def save(self, *arrays) -> None:
        """Keep `arrays` for backward (only when the graph is recorded)."""
        if any(self.needs_input_grad):
            self.saved = arrays

    def release(self) -> None:
        self.saved = None

    @property
    def saved_arrays(self) -> tuple:
        if self.saved is None:
            raise RuntimeError(
                f"{type(self).__name__}: backward through the graph a second time; "
                "pass retain_graph=True to the first backward()"
            )
        return self.saved

    @classmethod
    def apply(cls, *inputs, **params) -> Tensor:
        tensors = as_operands(inputs)
        node = cls()
        record = autograd.is_grad_enabled()
        node.needs_input_grad = tuple(record and t.requires_grad for t in tensors)
        node.saved = ()
        out = Tensor(node.forward(*(t.data for t in tensors), **params))
        if any(node.needs_input_grad):
            node.parents = tuple(
                autograd.vertex(t) if needed else None for t, needed in zip(tensors, node.needs_input_grad)
            )
            node.input_shapes = tuple(t.shape for t in tensors)
            node.owner = autograd.current_owner()
            out.requires_grad = True
            out._node = node
        return out


class Cast(Function):
    """y = x in another float dtype; the VJP casts back (specs/autograd.md#dtypes)."""

    __slots__ = ("source",)

    def forward(self, x, dtype):
        self.source = x.dtype
        return x.astype(dtype)

    def backward(self, grad):
        return (grad.astype(self.source),)
