"""Conv2d and Linear layers whose backward keeps a Tucker form of the input, not the input.

Three methods share these layers (specs/compressed.md#methods):
- `full`: plain backprop, the input is kept;
- `hosvd`: the decomposition is redone at every step (Nguyen et al., NeurIPS 2024);
- `lance`: bases fixed once by calibration, only the core is recomputed each step.
The weight gradient is formed in compressed space (`gradients`); input and bias gradients are
exact, since they need only W and dY.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import is_grad_enabled
from ..functional.conv import conv2d_forward, conv2d_grads, conv2d_params, conv_geometry, patch_tokens
from .. import kernels
from ..kernels import mode_product, tucker_project
from ..kernels.reference import check_finite
from ..nn import Conv2d, Module
from ..tensor import Function
from .calibration import Calibrator, check_mode_set, compressed_modes
from .gradients import conv2d_flops, conv2d_weight_grad, linear_flops, linear_weight_grad
from .hosvd import check_eps, truncated_hosvd

METHODS = ("full", "hosvd", "lance")


def factor_ranks(factors) -> list:
    """k_n of each factor (None for a mode that is not compressed)."""
    return [None if u is None else int(u.shape[1]) for u in factors]


class Compressor:
    """What a compressed layer asks of its method (specs/compressed.md#methods): `compressor(x)`
    is the (core, factors) that the backward keeps, `ranks` those of the last or the fixed
    factors; a method calibrated on data is `calibrating` while it `observe`s the inputs."""

    calibrating = False
    ranks = None

    def __init__(self, eps: float, mode_set: str):
        self.eps, self.mode_set = check_eps(eps), check_mode_set(mode_set)

    def __call__(self, x: np.ndarray):
        raise NotImplementedError

    def observe(self, x: np.ndarray) -> None:
        raise TypeError(f"{type(self).__name__} is not calibrated on data")


class PerStepHOSVD(Compressor):
    """`hosvd` method: a fresh HOSVD of every input (specs/hosvd.md#hosvd)."""

    def __init__(self, eps: float, mode_set: str):
        super().__init__(eps, mode_set)
        self.ranks = None  # of the last input

    def __call__(self, x: np.ndarray):
        check_finite(x, "the input of a hosvd layer (has training diverged?)")  # its SVD would fail or hang
        core, factors = truncated_hosvd(x, self.eps, compressed_modes(self.mode_set, x.ndim))
        self.ranks = factor_ranks(factors)
        return core, factors


class Lance(Compressor):
    """`lance` method: bases fixed once from calibration Grams, then core = x x_n U_n^T (specs/hosvd.md#calibration)."""

    def __init__(self, eps: float, mode_set: str):
        super().__init__(eps, mode_set)
        self.calibrating, self.calibrator, self.factors = False, None, None

    def start_calibration(self) -> None:
        self.calibrating, self.calibrator, self.factors = True, None, None

    def observe(self, x: np.ndarray) -> None:
        if self.calibrator is None:
            self.calibrator = Calibrator(self.eps, compressed_modes(self.mode_set, x.ndim), x.ndim)
        self.calibrator.update(x)

    def finish_calibration(self) -> None:
        if self.calibrator is None:
            raise ValueError("calibration saw no batches")
        self.factors = self.bases_from(self.calibrator)
        self.calibrating, self.calibrator = False, None

    def bases_from(self, calibrator: Calibrator) -> list:
        """The fixed factors from the summed Grams: by the energy rule on every mode."""
        return calibrator.bases()

    @property
    def ranks(self):
        return None if self.factors is None else factor_ranks(self.factors)

    def fixed_factors(self) -> list:
        """The calibrated factors (an error before calibration)."""
        if self.factors is None:
            raise RuntimeError(
                "a LANCE layer was used before calibration; run lance_ref.compress.calibrate(model, batches) first"
            )
        return self.factors

    def __call__(self, x: np.ndarray):
        return tucker_project(x, self.fixed_factors()), self.factors


def make_compressor(method: str, eps: float, mode_set: str):
    """The compressor of `method` (None for full backprop)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "full":
        return None
    return (PerStepHOSVD if method == "hosvd" else Lance)(eps, mode_set)


def save_compressed(node: Function, weight: np.ndarray, compress) -> None:
    """What a compressed layer's backward reads: W if x needs a gradient and, if W needs one,
    (core, *factors) = compress() of the layer's input."""
    need_x, need_w = node.needs_input_grad[:2]
    core, factors = compress() if need_w else (None, ())
    node.save(weight if need_x else None, core, *factors)


class CompressedConv2dFunction(Function):
    """conv2d whose backward keeps (core, factors) of x (specs/compressed.md#conv2d-weight-gradient)."""

    def forward(self, x, weight, bias=None, *, params, compressor):
        self.geometry = conv_geometry(x.shape, weight.shape[2:], **params)
        self.params, self.input_shape, self.weight_shape = params, x.shape, weight.shape
        save_compressed(self, weight, lambda: compressor(x))
        y = conv2d_forward(x, weight, self.geometry)
        return y + bias.reshape(1, -1, 1, 1) if bias is not None else y

    def backward(self, grad):
        weight, core, *factors = self.saved_arrays
        grad_x = conv2d_grads(grad, weight, None, self.input_shape, self.geometry)[0] if weight is not None else None
        grad_w = None
        if core is not None:
            grad_w = conv2d_weight_grad(core, factors, grad, self.weight_shape, **self.params)
        return grad_x, grad_w, grad.sum(axis=(0, 2, 3))


class CompressedLinearFunction(Function):
    """linear whose backward keeps (core, factors) of x (specs/compressed.md#linear-weight-gradient)."""

    def forward(self, x, weight, bias=None, *, compressor):
        save_compressed(self, weight, lambda: compressor(x))
        y = x @ weight.T
        return y + bias if bias is not None else y

    def backward(self, grad):
        weight, core, *factors = self.saved_arrays
        grad_x = grad @ weight if weight is not None else None
        grad_w = linear_weight_grad(core, factors, grad) if core is not None else None
        return grad_x, grad_w, grad.reshape(-1, grad.shape[-1]).sum(axis=0)


class PatchCompressedConv2dFunction(Function):
    """conv2d read as y = X W^T over its patch tokens X (B, L, C kh kw), whose backward keeps
    (core, factors) of X (specs/compressed.md#patch-compressed-conv2d)."""

    def forward(self, x, weight, *, geometry, factors):
        self.geometry, self.input_shape, self.weight_shape = geometry, x.shape, weight.shape
        save_compressed(self, weight, lambda: (project_patch_tokens(x, geometry, factors), factors))
        return conv2d_forward(x, weight, geometry)

    def backward(self, grad):
        weight, core, *factors = self.saved_arrays
        grad_x = conv2d_grads(grad, weight, None, self.input_shape, self.geometry)[0] if weight is not None else None
        grad_w = None
        if core is not None:
            grad_tokens = grad.reshape(len(grad), len(grad[0]), -1).transpose(0, 2, 1)  # (B, L, O)
            grad_w = linear_weight_grad(core, factors, grad_tokens).reshape(self.weight_shape)
        return grad_x, grad_w


def project_patch_tokens(x: np.ndarray, geometry, factors) -> np.ndarray:
    """S = X x_0 U_B^T x_1 U_L^T x_2 U_F^T for the patch tokens X of `x`, which are never formed
    whole: per chunk of samples that fits the workspace, its tokens' projection on U_L and U_F,
    then on its rows of U_B, summed over the chunks (or, without U_B, stacked)
    (specs/compressed.md#patch-compressed-conv2d)."""
    u_b, *others = factors
    (oh, ow), (kh, kw) = geometry.out_hw, geometry.kernel
    parts = []
    for chunk in kernels.sample_chunks(len(x), oh * ow * kh * kw * x.shape[1] * 2 * x.itemsize):
        part = tucker_project(patch_tokens(x[chunk], geometry), [None, *others])
        parts.append(part if u_b is None else mode_product(part, np.ascontiguousarray(u_b[chunk].T), 0))
    return np.concatenate(parts) if u_b is None else sum(parts[1:], parts[0])


class PatchCompressedConv2d(Module):
    """A bias-free, groups = 1 Conv2d whose backward keeps a Tucker form of its patch tokens
    (B, L, C kh kw) on bases fixed by calibration (LANCE-CL's 3-mode tensors); with no
    compressor it is the plain conv. `compressor` is a `Lance` (or a subclass)."""

    def __init__(self, conv: Conv2d, compressor=None):
        super().__init__()
        if conv.bias is not None or conv.groups != 1:
            raise ValueError("PatchCompressedConv2d needs a bias-free conv with groups=1")
        conv.check_self_padded("PatchCompressedConv2d")
        self.weight = conv.weight
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, 1
        self.compressor = compressor

    def forward(self, x):
        if self.compressor is None:
            return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation)
        geometry = conv_geometry(x.shape, self.weight.shape[2:], self.stride, self.padding, self.dilation, 1)
        if self.compressor.calibrating:
            self.compressor.observe(patch_tokens(x.data, geometry))
            return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation)
        factors = self.compressor.fixed_factors() if is_grad_enabled() and self.weight.requires_grad else ()
        return PatchCompressedConv2dFunction.apply(x, self.weight, geometry=geometry, factors=factors)

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.weight.shape[2:])}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"


