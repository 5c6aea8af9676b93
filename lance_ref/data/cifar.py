"""CIFAR-10 and CIFAR-100 in their binary or python formats.

Format reference: https://www.cs.toronto.edu/~kriz/cifar.html
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import Dataset
from .unpickle import restricted_load

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_PIXELS = 3 * 32 * 32  # one image: 1024 red, 1024 green, 1024 blue bytes, rows in order


@dataclass(frozen=True)
class _Layout:
    """Where one release keeps its files."""

    directory: str
    train: tuple[str, ...]
    test: str
    names: str  # class-name file (optional)
    binary: bool


_LAYOUTS = {
    10: (
        _Layout("cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                "test_batch.bin", "batches.meta.txt", True),
        _Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                "test_batch", "batches.meta", False),
    ),
    100: (
        _Layout("cifar-100-binary", ("train.bin",), "test.bin", "fine_label_names.txt", True),
        _Layout("cifar-100-python", ("train",), "test", "meta", False),
    ),
}


def _read_binary(path: Path, which: int) -> tuple[np.ndarray, np.ndarray]:
    """Records of 1 label byte (CIFAR-10) or coarse + fine label bytes (CIFAR-100, fine kept)
    followed by 3072 pixel bytes."""
    record = (1 if which == 10 else 2) + _PIXELS
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR-{which} records"
        )
    raw = raw.reshape(-1, record)
    return raw[:, record - _PIXELS:].reshape(-1, 3, 32, 32), raw[:, record - _PIXELS - 1]


def _text(value) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _load_dict(path: Path) -> dict:
    """A pickled dict (restricted unpickler), its byte-string keys decoded."""
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {_text(key): value for key, value in obj.items()}


def _read_python(path: Path, which: int) -> tuple[np.ndarray, np.ndarray]:
    """A pickled dict with `data` (N, 3072) uint8 and `labels` (CIFAR-10) or `fine_labels`."""
    batch = _load_dict(path)
    label_key = "labels" if which == 10 else "fine_labels"
    data, labels = batch.get("data"), batch.get(label_key)
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8
        and data.ndim == 2 and data.shape[1] == _PIXELS
    ):
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, {_PIXELS})")
    if not isinstance(labels, (list, np.ndarray)):
        raise ValueError(f"{path}: {label_key!r} must be a list of labels")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{path}: {label_key!r} must hold integers ({err})") from err
    if labels.shape != (len(data),):
        raise ValueError(
            f"{path}: {label_key!r} must hold {len(data)} labels, got shape {labels.shape}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _class_names(path: Path, binary: bool, which: int) -> tuple[str, ...]:
    """Class names from the release's meta file, or "0", "1", ... if it is absent."""
    if not path.is_file():
        return tuple(str(i) for i in range(which))
    if binary:
        lines = path.read_text(encoding="latin-1").splitlines()
        names = [line.strip() for line in lines if line.strip()]
    else:
        names = _load_dict(path).get("label_names" if which == 10 else "fine_label_names")
        names = [_text(n) for n in names] if isinstance(names, list) else None
    if names is None or len(names) != which or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: expected {which} class names")
    return tuple(names)


def _find_layout(root: Path, which: int) -> tuple[_Layout, Path]:
    for layout in _LAYOUTS[which]:
        for directory in (root, root / layout.directory):
            if all((directory / name).is_file() for name in (*layout.train, layout.test)):
                return layout, directory
    expected = " or ".join(
        f"{lay.directory}/{{{', '.join((*lay.train, lay.test))}}}" for lay in _LAYOUTS[which]
    )
    raise FileNotFoundError(
        f"{root}: no CIFAR-{which} files found; expected {expected} (in it or in that subdirectory)"
    )


def load_cifar(path: str | os.PathLike, which: int = 10) -> tuple[Dataset, Dataset]:
    """(train, test) CIFAR-`which` (10 or 100; fine labels for 100), images uint8 (N, 3, 32, 32).

    `path` is the extracted batch directory (e.g. `cifar-10-batches-bin`, `cifar-100-python`) or
    the directory that contains it. Binary and python formats are both read; pickles go through
    a restricted unpickler (see `unpickle.py`).
    """
    if which not in _LAYOUTS:
        raise ValueError(f"which must be 10 or 100, got {which!r}")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory (expected the CIFAR-{which} files)")
    layout, directory = _find_layout(root, which)
    read = _read_binary if layout.binary else _read_python
    classes = _class_names(directory / layout.names, layout.binary, which)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if which == 10 else (CIFAR100_MEAN, CIFAR100_STD)

    def dataset(files: tuple[str, ...]) -> Dataset:
        parts = [read(directory / name, which) for name in files]
        for name, (_, labels) in zip(files, parts):
            if labels.size and (labels.min() < 0 or labels.max() >= which):
                raise ValueError(f"{directory / name}: labels must lie in [0, {which})")
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
        return Dataset(images, labels, classes, f"cifar{which}", mean, std)

    return dataset(layout.train), dataset((layout.test,))
