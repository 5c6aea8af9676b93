"""Tensor kernels: NumPy references (`reference`) and their Rust ports in `lance_ref._core`.

Each kernel below calls the Rust function of the same name when the extension provides one and
the arguments are in its domain (4-D float32/float64 tensors; any shape for the elementwise
`clamp` and `masked`), else the NumPy reference. The Rust kernels agree with the references
exactly for the copies (unfold, fold, im2col), max pooling, clamp and masked, and to rounding
for the products and convolutions (relative error within 1e-5 in float32, 1e-12 in float64; see
specs/kernels.md).

The Rust extension is used when it is importable, unless the environment variable
LANCE_REF_BACKEND is `numpy`; with LANCE_REF_BACKEND=rust a missing extension is an
ImportError instead of a silent fallback. The variable is read once, at import;
`use_backend` switches for a block (benchmarks compare both backends in one process).
"""

import contextlib
import os

import numpy as np

from . import reference
from .workspace import WORKSPACE_ENV, padding_bytes, sample_chunks, set_workspace_bytes, workspace_bytes

BACKEND_ENV = "LANCE_REF_BACKEND"


def _load_core():
    choice = os.environ.get(BACKEND_ENV, "")
    if choice not in ("", "rust", "numpy"):
        raise ValueError(f"{BACKEND_ENV} must be 'rust', 'numpy' or unset, got {choice!r}")
    if choice == "numpy":
        return None
    try:
        from .. import _core
    except ImportError as err:
        if choice == "rust":
            raise ImportError(
                f"{BACKEND_ENV}=rust but the Rust extension lance_ref._core is not built; "
                "install the package with `pip install .` or unset the variable"
            ) from err
        return None
    return _core


_core = _load_core()


@contextlib.contextmanager
def use_backend(name: str):
    """Run the block on the 'rust' or the 'numpy' kernels, whatever LANCE_REF_BACKEND chose."""
    global _core
    if name not in ("rust", "numpy"):
        raise ValueError(f"backend must be 'rust' or 'numpy', got {name!r}")
    if name == "rust":
        from .. import _core as rust  # ImportError when the extension is not built
    saved, _core = _core, (rust if name == "rust" else None)
    try:
        yield
    finally:
        _core = saved


def backend() -> str:
    """'rust' if the kernels run in lance_ref._core, 'numpy' if they fall back to `reference`."""
    return "numpy" if _core is None else "rust"


def simd_isa() -> str:
    """The instruction set the Rust kernels run on ('avx512', 'avx2', 'neon', 'scalar'), or
    'none' on the NumPy backend."""
    return "none" if _core is None else _core.simd_isa()


def _rust(name: str, rust_ok: bool) -> bool:
    """Whether the extension is loaded, has a kernel `name` and `rust_ok` says the arguments
    suit it."""
    return rust_ok and _core is not None and hasattr(_core, name)


def _kernel(name: str, rust_ok: bool):
    """The Rust kernel `name` if `_rust` says so, otherwise the NumPy reference of that name."""
    return getattr(_core, name) if _rust(name, rust_ok) else getattr(reference, name)


def _float(x) -> bool:
    """The elementwise Rust kernels' domain: float32/float64 arrays of any shape and strides."""
    return isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64)


def _float_4d(x) -> bool:
    """The other Rust kernels' domain: 4-D float32/float64 arrays (any strides)."""
    return _float(x) and x.ndim == 4


def unfold(x: np.ndarray, mode: int) -> np.ndarray:
    """Mode-n unfolding X_(n) (specs/kernels.md#unfold); see `reference.unfold`."""
    return _kernel("unfold", _float_4d(x))(x, mode)


def fold(m: np.ndarray, mode: int, shape) -> np.ndarray:
    """Inverse of `unfold` (specs/kernels.md#fold); see `reference.fold`."""
    return _kernel("fold", len(shape) == 4 and isinstance(m, np.ndarray) and m.ndim == 2)(m, mode, shape)


def mode_product(x: np.ndarray, matrix: np.ndarray, mode: int) -> np.ndarray:
    """x x_n M (specs/kernels.md#mode_product); see `reference.mode_product`."""
    return _kernel("mode_product", _float_4d(x))(x, matrix, mode)


def tucker_project(x: np.ndarray, factors) -> np.ndarray:
    """Tucker core x x_n U_n^T (specs/kernels.md#tucker_project); see `reference.tucker_project`."""
    return _kernel("tucker_project", _float_4d(x))(x, factors)


def tucker_reconstruct(core: np.ndarray, factors) -> np.ndarray:
    """core x_n U_n (specs/kernels.md#tucker_reconstruct); see `reference.tucker_reconstruct`."""
    return _kernel("tucker_reconstruct", _float_4d(core))(core, factors)


def gram(x: np.ndarray, mode: int) -> np.ndarray:
    """X_(n) X_(n)^T (specs/kernels.md#gram); see `reference.gram`."""
    return _kernel("gram", _float_4d(x))(x, mode)


def im2col(x: np.ndarray, kernel, stride, padding, dilation, groups: int = 1) -> np.ndarray:
    """The im2col matrix of a conv input (specs/conv.md#im2col); see `reference.im2col`."""
    return _kernel("im2col", _float_4d(x))(x, kernel, stride, padding, dilation, groups)


