"""Binary layers: sign activations with a straight-through estimator, and convs and linears
whose weights are binarised and whose training arithmetic is quantised (specs/binary.md#layers)."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..nn.layers import Conv2d, Linear
from ..nn.module import Module
from ..functional.masks import Masked
from .quantize import check_bits, quantize, quantize_array, quantize_grad


class SignSTE(Masked):
    """y = sign(x) with sign(0) = +1; dL/dx = dL/dy 1{|x| <= 1} (hardtanh's straight-through);
    saves that mask packed."""

    def forward(self, x):
        self.save_mask(lambda: np.abs(x) <= 1)
        return np.where(x >= 0, 1, -1).astype(x.dtype)

    def backward(self, grad):
        return (self.masked(grad),)


def sign(x):
    return SignSTE.apply(x)


class Sign(Module):
    """The binary activation: sign with a straight-through gradient."""

    def forward(self, x):
        return sign(x)


def binary_weight(weight):
    """W_b = sign(W) * alpha, alpha = mean |W| over each output channel (rows of dim 0)."""
    alpha = F.mean(F.abs(weight), dim=tuple(range(1, weight.ndim)), keepdim=True)
    return sign(weight) * alpha


class Quantized:
    """What QuantConv2d and QuantLinear share: `binary` weights, and training at
    `forward_bits` (activations and weights) and `backward_bits` (the error reaching the layer);
    None leaves that side in floating point."""

    forward_bits = backward_bits = None

    def __init__(self, *args, binary: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.binary = bool(binary)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, binary={self.binary}, bits=({self.forward_bits}, {self.backward_bits})"

    def requantize(self) -> None:
        """The latent weights back onto the `forward_bits` levels: the weight's after-update hook
        while `forward_bits` is set (`set_precision`, specs/binary.md#layers)."""
        self.weight.data[...] = quantize_array(self.weight.data, self.forward_bits)

    def effective_weight(self):
        weight = binary_weight(self.weight) if self.binary else self.weight
        return weight if self.forward_bits is None else quantize(weight, self.forward_bits)

    def quantized_call(self, x, op):
        """op(x, W) with x and W quantised to forward_bits and the gradient of its output to backward_bits."""
        if self.forward_bits is not None:
            x = quantize(x, self.forward_bits)
        y = op(x, self.effective_weight())
        return y if self.backward_bits is None else quantize_grad(y, self.backward_bits)


class QuantConv2d(Quantized, Conv2d):
    """Conv2d (same parameters and names) with binary weights if `binary` and quantised training."""

    def forward(self, x):
        return self.quantized_call(self.padded(x), lambda x, w: F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups))


class QuantLinear(Quantized, Linear):
    """Linear (same parameters and names) with binary weights if `binary` and quantised training."""

    def forward(self, x):
        return self.quantized_call(x, lambda x, w: F.linear(x, w, self.bias))


def quantized_layers(model) -> list:
    return [m for m in model.modules() if isinstance(m, Quantized)]


def set_precision(model, forward_bits: int | None, backward_bits: int | None) -> None:
    """Train every quantised layer of `model` at these bit widths (None: floating point)."""
    for bits, name in ((forward_bits, "forward_bits"), (backward_bits, "backward_bits")):
        if bits is not None:
            check_bits(bits, name)
    for layer in quantized_layers(model):
        layer.forward_bits, layer.backward_bits = forward_bits, backward_bits
        layer.weight.after_update = None if forward_bits is None else layer.requantize
