"""Before every epoch, choose which channels of a model's selective convs update
(specs/selection.md#selector)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..nn import FinetuneMethod, fine_tune_last, layer_activations
from ..options import Options, flag
from .budget import POLICIES, budget_parameters, conv_neurons, parse_budget, select
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


@dataclass(frozen=True)
class SelectionOptions(Options):
    """The selection policies' options in `lance-ref finetune`."""

    budget: str = flag("0.1", "neq, random, su: the conv parameters updated per epoch, a ratio with a decimal point "
                       "(0.1, 1.0: all) or an integer count (5000)")
    velocity_samples: int = flag(10, "neq: the target training images whose outputs give the velocity")
    velocity_momentum: float = flag(0.5, "neq: the velocity's momentum")

    def check(self) -> None:
        parse_budget(self.budget)
        if self.velocity_samples < 1:
            raise ValueError(f"velocity_samples must be >= 1 (the velocity set cannot be empty), got {self.velocity_samples}")


class SelectedFinetune(FinetuneMethod):
    """The selection policies as fine-tuning methods: the last `last_n` convs become
    `SelectiveConv2d` (the classifier trains whole), a `NeuronSelector` sets their masks before
    each epoch under `budget` (parsed), and the budget and the most parameters updated in an
    epoch are the figures (specs/selection.md)."""

    Options = SelectionOptions

    def __init__(self, policy: str, last_n: int, budget, velocity_images, rng, momentum: float):
        self.policy, self.last_n, self.budget = policy, last_n, budget
        self.velocity_images, self.rng, self.momentum = velocity_images, rng, momentum

    def prepare(self, model) -> list:
        names = fine_tune_last(model, self.last_n, SelectiveConv2d, wrap_classifier=lambda linear: linear)
        self.selector = NeuronSelector(model, self.policy, self.budget, self.velocity_images, self.rng, self.momentum)
        self.before_epoch = self.selector.before_epoch
        return names

    def figures(self, model, names: list, history: list, conv_parameters: int) -> dict:
        return dict(budget=self.selector.budget, updated_parameters=max(e["updated_parameters"] for e in history))