def direct_conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """A grouped convolution summed over its kernel taps (specs/conv.md#direct); see
    `reference.direct_conv2d`. The Rust kernel takes the depthwise ones (groups = channels)."""
    depthwise = _float_4d(x) and _float_4d(weight) and groups == x.shape[1]
    return _kernel("direct_conv2d", depthwise)(x, weight, stride, padding, dilation, groups)


def direct_conv2d_input_grad(grad: np.ndarray, weight: np.ndarray, input_hw, stride, padding, dilation, groups: int) -> np.ndarray:
    """Its VJP for x (specs/conv.md#direct); see `reference.direct_conv2d_input_grad`."""
    depthwise = _float_4d(grad) and _float_4d(weight) and weight.shape[1] == 1
    return _kernel("direct_conv2d_input_grad", depthwise)(grad, weight, input_hw, stride, padding, dilation, groups)


def direct_conv2d_weight_grad(grad: np.ndarray, x: np.ndarray, kernel, stride, padding, dilation, groups: int) -> np.ndarray:
    """Its VJP for W (specs/conv.md#direct); see `reference.direct_conv2d_weight_grad`."""
    depthwise = _float_4d(grad) and _float_4d(x) and groups == x.shape[1]
    return _kernel("direct_conv2d_weight_grad", depthwise)(grad, x, kernel, stride, padding, dilation, groups)


def conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, dilation) -> np.ndarray:
    """A groups = 1 convolution: `reference.conv2d` unfolds in chunks; the Rust kernel is one GEMM
    on the implicit im2col, padding a chunk of samples at a time (specs/conv.md#implicit-gemm)."""
    if _rust("conv2d", _float_4d(x) and _float_4d(weight)):
        return _core.conv2d(x, weight, stride, padding, dilation, padding_bytes())
    return reference.conv2d(x, weight, stride, padding, dilation)


def conv2d_input_grad(grad: np.ndarray, weight: np.ndarray, input_hw, stride, padding, dilation) -> np.ndarray:
    """Its VJP for x; see `reference.conv2d_input_grad`."""
    return _kernel("conv2d_input_grad", _float_4d(grad) and _float_4d(weight))(grad, weight, input_hw, stride, padding, dilation)


def conv2d_weight_grad(grad: np.ndarray, x: np.ndarray, kernel, stride, padding, dilation) -> np.ndarray:
    """Its VJP for W; see `reference.conv2d_weight_grad`."""
    if _rust("conv2d_weight_grad", _float_4d(grad) and _float_4d(x)):
        return _core.conv2d_weight_grad(grad, x, kernel, stride, padding, dilation, padding_bytes())
    return reference.conv2d_weight_grad(grad, x, kernel, stride, padding, dilation)


def implicit_unfolding() -> bool:
    """Whether `conv2d` and `conv2d_weight_grad` never form im2col (the Rust kernels), so that
    unfolding the same array twice costs no memory (specs/conv.md#implicit-gemm)."""
    return _rust("conv2d", True)


def max_pool2d(x: np.ndarray, kernel, stride, padding, dilation, out_hw) -> tuple:
    """(maxima, winning taps) of max pooling (specs/pool.md#max_pool2d); see `reference.max_pool2d`."""
    return _kernel("max_pool2d", _float_4d(x) and kernel[0] * kernel[1] <= 1 << 16)(x, kernel, stride, padding, dilation, out_hw)


def max_pool2d_backward(grad: np.ndarray, taps: np.ndarray, input_hw, kernel, stride, padding, dilation) -> np.ndarray:
    """Its VJP for x; see `reference.max_pool2d_backward`."""
    rust_ok = _float_4d(grad) and isinstance(taps, np.ndarray) and taps.dtype in (np.uint8, np.uint16)
    return _kernel("max_pool2d_backward", rust_ok)(grad, taps, input_hw, kernel, stride, padding, dilation)


def batch_norm_stats(x: np.ndarray) -> np.ndarray:
    """[mean; biased variance] per channel, shape (2, C) (specs/norm.md#batch_norm); see `reference.batch_norm_stats`."""
    return _kernel("batch_norm_stats", _float_4d(x))(x)


def batch_norm_forward(x, mean, inv_std, weight, bias, keep_x_hat: bool) -> tuple:
    """(x_hat or None, y) of batch normalisation; see `reference.batch_norm_forward`."""
    return _kernel("batch_norm_forward", _float_4d(x))(x, mean, inv_std, weight, bias, keep_x_hat)


def batch_norm_backward(grad, x_hat, scale, batch_stats: bool) -> tuple:
    """(dx, [dgamma; dbeta]) of batch normalisation; see `reference.batch_norm_backward`."""
    return _kernel("batch_norm_backward", _float_4d(grad))(grad, x_hat, scale, batch_stats)


def clamp(x: np.ndarray, low, high, keep_mask: bool) -> tuple:
    """(y, packed mask or None) of clipping to [low, high] (specs/activation.md#masks); see
    `reference.clamp`."""
    return _kernel("clamp", _float(x))(x, low, high, keep_mask)


def masked(grad: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """grad times a packed mask (specs/activation.md#masks); see `reference.masked`."""
    return _kernel("masked", _float(grad) and isinstance(packed, np.ndarray) and packed.dtype == np.uint8)(grad, packed)
