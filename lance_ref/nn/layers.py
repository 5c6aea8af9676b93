"""Layers with torch.nn's constructors, parameter names and defaults (specs/nn.md#layers).

Parameters are float32 unless `dtype=np.float64` is given; random initial values come from
lance_ref's global generator, so `lance_ref.manual_seed` makes a model reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..functional.conv import string_padding
from ..functional.windows import pair
from ..tensor import DEFAULT_DTYPE, float_dtype
from . import init
from .module import Module, Parameter


def _dtype(dtype) -> np.dtype:
    """A layer's dtype: float32 unless float64 is asked for."""
    return DEFAULT_DTYPE if dtype is None else float_dtype(dtype)


def _zeros_parameter(shape, dtype) -> Parameter:
    return Parameter(np.zeros(shape, dtype=_dtype(dtype)))


def _positive_int(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _reset_weight_and_bias(weight: Parameter, bias: Parameter | None) -> None:
    """torch's default for Linear and Conv2d (specs/nn.md#initialisation):
    W ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), b ~ the same bound."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.fan_in_and_fan_out(weight)
        init.uniform_(bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))


class Linear(Module):
    """y = x W^T + b; `weight` (out_features, in_features), `bias` (out_features,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.weight = _zeros_parameter((out_features, in_features), dtype)
        self.register_parameter("bias", _zeros_parameter((out_features,), dtype) if bias else None)
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Conv2d(Module):
    """2-D convolution; `weight` (out_channels, in_channels / groups, kh, kw), `bias` (out_channels,);
    `padding` an int, a pair, 'valid' or 'same', with `padding_mode` (specs/conv.md#padding)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        dtype=None,
    ):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.groups = _positive_int(groups, "groups")
        if in_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            (top, bottom), (left, right) = string_padding(padding, self.kernel_size, self.stride, self.dilation)
            self.padding_arg = padding
        else:
            self.padding_arg = (top, left) = (bottom, right) = pair(padding, "padding", 0)
        if padding_mode == "zeros" and (top, left) == (bottom, right):
            self.padding, self.input_padding = (top, left), None
        else:
            self.padding, self.input_padding = (0, 0), (left, right, top, bottom)
        self.weight = _zeros_parameter((out_channels, in_channels // groups) + self.kernel_size, dtype)
        self.register_parameter("bias", _zeros_parameter((out_channels,), dtype) if bias else None)
        _reset_weight_and_bias(self.weight, self.bias)

    def padded(self, x):
        """`x` with the padding the conv does not do itself: torch's `padding_mode`, or the odd
        element of an even kernel's padding='same' (specs/conv.md#padding)."""
        if self.input_padding is None:
            return x
        return F.pad(x, self.input_padding, "constant" if self.padding_mode == "zeros" else self.padding_mode)

    def check_self_padded(self, user: str) -> None:
        """`user` rebuilds this conv from its stride, padding and dilation alone."""
        if self.input_padding is not None:
            raise ValueError(
                f"{user} needs a conv with symmetric zero padding; this one has padding={self.padding_arg!r}, "
                f"padding_mode={self.padding_mode!r}"
            )

    def forward(self, x):
        return F.conv2d(self.padded(x), self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding_arg != (0, 0):
            text += f", padding={self.padding_arg!r}"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text if self.bias is not None else text + ", bias=False"


class _BatchNorm(Module):
    """Batch normalisation over axis 1 with torch's running statistics (specs/nn.md#batchnorm).

    In training the batch statistics normalise; with `track_running_stats` the running ones are
    updated, r <- (1 - m) r + m s (unbiased variance), where m = `momentum`, or
    1 / num_batches_tracked when `momentum` is None (a cumulative average). In eval the
    running statistics normalise; without `track_running_stats` the batch ones always do.
    """

    input_ndims: tuple = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype=None,
    ):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if affine:
            self.weight = init.ones_(_zeros_parameter((num_features,), dtype))
            self.bias = _zeros_parameter((num_features,), dtype)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=_dtype(dtype)))
            self.register_buffer("running_var", np.ones(num_features, dtype=_dtype(dtype)))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def forward(self, x):
        if x.ndim not in self.input_ndims:
            raise ValueError(
                f"{type(self).__name__} expects input with {' or '.join(map(str, self.input_ndims))} "
                f"dims, got shape {x.shape}"
            )
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=momentum,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) or (N, C, L) inputs."""

    input_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """BatchNorm over (N, C, H, W) inputs."""

    input_ndims = (4,)


def pin_batchnorm(model: Module, freeze: bool = False, where=lambda name: True) -> None:
    """Pin each BatchNorm of `model` whose name passes `where` in eval mode, so that it keeps
    its running statistics, its affine parameters frozen too when `freeze` (specs/nn.md#freezing)."""
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and where(name):
            (module.freeze() if freeze else module).keep_eval()


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class ReLU6(Module):
    def forward(self, x):
        return F.relu6(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Identity(Module):
    def forward(self, x):
        return x


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Dropout(Module):
    """Zero elements with probability `p` and scale by 1/(1-p) in training; identity in eval.
    Masks come from lance_ref's global generator."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, kernel_size if stride is None else stride
        self.padding, self.dilation, self.ceil_mode = padding, dilation, bool(ceil_mode)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        return F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, kernel_size if stride is None else stride
        self.padding, self.ceil_mode = padding, bool(ceil_mode)
        self.count_include_pad, self.divisor_override = bool(count_include_pad), divisor_override

    def forward(self, x):
        return F.avg_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    def __init__(self, output_size, return_indices: bool = False):
        super().__init__(output_size)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        return F.adaptive_max_pool2d(x, self.output_size, self.return_indices)


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class _ModuleSequence(Module):
    """Children kept in order and named "0", "1", ...: indexing shared by Sequential and ModuleList."""

    def _key(self, index) -> str:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be ints or slices, got {type(index).__name__}")
        keys = list(self._modules)
        if not -len(keys) <= index < len(keys):
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of length {len(keys)}")
        return keys[index]

    def _slice(self, index: slice):
        return type(self)(list(self._modules.values())[index])

    def __getitem__(self, index):
        return self._slice(index) if isinstance(index, slice) else self._modules[self._key(index)]

    def __setitem__(self, index, module: Module) -> None:
        self.add_module(self._key(index), module)

    def __delitem__(self, index) -> None:
        keys = list(self._modules)[index] if isinstance(index, slice) else [self._key(index)]
        kept = [m for k, m in self._modules.items() if k not in keys]
        self._renumber(kept)

    def _renumber(self, modules: list) -> None:
        for key in list(self._modules):
            delattr(self, key)
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)


def apply_each(x, *layers):
    """layers[-1](...layers[0](x)), one call at a time (specs/nn.md#sequential).

    Each intermediate output is freed as soon as the next layer has used it (a nested call
    expression would keep it until the end). A plain `Sequential` among `layers` is expanded
    into its children, since calling it would hold its input until its last child returns."""
    for layer in _chained(layers):
        x = layer(x)
    return x


def _chained(layers):
    """`layers` with every plain `Sequential` replaced, recursively, by its children."""
    for layer in layers:
        if isinstance(layer, Sequential) and type(layer).forward is Sequential.forward:
            yield from _chained(layer)
        else:
            yield layer


class Sequential(_ModuleSequence):
    """Calls its children in order: `Sequential(m0, m1, ...)` (names "0", "1", ...) or
    `Sequential(OrderedDict(name=module, ...))`. A slice keeps the children's names, as torch."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            self.extend(modules)

    def _slice(self, index: slice):
        return Sequential(dict(list(self._modules.items())[index]))

    def forward(self, x):
        return apply_each(x, *self)


class ModuleList(_ModuleSequence):
    """A list of submodules (registered, so their parameters are the parent's); no forward."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)
