"""Reading what layers see and give during a forward pass (specs/nn.md#recording)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor
from .module import eval_mode

KINDS = ("input", "output")


@contextmanager
def recording(layers: dict, kind: str = "input"):
    """Within the block, each call of a layer in `layers` (name -> Module) appends its input or
    output Tensor (`kind`), graph included, to `recorded[name]`, the yielded dict."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    recorded = {name: [] for name in layers}

    def wrap(name, layer):
        forward = layer.forward

        def recording_forward(x, *args, **kwargs):
            y = forward(x, *args, **kwargs)
            recorded[name].append(x if kind == "input" else y)
            return y

        return recording_forward

    for name, layer in layers.items():
        object.__setattr__(layer, "forward", wrap(name, layer))
    try:
        yield recorded
    finally:
        for layer in layers.values():
            del layer.__dict__["forward"]


def layer_activations(model, layers: dict, x: np.ndarray, kind: str = "input", **forward_options) -> dict:
    """name -> the input or output (`kind`) of each layer of `layers` when `model` runs on `x`
    in eval mode without a graph; the model's mode is restored."""
    with eval_mode(model), no_grad(), recording(layers, kind) as recorded:
        model(Tensor(x), **forward_options)
    return {name: np.concatenate([t.data for t in tensors]) for name, tensors in recorded.items()}
