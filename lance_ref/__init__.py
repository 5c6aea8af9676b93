"""lance-ref: a NumPy reference for on-device learning with low-rank activation compression.

The engine (`Tensor`, `lance_ref.functional`, `lance_ref.nn`, `lance_ref.optim`) follows
PyTorch's semantics; `specs/` holds the equations every op implements.
"""

from . import functional
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .random import manual_seed
from .tensor import Tensor

__version__ = "0.1.0"


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A leaf Tensor (float32 unless `data` is float64 or `dtype` says otherwise)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)
