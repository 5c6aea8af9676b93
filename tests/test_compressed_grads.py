"""Weight gradients from a Tucker form of the input (specs/compressed.md), checked against the
engine's exact gradients at the reconstructed activation."""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lance_ref import Tensor
from lance_ref import functional as F
from lance_ref.compress.gradients import conv2d_flops, conv2d_weight_grad, linear_flops, linear_weight_grad
from lance_ref.kernels.reference import output_size
from strategies import arrays, conv_case, relative_error

# up to 4 channels, batch 4, sides 3-8: room for ranks below every size
CONV_CASES = conv_case(max_channels=4, general_groups=(2, 3), max_batch=4, min_side=3, max_side=8)

MODES = "abcd"


def tucker_product(t, factors, expand=True):
    """t x_n U_n (`expand`, k_n -> I_n) or t x_n U_n^T (I_n -> k_n) on every mode with a factor,
    by one einsum (independent of the code under test)."""
    small = MODES[: t.ndim]
    large = "".join(m if u is None else m.upper() for m, u in zip(small, factors))
    source, target = (small, large) if expand else (large, small)
    terms = [m.upper() + m for m, u in zip(small, factors) if u is not None]
    return np.einsum(",".join([source, *terms]) + "->" + target, t, *(u for u in factors if u is not None))


def cast(dtype, core, factors, grad_output):
    return core.astype(dtype), [None if u is None else u.astype(dtype) for u in factors], grad_output.astype(dtype)


@st.composite
def orthonormal(draw, size, rank, dtype=np.float64):
    """A random (size, rank) matrix with orthonormal columns, C- or Fortran-ordered."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = np.linalg.qr(rng.standard_normal((size, rank)))[0].astype(dtype)
    return draw(st.sampled_from([np.ascontiguousarray, np.asfortranarray]))(q)


@st.composite
def tucker(draw, shape, full_rank=False):
    """(core, factors) for an input of `shape`: per mode None or an orthonormal factor of random
    rank 1..I_n (square with `full_rank`); the core in a drawn memory layout."""
    factors = []
    for size in shape:
        rank = draw(st.one_of(st.none(), st.just(size) if full_rank else st.integers(1, size)))
        factors.append(None if rank is None else draw(orthonormal(size, rank)))
    core_shape = [size if u is None else u.shape[1] for size, u in zip(shape, factors)]
    return draw(arrays(core_shape)), factors


def conv_output_shape(x_shape, weight_shape, conv):
    out_hw = map(output_size, x_shape[2:], weight_shape[2:], conv["stride"], conv["padding"], conv["dilation"])
    return (x_shape[0], weight_shape[0], *out_hw)


def exact_conv_grad(x, weight_shape, grad_output, conv):
    """The engine's dW of conv2d at input x (forward + backward)."""
    weight = Tensor(np.zeros(weight_shape, x.dtype), requires_grad=True)
    F.conv2d(Tensor(x), weight, **conv).backward(grad_output)
    return weight.grad


def exact_linear_grad(x, out_features, grad_output):
    weight = Tensor(np.zeros((out_features, x.shape[-1]), x.dtype), requires_grad=True)
    F.linear(Tensor(x), weight).backward(grad_output)
    return weight.grad


@st.composite
def linear_case(draw):
    """(input shape (B, F) or (B, L, F), out features)."""
    lead = draw(st.lists(st.integers(1, 5), min_size=1, max_size=2))
    return (*lead, draw(st.integers(1, 6))), draw(st.integers(1, 5))


# --- conv2d -------------------------------------------------------------------------------


@settings(max_examples=150)
@given(st.data())
def test_conv_equals_exact_grad_at_reconstruction(data):
    x_shape, weight_shape, conv = data.draw(CONV_CASES)
    core, factors = data.draw(tucker(x_shape))
    grad_output = data.draw(arrays(conv_output_shape(x_shape, weight_shape, conv)))
    got = conv2d_weight_grad(core, factors, grad_output, weight_shape, **conv)
    expected = exact_conv_grad(tucker_product(core, factors), weight_shape, grad_output, conv)
    assert relative_error(got, expected) < 1e-9


@settings(max_examples=150)
@given(st.data())
def test_conv_full_rank_orthogonal_factors_give_exact_grad(data):
    x_shape, weight_shape, conv = data.draw(CONV_CASES)
    x = data.draw(arrays(x_shape))
    _, factors = data.draw(tucker(x_shape, full_rank=True))
    grad_output = data.draw(arrays(conv_output_shape(x_shape, weight_shape, conv)))
    got = conv2d_weight_grad(tucker_product(x, factors, expand=False), factors, grad_output, weight_shape, **conv)
    assert relative_error(got, exact_conv_grad(x, weight_shape, grad_output, conv)) < 1e-9


