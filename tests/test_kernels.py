"""Kernels (specs/kernels.md): the NumPy reference by hand, the dispatch and the backend choice
(the Rust kernels against the reference: tests/test_kernels_rust.py)."""

import importlib.util
import os

import numpy as np
import pytest

import lance_ref
from lance_ref import kernels
from lance_ref.kernels import BACKEND_ENV, reference
from helpers import run_python

RUST_BUILT = importlib.util.find_spec("lance_ref._core") is not None
AUTO_BACKEND = "rust" if RUST_BUILT else "numpy"


@pytest.fixture(scope="module")
def core():
    return pytest.importorskip("lance_ref._core")


def assert_same(got, want, err_msg=""):
    assert got.flags.c_contiguous, err_msg
    np.testing.assert_array_equal(got, want, err_msg=err_msg, strict=True)


# --- the NumPy reference ---


def test_reference_small_example_by_hand():
    x = np.arange(8, dtype=np.float64).reshape(2, 2, 1, 2)
    expected = np.array([[0, 1, 4, 5], [2, 3, 6, 7]], dtype=np.float64)
    assert_same(reference.unfold(x, 1), expected)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2, 2)])
def test_reference_any_ndim_and_a_fresh_array(shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    for mode in range(len(shape)):
        out = reference.unfold(x, mode)
        assert out.shape == (shape[mode], x.size // shape[mode])
        assert_same(out, np.moveaxis(x, mode, 0).reshape(shape[mode], -1))
        assert not np.shares_memory(out, x)


def test_reference_errors():
    with pytest.raises(TypeError, match="x"):
        reference.unfold(np.zeros((2, 2), dtype=np.int64), 0)
    with pytest.raises(TypeError, match="x"):
        reference.unfold([[1.0, 2.0]], 0)
    for mode in (2, -1):
        with pytest.raises(ValueError, match="mode"):
            reference.unfold(np.zeros((2, 2)), mode)


# --- the extension ---


def test_rust_module_version(core):
    assert core.__version__ == lance_ref.__version__


# --- dispatch and backend choice ---


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4, 2)])
def test_dispatching_unfold_equals_reference(shape):
    x = np.random.default_rng(0).standard_normal(shape)[..., ::-1]
    for mode in range(len(shape)):
        assert_same(kernels.unfold(x, mode), reference.unfold(x, mode))
    with pytest.raises(TypeError, match="x"):
        kernels.unfold(x.astype(np.int32), 0)


def backend_in_subprocess(value):
    """Run `kernels.backend()` in a fresh interpreter with LANCE_REF_BACKEND=value (None: unset)."""
    changes = {} if value is None else {BACKEND_ENV: value}
    return run_python("from lance_ref import kernels; print(kernels.backend())", changes, unset=(BACKEND_ENV,))


def test_backend_matches_this_process():
    forced_numpy = os.environ.get(BACKEND_ENV) == "numpy"
    assert kernels.backend() == ("numpy" if forced_numpy else AUTO_BACKEND)


@pytest.mark.parametrize(
    "value, expected", [(None, AUTO_BACKEND), ("", AUTO_BACKEND), ("numpy", "numpy")]
)
def test_backend_env_choice(value, expected):
    result = backend_in_subprocess(value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_backend_env_rust():
    result = backend_in_subprocess("rust")
    if RUST_BUILT:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "rust"
    else:
        assert result.returncode != 0
        assert "ImportError" in result.stderr and "lance_ref._core" in result.stderr


def test_use_backend_switches_for_a_block():
    before = kernels.backend()
    with kernels.use_backend("numpy"):
        assert kernels.backend() == "numpy"
    assert kernels.backend() == before
    if RUST_BUILT:
        with kernels.use_backend("rust"):
            assert kernels.backend() == "rust"
    with pytest.raises(ValueError, match="backend must be 'rust' or 'numpy'"):
        with kernels.use_backend("cuda"):
            pass
    assert kernels.backend() == before


def test_backend_env_invalid():
    result = backend_in_subprocess("fortran")
    assert result.returncode != 0
    assert "ValueError" in result.stderr and BACKEND_ENV in result.stderr
