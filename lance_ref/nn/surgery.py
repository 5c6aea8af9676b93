"""Turning a trained model into one whose last layers fine-tune (specs/nn.md#fine-tuning-surgery)."""

from __future__ import annotations

import numpy as np

from .layers import Conv2d, Linear, pin_batchnorm


def last_layers(model, last_n: int) -> list:
    """Names of the last `last_n` Conv2d layers and of the classifier (the last Linear), in
    registration order, which is the forward order of the zoo's models."""
    convs = [name for name, m in model.named_modules() if isinstance(m, Conv2d)]
    linears = [name for name, m in model.named_modules() if isinstance(m, Linear)]
    if not isinstance(last_n, (int, np.integer)) or not 1 <= last_n <= len(convs):
        raise ValueError(f"last_n must be an int in 1..{len(convs)} (the model's conv layers), got {last_n!r}")
    if not linears:
        raise ValueError("the model has no Linear classifier to fine-tune")
    return convs[-last_n:] + linears[-1:]


def fine_tune_last(model, last_n: int, wrap_conv, wrap_classifier) -> list:
    """Replace the last `last_n` Conv2d layers by `wrap_conv(conv)` and the classifier (the last
    Linear) by `wrap_classifier(linear)`, make those trainable, freeze every other parameter and
    pin every BatchNorm in eval mode. Returns the replaced layers' names, in forward order (the
    classifier last), those of `last_layers`."""
    names = last_layers(model, last_n)
    model.freeze()
    pin_batchnorm(model)
    for name in names:
        layer = model.get_submodule(name)
        wrap = wrap_conv if isinstance(layer, Conv2d) else wrap_classifier
        model.set_submodule(name, wrap(layer))
        layer.requires_grad_(True)
    return names


class FinetuneMethod:
    """How a method fine-tunes a model's last layers (specs/compressed.md#fine-tuning-protocol):
    `prepare(model)` wraps them and freezes the rest, returning their names in forward order;
    `before_training(model, loader, show)` runs once before the first epoch (with a progress bar
    if `show`) and returns its seconds;
    `before_epoch`, if not None, is the training loop's hook before each epoch; `figures(...)`
    are the method's own entries of the results."""

    before_epoch = None

    def prepare(self, model) -> list:
        raise NotImplementedError

    def before_training(self, model, loader, show: bool = False) -> float:
        return 0.0

    def figures(self, model, names: list, history: list, conv_parameters: int) -> dict:
        return {}