class _Compressed(Module):
    """Shared by the compressed layers: the wrapped layer's parameters under the same names,
    the method's compressor, and the input shape of the last call (for memory figures)."""

    def __init__(self, layer: Module, method: str = "lance", eps: float = 0.9, mode_set: str = "all"):
        super().__init__()
        self.weight = layer.weight
        self.register_parameter("bias", layer.bias)
        self.method, self.eps, self.mode_set = method, eps, mode_set
        self.compressor = make_compressor(method, eps, mode_set)
        self.input_shape = self.input_dtype = None

    def forward(self, x):
        if is_grad_enabled():  # a training step, not evaluation
            self.input_shape, self.input_dtype = x.shape, x.dtype
        if self.compressor is not None and self.compressor.calibrating:
            self.compressor.observe(x.data)
        if self.compressor is None:
            return self.plain(x)
        return self.compressed(x)

    def full_activation_bytes(self) -> int:
        """What full backprop keeps for this layer at the last input: the input itself."""
        return int(np.prod(self.input_shape)) * np.dtype(self.input_dtype).itemsize

    def ranks(self):
        """Ranks per mode (None: not compressed) of the fixed bases or of the last HOSVD."""
        return None if self.compressor is None else self.compressor.ranks

    def flops(self) -> dict:
        """FLOPs of this layer's projection, compressed and dense weight gradients at the last
        training input (specs/compressed.md#flops)."""
        return self.count_flops(self.ranks() or [None] * len(self.input_shape))

    def extra_repr(self) -> str:
        return f"method={self.method}, eps={self.eps}, modes={self.mode_set}"


