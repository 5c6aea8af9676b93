"""Reference kernels fold, mode_product, tucker_project, tucker_reconstruct and gram
(specs/kernels.md): identities on any layout, float32 and float64, and their errors."""

import string

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lance_ref import kernels
from lance_ref.kernels import reference
from strategies import arrays

DTYPES = (np.float32, np.float64)
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

shapes = st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple)
dtypes = st.sampled_from(DTYPES)


def assert_close(got, want, scale, dtype):
    """`got` has `dtype` and |got - want| <= tol(dtype) * scale elementwise; `scale` bounds the
    magnitude of the terms summed (for a contraction: the same contraction of absolute values)."""
    assert got.shape == want.shape and got.dtype == dtype
    tol = TOL[got.dtype]
    excess = np.abs(got.astype(np.float64) - want) - tol * scale
    assert excess.max(initial=0) <= 0, f"max error {np.abs(got - want).max()}"


def assert_fresh(out, *inputs):
    assert out.flags.c_contiguous
    assert not any(np.shares_memory(out, a) for a in inputs)


@st.composite
def tensor_and_factors(draw, square=False):
    """x of a drawn shape, dtype and layout, and per mode None or a factor (I_n, k_n) with
    1 <= k_n <= I_n (square orthogonal when `square`)."""
    shape, dtype = draw(shapes), draw(dtypes)
    x = draw(arrays(shape, dtype))
    factors = []
    for n, size in enumerate(shape):
        if not draw(st.booleans()):
            factors.append(None)
        elif square:
            seed = draw(st.integers(0, 2**32 - 1))
            q = np.linalg.qr(np.random.default_rng(seed).standard_normal((size, size)))[0]
            factors.append(q.astype(dtype))
        else:
            factors.append(draw(arrays((size, draw(st.integers(1, size))), dtype)))
    return x, factors


def einsum_tucker(t, factors, transpose):
    """t x_n U_n^T (transpose) or t x_n U_n over the given factors, by one einsum in float64,
    and the same with absolute values (the rounding scale)."""
    letters = iter(string.ascii_letters)
    t_index = [next(letters) for _ in range(t.ndim)]
    out_index, operands = list(t_index), []
    for n, u in enumerate(factors):
        if u is not None:
            new = next(letters)
            operands += [u, [t_index[n], new] if transpose else [new, t_index[n]]]
            out_index[n] = new
    spec = (",".join("".join(i) for i in [t_index] + operands[1::2])) + "->" + "".join(out_index)

    def run(fn):
        return np.einsum(spec, fn(t), *[fn(u) for u in operands[::2]])

    return run(lambda a: a.astype(np.float64)), run(lambda a: np.abs(a.astype(np.float64)))


# --- fold ---


@given(data=st.data(), shape=shapes, dtype=dtypes)
def test_fold_inverts_unfold(data, shape, dtype):
    x = data.draw(arrays(shape, dtype))
    for mode in range(x.ndim):
        m = reference.unfold(x, mode)
        out = reference.fold(m, mode, x.shape)
        np.testing.assert_array_equal(out, x, strict=True)
        assert_fresh(out, m)
        np.testing.assert_array_equal(reference.unfold(out, mode), m)


def test_fold_small_example_by_hand():
    m = np.array([[0, 1, 4, 5], [2, 3, 6, 7]], dtype=np.float64)
    expected = np.arange(8, dtype=np.float64).reshape(2, 2, 1, 2)
    np.testing.assert_array_equal(reference.fold(m, 1, (2, 2, 1, 2)), expected)


def test_fold_errors():
    with pytest.raises(TypeError, match="m must be a float32 or float64"):
        reference.fold(np.zeros((2, 3), dtype=np.int32), 0, (2, 3))
    with pytest.raises(ValueError, match="mode"):
        reference.fold(np.zeros((2, 3)), 2, (2, 3))
    with pytest.raises(ValueError, match=r"m must have shape \(3, 2\)"):
        reference.fold(np.zeros((2, 3)), 1, (2, 3))


