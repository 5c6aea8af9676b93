"""HOSVD with an energy threshold and LANCE calibration (specs/hosvd.md)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import arrays
from lance_ref.compress import MODE_SETS, Calibrator, check_eps, compressed_modes, energy_rank, hosvd
from lance_ref.kernels import reference

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
BAD_EPS = [0, -0.1, 1.5, float("nan"), float("inf"), "0.9", None, True]

shapes = st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64])
eps_values = st.one_of(st.just(1.0), st.floats(0.01, 1.0))


def root(a):
    while a.base is not None:
        a = a.base
    return a


def align_signs(u, reference_u):
    """`u` with each column's sign flipped to agree with `reference_u`'s."""
    return u * np.where(np.sum(u * reference_u, axis=0) < 0, -1, 1)


def structured(shape, seed, dtype=np.float64):
    """Gaussian samples scaled along every axis by 2^-i, so every mode has a spread spectrum."""
    x = np.random.default_rng(seed).standard_normal(shape)
    for axis, size in enumerate(shape):
        x *= (2.0 ** -np.arange(size)).reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return x.astype(dtype)


# --- eps and the energy rank ---


@pytest.mark.parametrize("eps", [1e-9, 0.5, 1, np.float32(0.7), np.float64(1.0)])
def test_check_eps_accepts(eps):
    assert check_eps(eps) == float(eps)


@pytest.mark.parametrize("eps", BAD_EPS)
def test_check_eps_rejects(eps):
    with pytest.raises(ValueError, match=r"eps must be a real number in \(0, 1\], got"):
        check_eps(eps)


def test_energy_rank_by_hand():
    energies = np.array([4.0, 3.0, 2.0, 1.0, 0.0])  # cumulative shares 0.4, 0.7, 0.9, 1, 1
    assert [energy_rank(energies, eps) for eps in (0.1, 0.4, 0.65, 0.75, 0.95)] == [1, 1, 2, 3, 4]
    assert energy_rank(energies, 1) == 5  # full rank, the zero energy included
    assert energy_rank(np.zeros(3), 0.9) == 1
    assert energy_rank(np.zeros(3), 1.0) == 3


@given(
    energies=st.lists(st.floats(0, 1e3), min_size=1, max_size=30).map(lambda e: np.sort(e)[::-1]),
    eps=st.floats(0.001, 0.999),
)
def test_energy_rank_is_the_smallest_reaching_eps(energies, eps):
    k = energy_rank(energies, eps)
    cumulative = np.cumsum(energies)
    assert 1 <= k <= energies.size
    if cumulative[-1] > 0:
        assert cumulative[k - 1] >= eps * cumulative[-1]
        assert k == 1 or cumulative[k - 2] < eps * cumulative[-1]


def test_energy_rank_errors():
    with pytest.raises(ValueError, match="eps"):
        energy_rank(np.ones(3), 0)
    for bad in (np.ones((2, 2)), np.zeros(0)):
        with pytest.raises(ValueError, match="energies must be a non-empty 1-D array"):
            energy_rank(bad, 0.5)
    for bad in ([1.0, 2.0], [1.0, -1.0]):
        with pytest.raises(ValueError, match="energies must be non-negative and sorted"):
            energy_rank(np.array(bad), 0.5)


# --- hosvd ---


@given(data=st.data(), shape=shapes, dtype=dtypes, eps=eps_values)
def test_hosvd_ranks_bases_and_core(data, shape, dtype, eps):
    x = data.draw(arrays(shape, dtype))
    modes = data.draw(st.sets(st.integers(0, len(shape) - 1)))
    core, factors = hosvd(x, eps, modes)
    tol = TOL[x.dtype]
    assert len(factors) == x.ndim
    for n, u in enumerate(factors):
        if n not in modes:
            assert u is None
            continue
        assert u.dtype == x.dtype and u.flags.c_contiguous and root(u).size == u.size
        np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=10 * tol)
        # The energy rule on the singular values (with a little slack for rounding at the border).
        s2 = np.linalg.svd(reference.unfold(x.astype(np.float64), n), compute_uv=False) ** 2
        cumulative, k = np.cumsum(s2), u.shape[1]
        if eps == 1:
            assert k == x.shape[n]
        elif cumulative[-1] > 0:
            assert cumulative[k - 1] >= eps * cumulative[-1] * (1 - 100 * tol)
            assert k == 1 or cumulative[k - 2] < eps * cumulative[-1] * (1 + 100 * tol)
        # Sign convention: the largest-magnitude entry of each column is positive.
        assert np.all(u[np.argmax(np.abs(u), axis=0), np.arange(k)] > 0)
    assert core.shape == tuple(s if u is None else u.shape[1] for s, u in zip(x.shape, factors))
    want = reference.tucker_project(x, factors)  # the Rust kernel agrees to rounding (specs/kernels.md)
    assert np.linalg.norm(core - want) <= tol * np.linalg.norm(want)


@given(data=st.data(), shape=shapes, dtype=dtypes)
def test_hosvd_with_eps_1_is_full_rank_and_exact(data, shape, dtype):
    x = data.draw(arrays(shape, dtype))
    core, factors = hosvd(x, 1.0)
    assert core.shape == x.shape
    rebuilt = reference.tucker_reconstruct(core, factors)
    assert np.linalg.norm(rebuilt - x) <= TOL[x.dtype] * np.linalg.norm(x)


def test_hosvd_factors_span_the_leading_singular_vectors():
    x = structured((6, 5, 4, 3), seed=3)
    _, factors = hosvd(x, 0.9)
    for n, u in enumerate(factors):
        left = np.linalg.svd(reference.unfold(x, n), full_matrices=False)[0][:, : u.shape[1]]
        np.testing.assert_allclose(u, align_signs(left, u), atol=1e-10)


def test_hosvd_of_zeros_keeps_rank_1():
    core, factors = hosvd(np.zeros((3, 4, 2)), 0.9)
    assert core.shape == (1, 1, 1) and not core.any()
    assert [u.shape for u in factors] == [(3, 1), (4, 1), (2, 1)]


def test_hosvd_errors():
    x = np.ones((2, 3, 4))
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        hosvd(x.astype(np.int64), 0.9)
    with pytest.raises(ValueError, match="eps"):
        hosvd(x, 0)
    for modes in ([3], [-1], [1, 1]):
        with pytest.raises(ValueError, match=r"modes must be distinct modes in 0..2"):
            hosvd(x, 0.9, modes)
    with pytest.raises(ValueError, match="x must not be empty"):
        hosvd(np.zeros((2, 0, 3)), 0.9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_before_any_decomposition(bad):
    """LAPACK's SVD fails on NaN and never returns on Inf: both are refused first."""
    x = np.ones((2, 3, 4))
    x[1, 2, 3] = bad
    with pytest.raises(ValueError, match="x holds NaN or Inf"):
        hosvd(x, 0.9)
    with pytest.raises(ValueError, match="energies holds NaN or Inf"):
        energy_rank(np.array([bad, 1.0]) if bad > 0 else np.array([1.0, bad]), 0.9)
    with pytest.raises(ValueError, match="calibration batch 1 holds NaN or Inf"):
        Calibrator(0.9, (0, 1, 2), 3).update(x)


