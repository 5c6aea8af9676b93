"""Before every epoch, choose which channels of a model's selective convs update
(specs/selection.md#selector)."""

from __future__ import annotations

import numpy as np

from ..nn import layer_activations
from .budget import POLICIES, budget_parameters, conv_neurons, select
from .layers import SelectiveConv2d
from .velocity import VelocityTracker


class NeuronSelector:
    """Sets the masks of the model's `SelectiveConv2d` layers under `budget` (a ratio of their
    parameters or a count; ignored by `full`) by `policy`. `neq` forwards `velocity_images` (already
    normalised) before each epoch; `random` draws from `rng`; `su` ranks the weights as they are
    when the selector is made."""

    def __init__(self, model, policy: str, budget, velocity_images=None, rng=None, momentum: float = 0.5):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; available: {POLICIES}")
        self.model, self.policy, self.rng = model, policy, rng
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, SelectiveConv2d)}
        self.costs = np.concatenate(list(conv_neurons(self.layers).values()))
        self.bounds = np.cumsum([len(m.mask) for m in self.layers.values()])[:-1]
        self.budget = int(self.costs.sum()) if policy == "full" else budget_parameters(budget, self.costs)
        if policy in ("neq", "random") and rng is None:
            raise ValueError(f"policy {policy!r} needs rng (neq selects at random until it has a velocity)")
        if policy == "neq":
            if velocity_images is None or len(velocity_images) == 0:
                raise ValueError("the velocity set is empty: velocity_images must hold at least one image")
            self.velocity_images = velocity_images
            self.tracker = VelocityTracker({name: len(m.mask) for name, m in self.layers.items()}, momentum)
        self.norms = np.concatenate([np.linalg.norm(m.weight.data.reshape(len(m.mask), -1), axis=1) for m in self.layers.values()])

    def before_epoch(self, epoch: int) -> dict:
        """Recompute the masks (`neq` after a velocity-set forward); returns the epoch's
        `updated_parameters` (conv parameters allowed to update)."""
        policy, velocity = self.policy, None
        if policy == "neq":
            outputs = layer_activations(self.model, self.layers, self.velocity_images, kind="output")
            velocity = self.tracker.update(outputs)
            if self.tracker.forwards < 2:  # no velocity before the second forward
                policy = "random"
        mask = select(policy, self.costs, self.budget, velocity=velocity, norms=self.norms, rng=self.rng)
        for layer, layer_mask in zip(self.layers.values(), np.split(mask, self.bounds)):
            layer.mask = layer_mask
        return dict(updated_parameters=int(self.costs[mask].sum()))