# --- mode_product ---


@given(data=st.data(), shape=shapes, dtype=dtypes, rows=st.integers(1, 7))
def test_mode_product_is_unfold_matmul_fold(data, shape, dtype, rows):
    x = data.draw(arrays(shape, dtype))
    mode = data.draw(st.integers(0, x.ndim - 1))
    matrix = data.draw(arrays((rows, shape[mode]), dtype))
    out = reference.mode_product(x, matrix, mode)
    new_shape = shape[:mode] + (rows,) + shape[mode + 1 :]
    unfolded = reference.unfold(x.astype(np.float64), mode)
    want = reference.fold(matrix.astype(np.float64) @ unfolded, mode, new_shape)
    scale = reference.fold(np.abs(matrix.astype(np.float64)) @ np.abs(unfolded), mode, new_shape)
    assert_close(out, want, scale, x.dtype)
    assert_fresh(out, x, matrix)


def test_mode_product_torch_convention_by_hand():
    x = np.arange(6, dtype=np.float64).reshape(1, 2, 3)
    m = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # (J=2, I_2=3)
    np.testing.assert_array_equal(reference.mode_product(x, m, 2), [[[0.0, 3.0], [3.0, 12.0]]])


def test_mode_product_errors():
    x = np.zeros((2, 3, 4))
    with pytest.raises(TypeError, match="matrix has dtype float32 but x has float64"):
        reference.mode_product(x, np.zeros((5, 3), dtype=np.float32), 1)
    with pytest.raises(TypeError, match="x must be"):
        reference.mode_product(x.astype(np.int64), np.zeros((5, 3)), 1)
    with pytest.raises(TypeError, match="matrix must be a numpy.ndarray"):
        reference.mode_product(x, [[1.0, 2.0, 3.0]], 1)
    with pytest.raises(ValueError, match="mode"):
        reference.mode_product(x, np.zeros((5, 3)), 3)
    with pytest.raises(ValueError, match="matrix must be 2-D"):
        reference.mode_product(x, np.zeros(3), 1)
    with pytest.raises(ValueError, match=r"matrix has shape \(5, 4\) but mode 1 of x has size 3"):
        reference.mode_product(x, np.zeros((5, 4)), 1)


# --- tucker_project and tucker_reconstruct ---


@given(case=tensor_and_factors())
def test_tucker_project_equals_einsum(case):
    x, factors = case
    core = reference.tucker_project(x, factors)
    assert_close(core, *einsum_tucker(x, factors, transpose=True), x.dtype)
    assert core.shape == tuple(n if u is None else u.shape[1] for n, u in zip(x.shape, factors))
    assert_fresh(core, x, *[u for u in factors if u is not None])


@given(case=tensor_and_factors(), data=st.data())
def test_tucker_reconstruct_equals_einsum(case, data):
    x, factors = case
    core_shape = tuple(n if u is None else u.shape[1] for n, u in zip(x.shape, factors))
    core = data.draw(arrays(core_shape, x.dtype))
    out = reference.tucker_reconstruct(core, factors)
    assert_close(out, *einsum_tucker(core, factors, transpose=False), x.dtype)
    assert out.shape == x.shape
    assert_fresh(out, core)


@given(case=tensor_and_factors(square=True))
def test_reconstruct_of_project_with_orthogonal_bases_is_identity(case):
    x, factors = case
    out = reference.tucker_reconstruct(reference.tucker_project(x, factors), factors)
    assert out.dtype == x.dtype
    assert np.linalg.norm(out - x) <= TOL[x.dtype] * np.linalg.norm(x)


def test_tucker_without_factors_copies():
    x = np.ones((2, 3))
    for fn in (reference.tucker_project, reference.tucker_reconstruct):
        out = fn(x, [None, None])
        np.testing.assert_array_equal(out, x)
        assert_fresh(out, x)