class CompressedConv2d(_Compressed):
    """A Conv2d fine-tuned by `method`; weight and bias are the original layer's Parameters."""

    def __init__(self, conv: Conv2d, method: str = "lance", eps: float = 0.9, mode_set: str = "all"):
        super().__init__(conv, method, eps, mode_set)
        conv.check_self_padded("CompressedConv2d")
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def count_flops(self, ranks) -> dict:
        return conv2d_flops(self.input_shape, ranks, self.weight.shape, self.stride, self.padding, self.dilation, self.groups)

    def plain(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def compressed(self, x):
        bias_shape = None if self.bias is None else self.bias.shape
        params = conv2d_params(x.shape, self.weight.shape, bias_shape, self.stride, self.padding, self.dilation, self.groups)
        inputs = (x, self.weight) if self.bias is None else (x, self.weight, self.bias)
        return CompressedConv2dFunction.apply(*inputs, params=params, compressor=self.compressor)


class CompressedLinear(_Compressed):
    """A Linear fine-tuned by `method`; inputs (B, F) or token inputs (B, L, F)."""

    def count_flops(self, ranks) -> dict:
        return linear_flops(self.input_shape, ranks, self.weight.shape)

    def plain(self, x):
        return F.linear(x, self.weight, self.bias)

    def compressed(self, x):
        if x.ndim not in (2, 3) or x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"input must have shape (B, {self.weight.shape[1]}) or (B, L, {self.weight.shape[1]}), got {x.shape}")
        inputs = (x, self.weight) if self.bias is None else (x, self.weight, self.bias)
        return CompressedLinearFunction.apply(*inputs, compressor=self.compressor)
