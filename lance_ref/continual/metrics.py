"""The accuracy matrix and what is read from it (specs/continual.md#metrics).

`R[i, j]` is the accuracy on task j after learning task i; only the lower triangle (j <= i,
the tasks seen so far) is measured.
"""

from __future__ import annotations

import numpy as np


def check_accuracy_matrix(matrix) -> np.ndarray:
    """`matrix` as a float64 (T, T) array; its lower triangle must hold accuracies in [0, 1]."""
    r = np.asarray(matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square (T, T) with T >= 1, got shape {r.shape}")
    seen = r[np.tril_indices(len(r))]
    if not (np.isfinite(seen).all() and seen.min() >= 0 and seen.max() <= 1):
        raise ValueError("the accuracy matrix's lower triangle must hold accuracies in [0, 1]")
    return r


def average_accuracy(matrix) -> float:
    """ACC = mean_j R[T-1, j]."""
    return float(check_accuracy_matrix(matrix)[-1].mean())


def backward_transfer(matrix) -> float:
    """BWT = mean_{j < T-1} (R[T-1, j] - R[j, j]); 0 for a single task."""
    r = check_accuracy_matrix(matrix)
    if len(r) == 1:
        return 0.0
    return float(np.mean(r[-1, :-1] - np.diag(r)[:-1]))


def forgetting(matrix) -> list:
    """Per task j < T-1: max_{j <= i < T-1} R[i, j] - R[T-1, j], the drop from its best."""
    r = check_accuracy_matrix(matrix)
    return [float(r[j:-1, j].max() - r[-1, j]) for j in range(len(r) - 1)]


def ragged(matrix) -> list:
    """The lower triangle as rows of growing length (row i: the i + 1 tasks seen), for JSON."""
    r = check_accuracy_matrix(matrix)
    return [r[i, : i + 1].tolist() for i in range(len(r))]


def centred_gram(features: np.ndarray) -> np.ndarray:
    """K = X X^T of the features X (n, p) centred over the samples."""
    centred = features - features.mean(axis=0)
    return centred @ centred.T


def linear_cka(x, y) -> float:
    """Linear CKA of two feature sets of the same n samples, (n, ...) each, flattened per sample
    (Kornblith et al., ICML 2019; specs/continual.md#layer-wise-analysis):
    <K_x, K_y>_F / (|K_x|_F |K_y|_F) with K = X X^T of the centred features."""
    a, b = (np.asarray(f, dtype=np.float64).reshape(len(f), -1) for f in (x, y))
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"linear CKA needs two feature sets of the same n >= 2 samples, got {len(a)} and {len(b)}")
    ka, kb = (centred_gram(f) for f in (a, b))
    norms = np.linalg.norm(ka) * np.linalg.norm(kb)
    if norms == 0:
        raise ValueError("linear CKA is undefined for features that are constant over the samples")
    return float((ka * kb).sum() / norms)