def test_tucker_contraction_order_does_not_change_the_result():
    # Mode 1 shrinks most, so it goes first; the result equals mode products in any order.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 5))
    factors = [rng.standard_normal((4, 3)), rng.standard_normal((6, 1)), None]
    core = reference.tucker_project(x, factors)
    by_hand = reference.mode_product(reference.mode_product(x, factors[0].T, 0), factors[1].T, 1)
    np.testing.assert_allclose(core, by_hand, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [reference.tucker_project, reference.tucker_reconstruct])
def test_tucker_errors(fn):
    x = np.zeros((4, 5, 6))
    name = "x" if fn is reference.tucker_project else "core"
    with pytest.raises(TypeError, match=f"{name} must be a float32 or float64"):
        fn(x.astype(np.int32), [None] * 3)
    with pytest.raises(ValueError, match=rf"factors must hold one entry per mode of {name} \(3\), got 2"):
        fn(x, [None, None])
    with pytest.raises(TypeError, match=rf"factors\[1\] has dtype float32 but {name} has float64"):
        fn(x, [None, np.zeros((5, 2), dtype=np.float32), None])
    with pytest.raises(TypeError, match=r"factors\[0\] must be a numpy.ndarray"):
        fn(x, [[[1.0]], None, None])
    with pytest.raises(ValueError, match=r"factors\[0\] must be 2-D"):
        fn(x, [np.zeros(4), None, None])
    with pytest.raises(ValueError, match=r"factors\[2\] has shape \(6, 7\): its rank 7 must be in 1..6"):
        fn(x, [None, None, np.zeros((6, 7))])


def test_tucker_factor_size_mismatch_messages():
    x = np.zeros((4, 5, 6))
    with pytest.raises(ValueError, match=r"factors\[2\] has shape \(5, 3\) but mode 2 of x has size 6"):
        reference.tucker_project(x, [None, None, np.zeros((5, 3))])
    with pytest.raises(ValueError, match=r"factors\[2\] has shape \(9, 3\) but mode 2 of core has size 6"):
        reference.tucker_reconstruct(x, [None, None, np.zeros((9, 3))])


# --- gram ---


@given(data=st.data(), shape=shapes, dtype=dtypes)
def test_gram_is_the_unfolding_gram_symmetric_psd(data, shape, dtype):
    x = data.draw(arrays(shape, dtype))
    for mode in range(x.ndim):
        g = reference.gram(x, mode)
        u = reference.unfold(x, mode).astype(np.float64)
        assert_close(g, u @ u.T, np.abs(u) @ np.abs(u).T, x.dtype)
        np.testing.assert_array_equal(g, g.T)
        assert np.linalg.eigvalsh(g.astype(np.float64)).min() >= -TOL[g.dtype] * max(np.trace(g), 1)
        assert_fresh(g, x)


def test_gram_errors():
    with pytest.raises(TypeError, match="x must be"):
        reference.gram(np.zeros((2, 2), dtype=np.float16), 0)
    with pytest.raises(ValueError, match="mode"):
        reference.gram(np.zeros((2, 2)), -1)


# --- dispatch ---


def test_dispatch_reaches_the_reference_for_every_kernel():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))[:, ::-1]
    factors = [None, rng.standard_normal((3, 2)), None, rng.standard_normal((5, 5))]
    core = reference.tucker_project(x, factors)
    calls = {
        "fold": (reference.unfold(x, 2), 2, x.shape),
        "mode_product": (x, rng.standard_normal((7, 4)), 2),
        "tucker_project": (x, factors),
        "tucker_reconstruct": (core, factors),
        "gram": (x, 3),
    }
    for name, args in calls.items():
        got, want = getattr(kernels, name)(*args), getattr(reference, name)(*args)
        np.testing.assert_array_equal(got, want, err_msg=name)
