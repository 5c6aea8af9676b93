"""NEq's neuron velocity (specs/selection.md#velocity).

A neuron is a conv output channel. After every epoch a fixed velocity set is forwarded; for
neuron i and forward t, with y_{i,n} the H x W map of sample n,

    d_i^t    = mean_n [1 - cos(y_{i,n}^t, y_{i,n}^{t-1})]
    dphi_i^t = d_i^{t-1} - d_i^t
    v_i^t    = dphi_i^t - dphi_i^{t-1} + mu v_i^{t-1}

with every term that needs a forward before the first one taken as 0.
"""

from __future__ import annotations

import numpy as np


def cosine_distance(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """mean_n [1 - cos(current[n, c], previous[n, c])] per channel c of two (N, C, H, W) outputs;
    a map that is zero in either forward counts as distance 0 from itself, 1 from anything else."""
    a = current.reshape(*current.shape[:2], -1).astype(np.float64)
    b = previous.reshape(*previous.shape[:2], -1).astype(np.float64)
    norm_a, norm_b = np.linalg.norm(a, axis=2), np.linalg.norm(b, axis=2)
    undefined = np.where((norm_a == 0) & (norm_b == 0), 1.0, 0.0)
    cos = np.divide((a * b).sum(axis=2), norm_a * norm_b, out=undefined, where=norm_a * norm_b > 0)
    return (1 - cos).mean(axis=0)


class VelocityTracker:
    """Velocities of the neurons of `sizes` (layer -> channels), updated by `update(outputs)`."""

    def __init__(self, sizes: dict, momentum: float = 0.5):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.sizes, self.momentum = dict(sizes), float(momentum)
        count = sum(self.sizes.values())
        self.outputs = None
        self.distance, self.delta, self.velocity = np.zeros(count), np.zeros(count), np.zeros(count)
        self.forwards = 0

    def update(self, outputs: dict) -> np.ndarray:
        """Take the velocity set's conv outputs (layer -> (N, C, H, W)) of this forward; returns
        the velocities, one per neuron, layers in `sizes` order."""
        for name, channels in self.sizes.items():
            shape = np.shape(outputs.get(name))
            if len(shape) != 4 or shape[1] != channels or shape[0] == 0:
                raise ValueError(f"outputs[{name!r}] must have shape (N >= 1, {channels}, H, W), got {shape}")
        if self.outputs is not None:
            distance = np.concatenate([cosine_distance(outputs[n], self.outputs[n]) for n in self.sizes])
            delta = self.distance - distance
            self.velocity = delta - self.delta + self.momentum * self.velocity
            self.distance, self.delta = distance, delta
        self.outputs = {name: np.array(outputs[name], copy=True) for name in self.sizes}
        self.forwards += 1
        return self.velocity.copy()