# --- mode sets ---


def test_compressed_modes():
    assert MODE_SETS == ("all", "chw")
    assert compressed_modes("all", 4) == (0, 1, 2, 3)
    assert compressed_modes("chw", 4) == (1, 2, 3)
    assert compressed_modes("all", 2) == (0, 1)
    assert compressed_modes("chw", 3) == (1, 2)
    with pytest.raises(ValueError, match=r"mode_set must be one of \('all', 'chw'\), got 'hw'"):
        compressed_modes("hw", 4)


# --- calibration ---


def calibrated(batches, modes, eps=0.9):
    calibrator = Calibrator(eps, modes, batches[0].ndim)
    for batch in batches:
        calibrator.update(batch)
    return calibrator


@given(cuts=st.sets(st.integers(1, 63), max_size=10), seed=st.integers(0, 2**32 - 1))
def test_chw_calibration_does_not_depend_on_the_batching(cuts, seed):
    """One batch of 64 samples, and the same samples shuffled and cut into batches of any sizes,
    give the same Grams, ranks and bases (up to sign) on the C/H/W modes."""
    x = structured((64, 3, 5, 4), seed=0)
    shuffled = x[np.random.default_rng(seed).permutation(64)]
    whole = calibrated([x], compressed_modes("chw", 4))
    split = calibrated(np.split(shuffled, sorted(cuts)), compressed_modes("chw", 4))
    assert split.batches_seen == len(cuts) + 1
    for g_whole, g_split in zip(whole.grams[1:], split.grams[1:]):
        np.testing.assert_allclose(g_split, g_whole, rtol=1e-12, atol=1e-12 * np.abs(g_whole).max())
    assert split.ranks == whole.ranks and whole.ranks[0] is None
    for u_whole, u_split in zip(whole.bases()[1:], split.bases()[1:]):
        np.testing.assert_allclose(align_signs(u_split, u_whole), u_whole, atol=1e-10)