@given(st.data())
def test_conv_float32_agrees_with_float64(data):
    x_shape, weight_shape, conv = data.draw(CONV_CASES)
    core, factors = data.draw(tucker(x_shape))
    grad_output = data.draw(arrays(conv_output_shape(x_shape, weight_shape, conv)))
    grads = [
        conv2d_weight_grad(*cast(dtype, core, factors, grad_output), weight_shape, **conv)
        for dtype in (np.float32, np.float64)
    ]
    assert grads[0].dtype == np.float32
    assert relative_error(grads[0].astype(np.float64), grads[1]) < 1e-4


LAYOUTS = {
    "fortran": lambda a: np.ascontiguousarray(a.T).T,
    "reversed": lambda a: np.ascontiguousarray(a[..., ::-1])[..., ::-1],
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_do_not_change_the_result(layout):
    """Non-contiguous core, factors and grad_output give the dW of their contiguous copies."""
    view, rng = LAYOUTS[layout], np.random.default_rng(0)
    core = rng.standard_normal((3, 4, 2, 5))
    factors = [np.linalg.qr(rng.standard_normal((n, k)))[0] for n, k in zip((4, 6, 7, 6), core.shape)]
    grad_output = rng.standard_normal((4, 6, 4, 3))
    conv = dict(stride=2, padding=1, groups=2)
    expected = conv2d_weight_grad(core, factors, grad_output, (6, 3, 3, 3), **conv)
    got = conv2d_weight_grad(view(core), [view(u) for u in factors], view(grad_output), (6, 3, 3, 3), **conv)
    assert not view(core).flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)

    core = rng.standard_normal((3, 2, 5))
    factors = [np.linalg.qr(rng.standard_normal((n, k)))[0] for n, k in zip((4, 5, 7), core.shape)]
    grad_output = rng.standard_normal((4, 5, 6))
    expected = linear_weight_grad(core, factors, grad_output)
    got = linear_weight_grad(view(core), [view(u) for u in factors], view(grad_output))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_conv_never_forms_an_activation_sized_array():
    """With small batch and channel ranks the peak allocation stays well below numel(X)."""
    rng = np.random.default_rng(1)
    x_shape, weight_shape = (64, 64, 16, 16), (64, 64, 3, 3)
    core = rng.standard_normal((4, 4, 16, 16))
    factors = [np.linalg.qr(rng.standard_normal((n, 4)))[0] for n in x_shape[:2]] + [None, None]
    grad_output = rng.standard_normal((64, 64, 16, 16))
    tracemalloc.start()
    conv2d_weight_grad(core, factors, grad_output, weight_shape, padding=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < np.prod(x_shape) * 8 / 4


# --- linear -------------------------------------------------------------------------------


@settings(max_examples=150)
@given(st.data())
def test_linear_equals_exact_grad_at_reconstruction(data):
    x_shape, out_features = data.draw(linear_case())
    core, factors = data.draw(tucker(x_shape))
    grad_output = data.draw(arrays((*x_shape[:-1], out_features)))
    got = linear_weight_grad(core, factors, grad_output)
    expected = exact_linear_grad(tucker_product(core, factors), out_features, grad_output)
    assert relative_error(got, expected) < 1e-9


@settings(max_examples=150)
@given(st.data())
def test_linear_full_rank_orthogonal_factors_give_exact_grad(data):
    x_shape, out_features = data.draw(linear_case())
    x = data.draw(arrays(x_shape))
    _, factors = data.draw(tucker(x_shape, full_rank=True))
    grad_output = data.draw(arrays((*x_shape[:-1], out_features)))
    got = linear_weight_grad(tucker_product(x, factors, expand=False), factors, grad_output)
    assert relative_error(got, exact_linear_grad(x, out_features, grad_output)) < 1e-9


@given(st.data())
def test_linear_float32_agrees_with_float64(data):
    x_shape, out_features = data.draw(linear_case())
    core, factors = data.draw(tucker(x_shape))
    grad_output = data.draw(arrays((*x_shape[:-1], out_features)))
    grads = [linear_weight_grad(*cast(dtype, core, factors, grad_output)) for dtype in (np.float32, np.float64)]
    assert grads[0].dtype == np.float32
    assert relative_error(grads[0].astype(np.float64), grads[1]) < 1e-4


# --- errors -------------------------------------------------------------------------------


def conv_arguments(**changes):
    """A valid conv2d_weight_grad call (input (2, 4, 5, 5), ranks (2, 3, 4, -), 3x3 kernel) with `changes`."""
    rng = np.random.default_rng(2)
    factors = [np.linalg.qr(rng.standard_normal((n, k)))[0] for n, k in [(2, 2), (4, 3), (5, 4)]] + [None]
    args = dict(
        core=rng.standard_normal((2, 3, 4, 5)), factors=factors, grad_output=rng.standard_normal((2, 6, 3, 3)),
        weight_shape=(6, 4, 3, 3), stride=1, padding=0, dilation=1, groups=1,
    )
    return {**args, **changes}


def replaced(factors, index, value):
    return [value if n == index else u for n, u in enumerate(factors)]


FACTORS = conv_arguments()["factors"]
CONV_ERRORS = [  # (changes to the valid call, error, message)
    (dict(core=np.zeros((2, 3, 4))), ValueError, r"core must have 4 dims"),
    (dict(factors=FACTORS[:3]), ValueError, r"factors must hold 4 entries"),
    (dict(factors=replaced(FACTORS, 1, np.zeros((4, 2)))), ValueError,
     r"factors\[1\] has shape \(4, 2\) but core.shape\[1\] is 3"),
    (dict(factors=replaced(FACTORS, 1, np.zeros((5, 3)))), ValueError,
     r"factors\[1\] has shape \(5, 3\) but the input has 4 channels"),
    (dict(factors=replaced(FACTORS, 0, np.zeros((3, 2)))), ValueError,
     r"factors\[0\] has shape \(3, 2\) but grad_output.shape\[0\] is 2"),
    (dict(factors=replaced(FACTORS, 2, np.zeros((3, 4)))), ValueError, r"factors\[2\] has shape \(3, 4\): its rank 4 is larger than its dimension"),
    (dict(factors=replaced(FACTORS, 2, np.zeros(4))), ValueError, r"factors\[2\] has shape \(4,\)"),
    (dict(core=np.zeros((2, 3, 4, 4))), ValueError,
     r"grad_output has shape \(2, 6, 3, 3\) but conv2d of an input of shape \(2, 4, 5, 4\)"),
    (dict(grad_output=np.zeros((2, 6, 4, 4))), ValueError, r"grad_output has shape \(2, 6, 4, 4\) .* gives \(2, 6, 3, 3\)"),
    (dict(grad_output=np.zeros((2, 5, 3, 3))), ValueError, r"grad_output has shape \(2, 5, 3, 3\)"),
    (dict(grad_output=np.zeros((2, 6, 9))), ValueError, r"grad_output must have 4 dims"),
    (dict(weight_shape=(6, 4, 3)), ValueError, r"weight must have shape"),
    (dict(weight_shape=(6, 2, 3, 3), groups=4), ValueError, r"groups=4"),
    (dict(groups=0), ValueError, r"groups must be a positive int"),
    (dict(stride=0), ValueError, r"stride"),
    (dict(padding=-1), ValueError, r"padding"),
    (dict(weight_shape=(6, 4, 3, 7)), ValueError, r"smaller than the dilated kernel"),
    (dict(grad_output=np.zeros((2, 6, 3, 3), np.float32)), TypeError, r"grad_output has dtype float32 but core has float64"),
    (dict(factors=replaced(FACTORS, 1, FACTORS[1].astype(np.float32))), TypeError, r"factors\[1\] has dtype float32"),
    (dict(core=np.zeros((2, 3, 4, 5), np.int64)), TypeError, r"core must be a float32 or float64 ndarray"),
    (dict(grad_output=[[0.0]]), TypeError, r"grad_output must be a float32 or float64 ndarray"),
]


@pytest.mark.parametrize("changes, error, message", CONV_ERRORS)
def test_conv_errors(changes, error, message):
    conv2d_weight_grad(**conv_arguments())  # the unchanged call is valid
    with pytest.raises(error, match=message):
        conv2d_weight_grad(**conv_arguments(**changes))


def linear_arguments(**changes):
    """A valid linear_weight_grad call (input (3, 4, 5), ranks (2, -, 4)) with `changes`."""
    args = dict(core=np.zeros((2, 4, 4)), factors=[np.eye(3)[:, :2], None, np.eye(5)[:, :4]], grad_output=np.zeros((3, 4, 2)))
    return {**args, **changes}


LINEAR_FACTORS = linear_arguments()["factors"]
LINEAR_ERRORS = [
    (dict(core=np.zeros((2, 4, 4, 1)), factors=LINEAR_FACTORS + [None], grad_output=np.zeros((3, 4, 4, 2))),
     ValueError, r"core must have 2 or 3 dims"),
    (dict(factors=LINEAR_FACTORS[:2]), ValueError, r"factors must hold 3 entries"),
    (dict(grad_output=np.zeros((3, 2))), ValueError, r"grad_output must have 3 dims"),
    (dict(grad_output=np.zeros((2, 4, 2))), ValueError, r"factors\[0\] has shape \(3, 2\) but grad_output.shape\[0\] is 2"),
    (dict(grad_output=np.zeros((3, 5, 2))), ValueError,
     r"core.shape\[1\] is 4 \(factors\[1\] is None\) but grad_output.shape\[1\] is 5"),
    (dict(core=np.zeros((2, 4, 3))), ValueError, r"factors\[2\] has shape \(5, 4\) but core.shape\[2\] is 3"),
    (dict(core=np.zeros((2, 4, 6)), factors=[None, None, np.zeros((5, 6))]), ValueError, r"factors\[2\] has shape \(5, 6\): its rank 6 is larger than its dimension"),
    (dict(core=np.zeros((2, 4, 4), np.float32), grad_output=np.zeros((3, 4, 2), np.float32)), TypeError,
     r"factors\[0\] has dtype float64"),
]


@pytest.mark.parametrize("changes, error, message", LINEAR_ERRORS)
def test_linear_errors(changes, error, message):
    linear_weight_grad(**linear_arguments())  # the unchanged call is valid
    with pytest.raises(error, match=message):
        linear_weight_grad(**linear_arguments(**changes))


# --- flops --------------------------------------------------------------------------------


def test_conv_flops_by_hand():
    """Input (8, 16, 10, 10), ranks (2, 4, 5, None), weight (32, 16, 3, 3), padding 1 -> 10 x 10 out."""
    counts = conv2d_flops((8, 16, 10, 10), (2, 4, 5, None), (32, 16, 3, 3), padding=1)
    project = 2 * 8 * 16 * 100 * 2 + 2 * 2 * 16 * 100 * 4 + 2 * 2 * 4 * 100 * 5
    z1 = 2 * 8 * 32 * 100 * 2
    z3 = 2 * 2 * 4 * 5 * 10 * 10  # U_H expands 5 -> 10; the W mode is not compressed
    z4 = 2 * 32 * 4 * 9 * 2 * 100
    dw = 2 * 32 * 9 * 4 * 16
    assert counts == dict(project=project, compressed=z1 + z3 + z4 + dw, dense=2 * 32 * 16 * 9 * 8 * 100)


def test_grouped_conv_flops_without_channel_factor():
    counts = conv2d_flops((4, 6, 5, 5), (2, None, None, None), (6, 2, 3, 3), stride=2, groups=3)
    z1, z4 = 2 * 4 * 6 * 4 * 2, 2 * 6 * 2 * 9 * 2 * 4
    assert counts == dict(project=2 * 4 * 6 * 25 * 2, compressed=z1 + z4, dense=2 * 6 * 2 * 9 * 4 * 4)


def test_linear_flops_by_hand():
    assert linear_flops((8, 20), (3, 5), (10, 20)) == dict(
        project=2 * 8 * 20 * 5 + 2 * 8 * 5 * 3,  # F shrinks most (20 -> 5), so it goes first
        compressed=2 * 8 * 10 * 3 + 2 * 10 * 3 * 5 + 2 * 10 * 5 * 20,
        dense=2 * 10 * 20 * 8,
    )
    assert linear_flops((8, 6, 20), (3, 2, None), (10, 20)) == dict(
        project=2 * 8 * 6 * 20 * 2 + 2 * 8 * 2 * 20 * 3,
        compressed=2 * 8 * 6 * 10 * 3 + 2 * 3 * 6 * 10 * 2 + 2 * 10 * 3 * 2 * 20,
        dense=2 * 10 * 20 * 48,
    )


@given(st.data())
def test_uncompressed_flops_equal_dense(data):
    x_shape, weight_shape, conv = data.draw(CONV_CASES)
    counts = conv2d_flops(x_shape, [None] * 4, weight_shape, **conv)
    assert counts["compressed"] == counts["dense"] and counts["project"] == 0
    x_shape, out_features = data.draw(linear_case())
    counts = linear_flops(x_shape, [None] * len(x_shape), (out_features, x_shape[-1]))
    assert counts["compressed"] == counts["dense"] and counts["project"] == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: conv2d_flops((2, 4, 5, 5), (1, 2, 3), (6, 4, 3, 3)), r"ranks must hold one entry per mode"),
        (lambda: conv2d_flops((2, 4, 5, 5), (1, 5, 3, None), (6, 4, 3, 3)), r"ranks\[1\] must be None or in 1..4"),
        (lambda: conv2d_flops((2, 4, 5, 5), (1, 2, 3, None), (6, 3, 3, 3)), r"input channels 4"),
        (lambda: linear_flops((2, 7), (1, 3), (6, 5)), r"does not end in weight_shape\[1\] = 5"),
    ],
)
def test_flops_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
