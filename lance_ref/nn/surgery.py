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