def test_batch_mode_gram_sums_the_batch_grams_and_depends_on_the_batching():
    """Mode 0 pairs samples by their position in a batch: its Gram is the sum of the (B, B)
    batch Grams, so reordering the same samples changes it while the C/H/W modes do not move."""
    x = structured((64, 3, 5, 4), seed=1)
    batches = np.split(x, 8)
    reordered = np.split(x[np.random.default_rng(0).permutation(64)], 8)
    first, second = calibrated(batches, (0, 1, 2, 3)), calibrated(reordered, (0, 1, 2, 3))
    expected = sum(b.reshape(8, -1) @ b.reshape(8, -1).T for b in batches)
    np.testing.assert_allclose(first.grams[0], expected, rtol=1e-12)
    assert first.bases()[0].shape[0] == 8
    assert not np.allclose(first.grams[0], second.grams[0])
    for g1, g2 in zip(first.grams[1:], second.grams[1:]):
        np.testing.assert_allclose(g1, g2, rtol=1e-12)


@given(data=st.data(), shape=shapes, eps=eps_values)
def test_calibration_on_one_batch_equals_hosvd(data, shape, eps):
    x = data.draw(arrays(shape, np.float64))
    modes = data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))
    _, factors = hosvd(x, eps, modes)  # by the SVD of each unfolding
    bases = calibrated([x], modes, eps).bases()  # by the eigendecomposition of each Gram
    for u, v in zip(factors, bases):
        assert (u is None) == (v is None)
        if u is not None:
            assert u.shape == v.shape
            # the same subspace (a basis of zero-energy directions is not unique)
            np.testing.assert_allclose(v @ v.T, u @ u.T, atol=1e-9)


def test_calibration_of_float32_batches():
    x = structured((16, 4, 3, 3), seed=2, dtype=np.float32)
    calibrator = calibrated([x[:8], x[8:]], (1, 2, 3))
    bases = calibrator.bases()
    assert bases[0] is None and all(u.dtype == np.float32 for u in bases[1:])
    assert all(g.dtype == np.float64 for g in calibrator.grams[1:])
    _, factors = hosvd(x, 0.9, (1, 2, 3))
    assert calibrator.ranks == [None] + [u.shape[1] for u in factors[1:]]
    for u, v in zip(factors[1:], bases[1:]):
        np.testing.assert_allclose(align_signs(v, u), u, atol=1e-4)


def test_calibration_errors():
    with pytest.raises(ValueError, match="eps"):
        Calibrator(1.5, (1, 2, 3), 4)
    with pytest.raises(ValueError, match="modes must be distinct modes in 0..3"):
        Calibrator(0.9, (1, 4), 4)
    with pytest.raises(ValueError, match="ndim must be a positive int"):
        Calibrator(0.9, (0,), 0)
    calibrator = Calibrator(0.9, (1, 2, 3), 4)
    with pytest.raises(ValueError, match="calibration saw no batches"):
        calibrator.bases()
    with pytest.raises(ValueError, match=r"calibration batch 1 must have 4 dimensions, got \(2, 3, 4\)"):
        calibrator.update(np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        calibrator.update(np.ones((2, 3, 4, 4), dtype=np.int32))
    calibrator.update(np.ones((2, 3, 4, 4)))
    calibrator.update(np.ones((5, 3, 4, 4)))  # the batch size may change: mode 0 is not calibrated
    bad = np.ones((2, 3, 4, 4))
    for value in (np.nan, np.inf):
        bad[1, 2, 0, 3] = value
        with pytest.raises(ValueError, match="calibration batch 3 holds NaN or Inf"):
            calibrator.update(bad)
    with pytest.raises(ValueError, match=r"batch 3 has shape \(2, 3, 5, 4\) but batch 1 had \(2, 3, 4, 4\)"):
        calibrator.update(np.ones((2, 3, 5, 4)))
    with pytest.raises(TypeError, match="calibration batch 3 has dtype float32 but batch 1 had float64"):
        calibrator.update(np.ones((2, 3, 4, 4), dtype=np.float32))
    assert calibrator.batches_seen == 2  # rejected batches are not counted
    np.testing.assert_array_equal(calibrator.grams[1], np.full((3, 3), 7 * 16.0))


def test_calibration_of_the_batch_mode_needs_a_constant_batch_size():
    calibrator = Calibrator(0.9, compressed_modes("all", 4), 4)
    calibrator.update(np.ones((8, 3, 4, 4)))
    with pytest.raises(ValueError, match="mode 0 \\(the batch\\) needs a constant batch size"):
        calibrator.update(np.ones((5, 3, 4, 4)))
