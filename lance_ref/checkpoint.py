"""Checkpoints: a model's state_dict, an optimizer's state and metadata in one `.npz`; and a
torch model's weights, saved as a flat `.npz` of its state_dict.

Checkpoint keys are `model/<torch-style name>`, `optimizer/<key>` and `meta/<key>`; files are
written atomically and read without pickle (`lance_ref.io`).
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


def load_weights(path: str | os.PathLike, model, cast: bool = False, keep: tuple = ()):
    """Load a state_dict saved as a flat `.npz` (a torch model's:
    `np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})`) into `model`,
    strictly; with `cast`, float32 weights go into a float64 model (or back). Entries whose
    names start with one of `keep` are loaded only if their shapes fit, else the model keeps its
    own (a classifier for other classes). Returns the names kept (specs/nn.md#state-dict).

    FileNotFoundError for a missing file; ValueError naming the file for a corrupt one or one
    that does not fit the model."""
    state, own = load_npz(path), model.state_dict()

    def keepable(key):
        return any(key == k or key.startswith(k + ".") for k in keep)

    kept = sorted(k for k in own if keepable(k) and (k not in state or np.shape(state[k]) != own[k].shape))
    loaded = {k: v for k, v in state.items() if k not in kept}
    try:
        model.load_state_dict({**loaded, **{k: own[k] for k in kept}}, cast=cast)
    except ValueError as error:
        raise ValueError(f"weights {os.fspath(path)} do not fit {type(model).__name__}: {error}") from error
    return kept
