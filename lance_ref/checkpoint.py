"""Checkpoints: a model's state_dict, an optimizer's state and metadata in one `.npz`.

Keys are `model/<torch-style name>`, `optimizer/<key>` and `meta/<key>`; the file is written
atomically and read without pickle (`lance_ref.io`).
"""

from __future__ import annotations

import os

import numpy as np

from .io import flatten, load_npz, save_npz, unflatten


def save_checkpoint(path: str | os.PathLike, model, optimizer=None, meta: dict | None = None) -> None:
    """Write `model` (and `optimizer`, and `meta` numbers/strings) to `path` atomically."""
    state = {"model": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if meta:
        state["meta"] = meta
    save_npz(path, flatten(state))


def load_checkpoint(path: str | os.PathLike, model, optimizer=None) -> dict:
    """Load a checkpoint into `model` (and `optimizer`); returns its metadata.

    Raises FileNotFoundError for a missing file and ValueError naming the file when it is
    corrupt, truncated, lacks a model or optimizer state, or does not fit the model.
    """
    state = unflatten(load_npz(path))
    if "model" not in state or (optimizer is not None and "optimizer" not in state):
        wanted = "a model and an optimizer state" if optimizer is not None else "a model state"
        raise ValueError(f"{os.fspath(path)} is not a checkpoint holding {wanted}")
    try:
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"checkpoint {os.fspath(path)} does not fit: {error}") from error
    return {key: value.item() if np.ndim(value) == 0 else value for key, value in state.get("meta", {}).items()}
