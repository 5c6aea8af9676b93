"""The weight layers a continual strategy protects, and their inputs as GPM sees them
(specs/continual.md#layer-inputs).

A conv layer's input is read as its patch rows, (N*H'*W', C*kh*kw) in the order of
`weight.reshape(C_out, -1)`, so that y = rows @ W^T; a linear layer's input is its rows.
The task heads (the model's last child: a Linear, or a ModuleList of them) are not protected.
"""

from __future__ import annotations

import numpy as np

from ..functional.conv import conv_geometry, patch_tokens
from ..nn import Conv2d, Linear, ModuleList


def head_names(model) -> list:
    """Names of the task heads: the model's last child, a Linear or a ModuleList of them."""
    name, last = list(model.named_children())[-1]
    if isinstance(last, Linear):
        return [name]
    if isinstance(last, ModuleList) and all(isinstance(m, Linear) for m in last):
        return [f"{name}.{i}" for i in range(len(last))]
    raise ValueError(f"the model's last child {name!r} must be a Linear or a ModuleList of task heads")


def protected_layers(model) -> dict:
    """name -> Conv2d or Linear for every weight layer but the heads, in forward order."""
    heads = set(head_names(model))
    return {n: m for n, m in model.named_modules() if isinstance(m, (Conv2d, Linear)) and n not in heads}


def check_patch_rows(layers: dict) -> None:
    """Patch rows (and so GPM's memories and LANCE-CL's bases) need groups = 1 convs that do
    their own zero padding."""
    for name, layer in layers.items():
        if getattr(layer, "groups", 1) != 1:
            raise ValueError(f"layer {name!r} has groups={layer.groups}; GPM and LANCE-CL protect groups=1 convs only")
        if isinstance(layer, Conv2d):
            layer.check_self_padded(f"GPM and LANCE-CL (layer {name!r})")


def patch_rows(layer, x: np.ndarray) -> np.ndarray:
    """The rows whose product with W^T gives the layer's output: conv patches (N*H'*W',
    C*kh*kw) in the (c, i, j) order of `weight.reshape(C_out, -1)`, or a linear layer's input."""
    if layer.weight.ndim == 2:  # a Linear, or a layer wrapping one
        return x.reshape(-1, x.shape[-1])
    geometry = conv_geometry(x.shape, layer.weight.shape[2:], layer.stride, layer.padding, layer.dilation, 1)
    tokens = patch_tokens(x, geometry)
    return tokens.reshape(-1, tokens.shape[-1])
