"""Where the public upstream code differs, lance-ref's value is the exact mathematics
(docs/upstream.md, one test per case)."""

import numpy as np
import pytest

import lance_ref as L
from lance_ref import functional as F
from lance_ref.compress import Calibrator, conv2d_weight_grad, hosvd
from lance_ref.compress.hosvd import leading_eigenvectors
from lance_ref.continual.gpm import extend_memory
from lance_ref.continual.lance_cl import WHOLE_COMPLEMENT_BELOW, LanceCL, complement_basis
from lance_ref.continual.strategies import GPM
from lance_ref.kernels import gram, tucker_reconstruct


def calibrated(batches, eps=0.9):
    calibrator = Calibrator(eps, range(4), 4)
    for batch in batches:
        calibrator.update(batch)
    return calibrator


# --- 1. calibration sums the batches' Grams -------------------------------------------------
def test_calibration_gram_is_the_plain_sum_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((4, 3, 5, 5)) * (1 + i) for i in range(3)]
    calibrator = calibrated(batches)
    for n, g in enumerate(calibrator.grams):
        exact = sum(gram(b, n) for b in batches)
        np.testing.assert_allclose(g, exact, rtol=1e-14)
        # weighting the first batch I_n times (as upstream) gives another Gram
        assert not np.allclose(g, batches[0].shape[n] * gram(batches[0], n) + sum(gram(b, n) for b in batches[1:]))
        np.testing.assert_array_equal(calibrator.bases()[n], leading_eigenvectors(g, 0.9, np.float64))


def test_calibration_bases_do_not_depend_on_batch_order():
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((4, 3, 5, 5)) * (1 + 2 * i) for i in range(3)]
    forward, backward = calibrated(batches).bases(), calibrated(batches[::-1]).bases()
    for u, v in zip(forward, backward):
        np.testing.assert_allclose(u, v, atol=1e-10)


# --- 2. the compressed conv weight gradient is exact for every geometry ----------------------
@pytest.mark.parametrize("x_shape, w_shape, geometry", [
    ((2, 3, 9, 9), (4, 3, 3, 3), dict(stride=2, dilation=2)),  # upstream raises
    ((2, 3, 7, 8), (4, 3, 3, 3), dict(padding=(1, 0))),  # upstream pads the width with padding[0]
    ((2, 3, 7, 8), (4, 3, 3, 2), dict(padding=(0, 2))),
    ((2, 4, 7, 7), (6, 2, 3, 3), dict(padding=1, groups=2)),  # upstream returns no weight gradient
    ((2, 4, 7, 7), (4, 1, 3, 3), dict(padding=1, groups=4)),  # depthwise
    ((2, 3, 9, 9), (4, 3, 3, 3), dict(stride=3, padding=(1, 0))),  # upstream: relative error 1.4
])
def test_compressed_weight_gradient_is_exact_where_upstream_fails(x_shape, w_shape, geometry):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape)
    w = L.tensor(rng.standard_normal(w_shape), requires_grad=True)
    y = F.conv2d(L.tensor(x), w, **geometry)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    core, factors = hosvd(x, 1.0)  # full rank: the reconstruction is x
    dw = conv2d_weight_grad(core, factors, g, w_shape, **geometry)
    np.testing.assert_allclose(dw, w.grad, rtol=1e-10, atol=1e-10 * np.abs(w.grad).max())


# --- 3. eps = 1 keeps every direction ------------------------------------------------------
def test_eps_one_keeps_every_direction_and_reconstructs_exactly():
    x = np.random.default_rng(3).standard_normal((64, 2, 2, 2))  # batch unfolding (64, 8): rank 8
    core, factors = hosvd(x, 1.0)
    assert core.shape == (64, 2, 2, 2)  # upstream: batch rank 8
    np.testing.assert_allclose(tucker_reconstruct(core, factors), x, atol=1e-12)
    core, factors = hosvd(x, 1 - 1e-9)  # just below 1: the energy rule finds the rank, 8
    assert core.shape == (8, 2, 2, 2)
    np.testing.assert_allclose(tucker_reconstruct(core, factors), x, atol=1e-12)


# --- 4. LANCE-CL's feature basis and the growth of P ----------------------------------------
@pytest.mark.parametrize("features", [WHOLE_COMPLEMENT_BELOW - 8, WHOLE_COMPLEMENT_BELOW + 16])
def test_lance_cl_feature_basis_is_orthogonal_to_p(features):
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((200, features))
    rows[:, : features // 4] = 0  # input channels that are always zero (e.g. dead ReLUs)
    protected = extend_memory(None, rows[:100].T, 0.97)
    u = complement_basis(rows[100:].T @ rows[100:], protected, 0.9, np.float64)
    assert u.shape[1] > 0
    assert np.abs(protected.T @ u).max() < 1e-12  # upstream: 0.79 for features <= 80
    np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-12)


def test_lance_cl_grows_p_by_gpms_criterion():
    assert LanceCL.after_task is GPM.after_task  # one memory update for both
    # energies 9, 4, 1: at threshold 0.9 GPM's criterion keeps one direction (9/14 < 0.9 <= 13/14),
    # where a "+1" rule would keep two
    assert extend_memory(None, np.diag([3.0, 2.0, 1.0]), 0.9).shape == (3, 1)
