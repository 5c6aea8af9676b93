"""Tensor kernels: NumPy references (`reference`) and their Rust ports in `lance_ref._core`.

The Rust extension is used when it is importable, unless the environment variable
LANCE_REF_BACKEND is `numpy`; with LANCE_REF_BACKEND=rust a missing extension is an
ImportError instead of a silent fallback. The variable is read once, at import.
"""

import os

import numpy as np

from . import reference

BACKEND_ENV = "LANCE_REF_BACKEND"


def _load_core():
    choice = os.environ.get(BACKEND_ENV, "")
    if choice not in ("", "rust", "numpy"):
        raise ValueError(f"{BACKEND_ENV} must be 'rust', 'numpy' or unset, got {choice!r}")
    if choice == "numpy":
        return None
    try:
        from .. import _core
    except ImportError as err:
        if choice == "rust":
            raise ImportError(
                f"{BACKEND_ENV}=rust but the Rust extension lance_ref._core is not built; "
                "install the package with `pip install .` or unset the variable"
            ) from err
        return None
    return _core


_core = _load_core()


def backend() -> str:
    """'rust' if the kernels run in lance_ref._core, 'numpy' if they fall back to `reference`."""
    return "numpy" if _core is None else "rust"


def unfold(x: np.ndarray, mode: int) -> np.ndarray:
    """Mode-n unfolding X_(n) (specs/kernels.md#unfold); see `reference.unfold`.

    4-D float32/float64 arrays go to the Rust kernel, everything else to the NumPy reference.
    """
    rust_ok = isinstance(x, np.ndarray) and x.ndim == 4 and x.dtype in (np.float32, np.float64)
    if _core is not None and rust_ok:
        return _core.unfold(x, mode)
    return reference.unfold(x, mode)
