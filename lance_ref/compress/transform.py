"""Prepare a model for fine-tuning its last layers with a method, and calibrate LANCE bases."""

from __future__ import annotations

import time

import numpy as np

from ..autograd import no_grad
from ..nn import BatchNorm1d, BatchNorm2d, Conv2d, Linear, Module
from ..tensor import Tensor
from .layers import CompressedConv2d, CompressedLinear, FixedBases


def prepare_finetune(
    model: Module, last_n: int, method: str, eps: float = 0.9, mode_set: str = "all", compress_classifier: bool = False
) -> list:
    """Replace the last `last_n` Conv2d layers by compressed layers of `method` and make the
    classifier (the last Linear) trainable, by plain backprop unless `compress_classifier`;
    freeze every other parameter and pin every BatchNorm in eval mode. Returns the names of the
    fine-tuned layers, in forward order (the classifier last).

    Layers are taken in registration order, which is the forward order of the zoo's models.
    """
    convs = [name for name, m in model.named_modules() if isinstance(m, Conv2d)]
    linears = [name for name, m in model.named_modules() if isinstance(m, Linear)]
    if not isinstance(last_n, (int, np.integer)) or not 1 <= last_n <= len(convs):
        raise ValueError(f"last_n must be an int in 1..{len(convs)} (the model's conv layers), got {last_n!r}")
    if not linears:
        raise ValueError("the model has no Linear classifier to fine-tune")
    names = convs[-last_n:] + linears[-1:]
    model.freeze()
    for module in model.modules():
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            module.keep_eval()
    for name in names:
        layer = model.get_submodule(name)
        if isinstance(layer, Conv2d):
            model.set_submodule(name, CompressedConv2d(layer, method, eps, mode_set))
        else:
            model.set_submodule(name, CompressedLinear(layer, method if compress_classifier else "full", eps, mode_set))
        layer.requires_grad_(True)
    return names


def lance_layers(model: Module) -> list:
    """(name, layer) of the layers whose method is `lance`."""
    return [(n, m) for n, m in model.named_modules() if isinstance(getattr(m, "compressor", None), FixedBases)]


def calibrate(model: Module, batches, **forward_options) -> float:
    """Fix the LANCE bases of every `lance` layer from `batches` (already normalised arrays),
    forwarded in eval mode without gradients; returns the seconds it took (specs/hosvd.md#calibration)."""
    layers = lance_layers(model)
    if not layers:
        raise ValueError("the model has no layer with method 'lance' to calibrate")
    start, was_training = time.perf_counter(), model.training
    for _, layer in layers:
        layer.compressor.start_calibration()
    model.eval()
    try:
        with no_grad():
            for x in batches:
                model(Tensor(x), **forward_options)
        for _, layer in layers:
            layer.compressor.finish_calibration()
    finally:
        model.train(was_training)
    return time.perf_counter() - start
