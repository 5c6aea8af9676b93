"""Array and JSON files: atomic writes, pickle-free reads, nested state in one `.npz`.

Every writer goes through a temporary file in the target's directory that is flushed, fsynced
and then renamed over the target (`os.replace`), so a reader sees either the old file or the
new one, never a partial write. Readers use `allow_pickle=False`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # `_atomic_write`'s temporary files: .<name>.<random>.tmp


def prepare_output_dir(path: str | os.PathLike, name: str = "out") -> Path:
    """Make the directory `path` (and its parents), prove it writable by writing and removing a
    probe file, and remove the temporary files that a killed write of an earlier run left in it,
    so that a run fails at its start, not at its first save. Errors name the argument `name`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{name} {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise type(error)(f"{name} {path} cannot be written: {error.strerror or error}") from error
    for stale in path.iterdir():
        if TEMPORARY.match(stale.name) and stale.is_file():
            stale.unlink()
    return path


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(file)` on a temporary file, then rename it to `path` (removed on failure)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _plain_array(value: Any, key: str) -> np.ndarray:
    """`value` as an ndarray that loads without pickle (TypeError for object arrays)."""
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise TypeError(
            f"array {key!r} has dtype {array.dtype}, which needs pickle; "
            "expected numeric, bool or string data"
        )
    return array


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write `arrays` (names to arrays) to the uncompressed `.npz` file `path` atomically."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping of names to arrays, got {type(arrays).__name__}")
    checked = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"array names must be non-empty strings, got {key!r}")
        checked[key] = _plain_array(value, key)
    _atomic_write(path, lambda f: np.savez(f, **checked))


def load_npz(
    path: str | os.PathLike, required: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Read every array of the `.npz` file `path` (without pickle) into a dict.

    `required` names arrays that must be present. Raises FileNotFoundError if the file is
    missing and ValueError naming the file if it is truncated, corrupt, not an `.npz` archive,
    holds object arrays, or lacks a required array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected an .npz archive)")
    if not zipfile.is_zipfile(path):  # NumPy would take it for a pickle and advise loading it unsafely
        raise ValueError(f"{path} is not an .npz archive (a zip of .npy arrays); truncated, or another kind of file?")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable .npz archive (truncated or corrupt?): {err}"
        ) from err
    missing = sorted(set(required or ()) - arrays.keys())
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}; it holds {sorted(arrays)}")
    return arrays


def _json_default(value: Any) -> Any:
    """Turn NumPy scalars and arrays into plain Python values for `json`."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def save_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    _atomic_write(path, lambda f: f.write(data))


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically (NumPy values become plain values).

    Non-finite floats are written as `NaN`/`Infinity`, as Python's `json` reads them.
    """
    save_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode("utf-8"))


def flatten(nested: Mapping[str, Any], sep: str = "/") -> dict[str, np.ndarray]:
    """Flatten nested mappings of arrays and numbers to `{"a/b/c": array}`, ready for `save_npz`.

    Numbers (and strings) become 0-d arrays. Keys must be non-empty strings without `sep`;
    empty nested mappings are refused because `unflatten` could not restore them.
    """
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"sep must be a non-empty string, got {sep!r}")
    if not isinstance(nested, Mapping):
        raise TypeError(f"nested must be a mapping, got {type(nested).__name__}")
    flat: dict[str, np.ndarray] = {}

    def visit(mapping: Mapping, prefix: str) -> None:
        for key, value in mapping.items():
            where = prefix or "the top level"
            if not isinstance(key, str):
                raise TypeError(f"key {key!r} under {where!r} must be a string")
            if not key or sep in key:
                raise ValueError(
                    f"key {key!r} under {where!r} must be non-empty and without {sep!r}"
                )
            name = prefix + key
            if isinstance(value, Mapping):
                if not value:
                    raise ValueError(f"empty mapping at {name!r} cannot be stored")
                visit(value, name + sep)
            elif isinstance(value, (np.ndarray, np.generic, bool, int, float, complex, str)):
                flat[name] = _plain_array(value, name)
            else:
                raise TypeError(
                    f"value at {name!r} is {type(value).__name__}; expected an array, "
                    "a number, a string or a mapping"
                )

    visit(nested, "")
    return flat


def unflatten(flat: Mapping[str, np.ndarray], sep: str = "/") -> dict[str, Any]:
    """Invert `flatten`: split keys on `sep` and rebuild the nested dicts (values unchanged)."""
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"sep must be a non-empty string, got {sep!r}")
    nested: dict[str, Any] = {}
    for key in sorted(flat):
        parts = key.split(sep)
        if not all(parts):
            raise ValueError(f"key {key!r} has an empty component")
        node = nested
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                prefix = sep.join(parts[: depth + 1])
                raise ValueError(f"key {key!r} nests under {prefix!r}, which is an array")
        if parts[-1] in node:
            raise ValueError(f"key {key!r} is both an array and a prefix of other keys")
        node[parts[-1]] = flat[key]
    return nested
