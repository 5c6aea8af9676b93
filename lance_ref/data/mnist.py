"""MNIST: the bundled 5,000-digit subset and the original IDX files."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from .dataset import Dataset

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
MNIST_CLASSES = tuple(str(d) for d in range(10))

MNIST5K_PATH = Path(__file__).with_name("mnist5k.npz")
MNIST5K_SHA256 = "246e0c30eeea57c8d0037d3f38c8e00651ec204cc61b8022563e9aeeb9d756f4"

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _mnist(images: np.ndarray, labels: np.ndarray, name: str) -> Dataset:
    """(N, H, W) uint8 digits and their labels as a one-channel Dataset."""
    return Dataset(
        images=images[:, None], labels=labels.astype(np.int64), classes=MNIST_CLASSES,
        name=name, mean=MNIST_MEAN, std=MNIST_STD,
    )


def load_mnist5k() -> Dataset:
    """The bundled 5,000 MNIST digits (500 per class, sorted by class), as (5000, 1, 28, 28) uint8.

    The file is checked against its sha256; a mismatch raises ValueError (reinstall the package).
    """
    raw = MNIST5K_PATH.read_bytes()
    if hashlib.sha256(raw).hexdigest() != MNIST5K_SHA256:
        raise ValueError(f"{MNIST5K_PATH} is corrupt (sha256 mismatch); reinstall lance_ref")
    with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
        return _mnist(archive["images"], archive["labels"], "mnist5k")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file (magic 0x0000080<ndim>, big-endian sizes, raw bytes)."""
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                data = f.read()
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err
    else:
        data = path.read_bytes()
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x800 + ndim:
        raise ValueError(
            f"{path}: magic number {magic:#010x}, expected {0x800 + ndim:#010x} (uint8, {ndim}-d)"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise ValueError(
            f"{path}: {len(data)} bytes, expected {expected} for shape {shape} (truncated?)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: neither {stem} nor {stem}.gz found (MNIST IDX files)")


def load_mnist_idx(path: str | os.PathLike) -> tuple[Dataset, Dataset]:
    """(train, test) from a directory holding the four MNIST IDX files, plain or `.gz`:
    train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte. Bad magic numbers or sizes raise ValueError naming the file.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory (expected the MNIST IDX files)")
    splits = []
    for images_stem, labels_stem in IDX_FILES.values():
        images_path, labels_path = _find(directory, images_stem), _find(directory, labels_stem)
        images, labels = _read_idx(images_path, 3), _read_idx(labels_path, 1)
        if len(images) != len(labels):
            raise ValueError(
                f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"{labels_path}: label {labels.max()} is not a digit")
        splits.append(_mnist(images, labels, "mnist"))
    return splits[0], splits[1]
