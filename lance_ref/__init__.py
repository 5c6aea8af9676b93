"""lance-ref: a NumPy reference for on-device learning with low-rank activation compression.

The engine (`Tensor`, `lance_ref.functional`, `lance_ref.nn`, `lance_ref.optim`) follows
PyTorch's semantics; `specs/` holds the equations every op implements.
"""

import os

# OpenBLAS reads this once, when NumPy loads it: its idle threads then sleep at once instead of
# spinning for about 2**28 cycles after each BLAS call, on the core that the Rust kernels'
# threads need next (a 2-thread mobilenetv2 step: 3.5 s spinning, 2.1 s not; README, "Two threads").
# It takes effect only when lance_ref is imported before NumPy; the user's own setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import binary, functional  # binary registers its binary-cnn with the model zoo
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .random import manual_seed
from .tensor import Tensor

__version__ = "0.1.0"
TORCH_SEMANTICS = "2.15.0"  # the torch release whose semantics lance-ref follows (specs/torch.md)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A leaf Tensor (float32 unless `data` is float64 or `dtype` says otherwise)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)
