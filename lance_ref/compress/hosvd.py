"""HOSVD with an energy threshold: per-mode ranks by the energy rule, bases from Gram matrices."""

from __future__ import annotations

import numbers
import operator

import numpy as np

from ..kernels import tucker_project, unfold
from ..kernels.reference import check_finite, check_float


def check_eps(eps, name: str = "eps") -> float:
    """`eps` as a float, after checking it is a real number in (0, 1] (specs/hosvd.md#energy-rank)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps <= 1:
        raise ValueError(f"{name} must be a real number in (0, 1], got {eps!r}")
    return float(eps)


def energy_rank(energies: np.ndarray, eps) -> int:
    """The smallest k >= 1 whose leading energies hold a share >= eps of the total; len(energies)
    for eps = 1, and 1 if every energy is 0 (specs/hosvd.md#energy-rank).

    `energies` are squared singular values (or Gram eigenvalues clipped at 0), sorted descending.
    """
    eps = check_eps(eps)
    energies = np.asarray(energies)
    if energies.ndim != 1 or energies.size == 0:
        raise ValueError(f"energies must be a non-empty 1-D array, got shape {energies.shape}")
    check_finite(energies, "energies")
    if not (np.all(energies >= 0) and np.all(energies[:-1] >= energies[1:])):
        raise ValueError("energies must be non-negative and sorted in descending order")
    return _energy_rank(energies, eps)


def _energy_rank(energies: np.ndarray, eps: float) -> int:
    """`energy_rank` of energies and an eps already checked (the callers inside this module)."""
    if eps == 1:
        return energies.size
    cumulative = np.cumsum(energies, dtype=np.float64)
    if cumulative[-1] == 0:
        return 1
    # The threshold scales the last cumulative sum (not a separately rounded total), so some
    # k <= len(energies) always reaches it.
    return int(np.searchsorted(cumulative, eps * cumulative[-1], side="left")) + 1


def _signed(u: np.ndarray, dtype) -> np.ndarray:
    """`u` with each column signed so its largest-magnitude entry (the first on ties) is
    positive, as a new C-contiguous array of `dtype` (specs/hosvd.md#hosvd)."""
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
    return np.ascontiguousarray(u * signs, dtype=dtype)


def leading_eigenvectors(g: np.ndarray, eps, dtype) -> np.ndarray:
    """The k eigenvectors of the symmetric PSD `g` with the largest eigenvalues, k by
    `energy_rank`, signed by the convention of `_signed` (specs/hosvd.md#calibration)."""
    values, vectors = np.linalg.eigh(g)  # ascending
    k = _energy_rank(np.clip(values[::-1], 0, None), eps)
    return _signed(vectors[:, : -k - 1 : -1], dtype)


def leading_singular_vectors(m: np.ndarray, eps) -> np.ndarray:
    """The k leading left singular vectors of `m`, k by `energy_rank` of the squared singular
    values, signed by the convention of `_signed` (specs/hosvd.md#hosvd)."""
    tall = m.shape[0] > m.shape[1]  # then some of the I directions have zero energy
    u, s, _ = np.linalg.svd(m, full_matrices=tall)
    energies = np.zeros(m.shape[0])
    energies[: s.size] = s * s
    return _signed(u[:, : _energy_rank(energies, eps)], m.dtype)


def check_modes(modes, ndim: int) -> tuple:
    """`modes` as a tuple of distinct ints in 0..ndim-1."""
    modes = tuple(operator.index(n) for n in modes)
    if len(set(modes)) != len(modes) or not all(0 <= n < ndim for n in modes):
        raise ValueError(f"modes must be distinct modes in 0..{ndim - 1}, got {modes}")
    return modes


def hosvd(x: np.ndarray, eps, modes=None) -> tuple:
    """Truncated HOSVD of `x`: (core, factors) with, for each mode n in `modes` (default all),
    U_n the leading left singular vectors of X_(n) kept by the energy rule, and None for the
    other modes; core = x x_n U_n^T (specs/hosvd.md#hosvd).

    U_n comes from the SVD of X_(n) in x's dtype, as the NeurIPS 2024 baseline computes it at
    every step (calibration uses the Gram's eigendecomposition instead).
    """
    check_float(x, "x")
    eps = check_eps(eps)
    modes = check_modes(range(x.ndim) if modes is None else modes, x.ndim)
    if x.size == 0:
        raise ValueError(f"x must not be empty, got shape {x.shape}")
    check_finite(x, "x")
    return truncated_hosvd(x, eps, modes)


def truncated_hosvd(x: np.ndarray, eps: float, modes: tuple) -> tuple:
    """`hosvd` of arguments already checked: the per-step path of the `hosvd` method, whose eps
    and modes were checked once when its layer was made."""
    factors = [leading_singular_vectors(unfold(x, n), eps) if n in modes else None for n in range(x.ndim)]
    return tucker_project(x, factors), factors
