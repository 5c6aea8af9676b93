"""A restricted unpickler for the CIFAR "python version" batches.

Those files are Python 2 pickles of dicts holding lists, byte strings, numbers and one NumPy
uint8 array. Unpickling can call any importable callable, so `find_class` resolves exactly the
three globals that a NumPy array needs and refuses every other one:

- `numpy.core.multiarray._reconstruct` (also spelled `numpy._core.multiarray._reconstruct`):
  makes an empty array of a given shape and dtype;
- `numpy.ndarray`: the class passed to `_reconstruct`;
- `numpy.dtype`: builds the element type.

None of them runs user code, reads files or touches memory outside the arrays it allocates,
so a hostile file can at worst fail to load (or ask for a very large allocation).
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}") from None


def restricted_load(path: str | os.PathLike) -> Any:
    """Unpickle `path` allowing only plain containers, strings, numbers and NumPy arrays.

    Python 2 strings load as bytes. Raises ValueError naming the file if it asks for any other
    global, or is truncated or corrupt.
    """
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, encoding="bytes").load()
        except Exception as err:  # any failure to parse untrusted bytes means a bad file
            raise ValueError(f"{path}: not a loadable CIFAR python batch: {err}") from err
