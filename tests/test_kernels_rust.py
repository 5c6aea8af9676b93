"""The Rust kernels of lance_ref._core against the NumPy reference (specs/kernels.md): equal for
the copies, within 1e-5 (float32) / 1e-12 (float64) norm-wise relative error for the products,
on drawn shapes (sizes 1 and odd sizes that exercise SIMD tails), layouts and dtypes, on every
instruction set this CPU supports."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lance_ref.kernels import reference

core = pytest.importorskip("lance_ref._core")

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
SIDES = st.sampled_from([1, 2, 3, 5, 7, 9, 17, 33])


@st.composite
def laid_out(draw, shape, dtype):
    """An array of `shape` stored in a drawn axis order and viewed with drawn steps (negative
    steps reverse an axis): transposed, sliced and reversed inputs."""
    order = draw(st.permutations(range(len(shape))))
    steps = [draw(st.sampled_from([1, 1, 2, -1])) for _ in shape]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    store = rng.standard_normal([shape[a] * abs(steps[a]) for a in order]).astype(dtype)
    x = store.transpose(np.argsort(order))[tuple(slice(None, None, s) for s in steps)]
    assert x.shape == tuple(shape)
    return x


@st.composite
def tensor(draw, dtype=None, large=False):
    dtype = dtype or draw(st.sampled_from([np.float32, np.float64]))
    shape = [draw(SIDES) for _ in range(4)]
    if large and draw(st.booleans()):
        shape[draw(st.integers(0, 3))] = draw(st.sampled_from([65, 130]))
    return draw(laid_out(shape, dtype))


@st.composite
def factors_for(draw, shape, dtype, side):
    """Per mode None or a (I_n, k_n) factor; `side` 0 matches I_n to `shape`, 1 matches k_n."""
    factors = []
    for size in shape:
        if draw(st.booleans()):
            factors.append(None)
        elif side == 0:
            factors.append(draw(laid_out((size, draw(st.integers(1, size))), dtype)))
        else:
            factors.append(draw(laid_out((draw(st.integers(size, size + 9)), size), dtype)))
    return factors


def assert_close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
    assert np.linalg.norm(got - want) <= TOL[want.dtype] * max(np.linalg.norm(want), 1e-30)


@settings(max_examples=60, deadline=None)
@given(x=tensor(large=True), mode=st.integers(0, 3))
def test_unfold_fold_and_gram(x, mode):
    unfolded = core.unfold(x, mode)
    np.testing.assert_array_equal(unfolded, reference.unfold(x, mode), strict=True)
    m = unfolded.T.copy().T  # the same values in Fortran order
    np.testing.assert_array_equal(core.fold(m, mode, x.shape), reference.fold(m, mode, x.shape), strict=True)
    g = core.gram(x, mode)
    assert_close(g, reference.gram(x, mode))
    np.testing.assert_array_equal(g, g.T)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), mode=st.integers(0, 3))
def test_mode_product(data, mode):
    x = data.draw(tensor())
    matrix = data.draw(laid_out((data.draw(SIDES), x.shape[mode]), x.dtype))
    assert_close(core.mode_product(x, matrix, mode), reference.mode_product(x, matrix, mode))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_tucker_project_and_reconstruct(data):
    x = data.draw(tensor(large=True))
    factors = data.draw(factors_for(x.shape, x.dtype, side=0))
    assert_close(core.tucker_project(x, factors), reference.tucker_project(x, factors))
    back = data.draw(factors_for(x.shape, x.dtype, side=1))
    assert_close(core.tucker_reconstruct(x, back), reference.tucker_reconstruct(x, back))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_im2col(data):
    groups = data.draw(st.sampled_from([1, 1, 2, 3]))
    x = data.draw(laid_out((data.draw(st.integers(1, 3)), groups * data.draw(st.integers(1, 3)), *[data.draw(SIDES) for _ in range(2)]), data.draw(st.sampled_from([np.float32, np.float64]))))
    pairs = [tuple(data.draw(st.integers(low, 3)) for _ in range(2)) for low in (1, 1, 0, 1)]
    kernel, stride, padding, dilation = pairs
    if any(s + 2 * p < d * (k - 1) + 1 for s, k, p, d in zip(x.shape[2:], kernel, padding, dilation)):
        with pytest.raises(ValueError):
            core.im2col(x, kernel, stride, padding, dilation, groups)
        return
    np.testing.assert_array_equal(
        core.im2col(x, kernel, stride, padding, dilation, groups),
        reference.im2col(x, kernel, stride, padding, dilation, groups),
        strict=True,
    )


def test_errors_name_the_argument():
    x = np.zeros((2, 3, 4, 5))
    u = np.zeros((3, 2))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        core.tucker_project(x.astype(np.float16), [None] * 4)
    with pytest.raises(TypeError, match=r"factors\[1\] has dtype float32"):
        core.tucker_project(x, [None, u.astype(np.float32), None, None])
    with pytest.raises(ValueError, match=r"factors\[1\] has shape \(3, 4\): its rank 4"):
        core.tucker_project(x, [None, np.zeros((3, 4)), None, None])
    with pytest.raises(ValueError, match=r"factors\[2\] has shape \(3, 2\) but mode 2 of x has size 4"):
        core.tucker_project(x, [None, None, u, None])
    with pytest.raises(ValueError, match=r"factors\[0\] must be a 2-D array"):
        core.tucker_reconstruct(x, [np.zeros(3), None, None, None])
    with pytest.raises(ValueError, match="factors must hold one entry per mode"):
        core.tucker_project(x, [None] * 3)
    with pytest.raises(ValueError, match="matrix has shape"):
        core.mode_product(x, u, 2)
    with pytest.raises(ValueError, match="mode must satisfy"):
        core.gram(x, 4)
    with pytest.raises(ValueError, match="m must have shape"):
        core.fold(np.zeros((3, 5)), 1, x.shape)
    with pytest.raises(ValueError, match="groups must divide"):
        core.im2col(x, (1, 1), (1, 1), (0, 0), (1, 1), 2)
    with pytest.raises(ValueError, match=r"stride\[0\] must be an int in 1"):
        core.im2col(x, (1, 1), (0, 1), (0, 0), (1, 1), 1)


def test_zero_sizes_and_overflowing_shapes_are_clean():
    empty = np.zeros((2, 0, 3, 1))
    np.testing.assert_array_equal(core.unfold(empty, 1), reference.unfold(empty, 1))
    np.testing.assert_array_equal(core.gram(empty, 0), reference.gram(empty, 0))
    huge = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(2**29, 2**30, 1, 1), strides=(0, 0, 0, 0))
    with pytest.raises((ValueError, MemoryError)):
        core.unfold(huge, 0)
    with pytest.raises((ValueError, MemoryError)):
        core.gram(huge, 0)


def test_threads_setting():
    threads = core.num_threads()
    try:
        core.set_num_threads(1)
        assert core.num_threads() == 1
        x = np.random.default_rng(0).standard_normal((64, 8, 9, 9))
        assert_close(core.gram(x, 1), reference.gram(x, 1))
    finally:
        core.set_num_threads(threads)
    with pytest.raises((ValueError, OverflowError)):
        core.set_num_threads(0)


CHECK_EVERY_KERNEL = """
import numpy as np, lance_ref._core as core
from lance_ref.kernels import reference as R
rng = np.random.default_rng(1)
for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
    x = rng.standard_normal((9, 17, 5, 7)).astype(dtype)[:, ::-1]
    u = [np.linalg.qr(rng.standard_normal((n, k)))[0].astype(dtype) for n, k in zip(x.shape, (3, 7, 5, 2))]
    def close(a, b):
        assert np.linalg.norm(a - b) <= tol * np.linalg.norm(b), (a.dtype, np.linalg.norm(a - b))
    core_ = core.tucker_project(x, u)
    close(core_, R.tucker_project(x, u))
    close(core.tucker_reconstruct(core_, u), R.tucker_reconstruct(core_, u))
    for mode in range(4):
        close(core.gram(x, mode), R.gram(x, mode))
        close(core.mode_product(x, u[mode].T, mode), R.mode_product(x, u[mode].T, mode))
print(core.simd_isa())
"""


@pytest.mark.parametrize("isa", core.available_isas())
def test_every_instruction_set_of_this_cpu(isa):
    env = {**os.environ, "LANCE_CORE_ISA": isa}
    result = subprocess.run([sys.executable, "-c", CHECK_EVERY_KERNEL], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == isa


def test_unknown_instruction_set_is_a_clear_error():
    env = {**os.environ, "LANCE_CORE_ISA": "sse9"}
    code = "import lance_ref._core as c; c.simd_isa()"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "LANCE_CORE_ISA must be one of" in result.stderr
