import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory):
    """300 real digits (30 per class) as a user npz dataset."""
    from lance_ref.data import load_mnist5k

    digits = load_mnist5k()
    keep = np.concatenate([np.flatnonzero(digits.labels == c)[:30] for c in range(10)])
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=digits.images[keep, 0], labels=digits.labels[keep])
    return path
