"""LightCL (arXiv 2407.10545): keep the generalisable lower and middle layers frozen, and
memorise the deep layers' feature patterns on a tiny buffer (specs/continual.md#lightcl)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..autograd import no_grad
from ..nn import eval_mode, layer_activations, pin_batchnorm, recording
from ..options import Options, check_counts, flag
from ..tensor import Tensor
from .replay import ClassBalancedReservoir
from .strategies import Samples, Strategy, forward_task, register


def frozen_before(model, first_trained: str) -> list:
    """Names of the parameters registered before those of module `first_trained`."""
    names = [name for name, _ in model.named_parameters()]
    modules = dict(model.named_modules())
    if first_trained not in modules or not any(n.startswith(first_trained + ".") for n in names):
        layers = [n for n, m in modules.items() if n and next(m.parameters(), None) is not None]
        raise ValueError(f"freeze point {first_trained!r} names no layer with parameters; layers: {layers}")
    return names[: next(i for i, n in enumerate(names) if n.startswith(first_trained + "."))]


def freeze_before(model, first_trained: str) -> list:
    """Freeze every parameter registered before module `first_trained`, and pin the BatchNorms
    among them in eval mode; returns the frozen parameters' names."""
    frozen = set(frozen_before(model, first_trained))
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad, params[name].grad = False, None
    pin_batchnorm(model, where=lambda name: f"{name}.weight" in frozen)
    return sorted(frozen)


def channel_importance(features: np.ndarray) -> np.ndarray:
    """I_c = sum_{n, h, w} |F[n, c, h, w]| for (N, C, H, W) or (N, C) features."""
    return np.abs(features).sum(axis=tuple(i for i in range(features.ndim) if i != 1))


def top_channels(importance: np.ndarray, ratio: float) -> np.ndarray:
    """Mask of the ceil(ratio C) channels of largest importance (ties keep channel order)."""
    mask = np.zeros(len(importance), dtype=bool)
    mask[np.argsort(-importance, kind="stable")[: int(np.ceil(ratio * len(importance)))]] = True
    return mask


@dataclass(frozen=True)
class LightCLOptions(Options):
    lightcl_freeze: str = flag("auto", "lightcl: the first module that keeps training (auto: the model's own)")
    lightcl_features: str = flag("auto", "lightcl: the modules whose features it keeps, comma-separated (auto: the model's own)")
    lightcl_mask_ratio: float = flag(0.15, "lightcl: the share of channels each task's masks keep, in (0, 1]")
    lightcl_buffer: int = flag(15, "lightcl: the samples its buffer keeps")
    lightcl_beta: float = flag(2e-4, "lightcl: the penalty's weight beta, >= 0")

    def check(self) -> None:
        if not 0 < self.lightcl_mask_ratio <= 1:
            raise ValueError(f"lightcl_mask_ratio must lie in (0, 1], got {self.lightcl_mask_ratio}")
        if not self.lightcl_beta >= 0:
            raise ValueError(f"lightcl_beta must be >= 0, got {self.lightcl_beta}")
        check_counts(self, "lightcl_buffer")


@register
class LightCL(Strategy):
    """`lightcl`: task 0 trains everything (no pretrained weights here); from task 1 on, every
    parameter before the freeze point is frozen. After each task its channel masks (top
    `lightcl_mask_ratio` by importance on one batch) are OR-ed into the memory, and the buffer
    takes a class-balanced share of its samples. While task t > 0 trains, the loss gains
    beta sum_l |M_l (F_l(buf) - F_l_old(buf))|^2 + beta |z(buf) - z_old(buf)|^2, the old values
    taken at the task's start (the model at the end of task t - 1; the buffer does not change
    during a task)."""

    name = "lightcl"
    Options = LightCLOptions

    def __init__(self, model, scenario, settings, options=None):
        super().__init__(model, scenario, settings, options)
        options = self.options
        freeze, features = getattr(model, "lightcl_layers", ("", ""))  # the model's own defaults
        self.freeze_point = freeze if options.lightcl_freeze == "auto" else options.lightcl_freeze
        names = features if options.lightcl_features == "auto" else options.lightcl_features
        if not self.freeze_point or not names:
            raise ValueError(f"model {settings.model!r} has no LightCL defaults: give lightcl_freeze and lightcl_features")
        frozen_before(model, self.freeze_point)  # checked now, applied from task 1
        modules = dict(model.named_modules())
        self.feature_names = [n for n in names.split(",")]
        unknown = [n for n in self.feature_names if n not in modules]
        if unknown:
            raise ValueError(f"lightcl_features names no module of the model: {unknown}")
        smallest = min(len(t.train) for t in scenario.tasks)
        if options.lightcl_buffer > smallest:
            raise ValueError(f"lightcl_buffer ({options.lightcl_buffer}) is larger than a task's training data ({smallest} samples)")
        first = scenario.tasks[0].train.images
        self.buffer = ClassBalancedReservoir(options.lightcl_buffer, first.shape[1:], first.dtype)
        self.masks, self.targets = {}, None

    @property
    def feature_layers(self) -> dict:
        return {name: self.model.get_submodule(name) for name in self.feature_names}

    def buffered(self) -> Samples:
        b = self.buffer
        return Samples(b.images[: b.size], b.labels[: b.size], b.classes[: b.size], b.tasks[: b.size])

    def before_task(self, task, normalize) -> None:
        if task.index == 0:
            return
        freeze_before(self.model, self.freeze_point)
        with no_grad():
            features, logits = self.features_and_logits(normalize)
        # Only the masked channels of the old features are kept: the penalty reads no others.
        self.targets = {name: f.data[:, self.masks[name]] for name, f in features.items()}, [z.data for z in logits]

    def features_and_logits(self, normalize) -> tuple:
        """The feature layers' outputs and the logits (each sample on its own task's head, in
        groups by task) of the model on the buffer, as Tensors; in eval mode (no dropout,
        BatchNorm as at test time), so that old and new values agree while the model is unchanged."""
        buffer = self.buffered()
        with eval_mode(self.model), recording(self.feature_layers, "output") as recorded:
            outputs = self.model(Tensor(normalize(buffer.images)))
        features = {name: tensors[0] for name, tensors in recorded.items()}
        if self.settings.setting == "class":
            return features, [outputs]
        heads = outputs if isinstance(outputs, list) else [outputs]
        return features, [heads[t][np.flatnonzero(buffer.tasks == t)] for t in np.unique(buffer.tasks)]

    def penalty(self, task, normalize):
        """beta (sum_l |M_l (F_l - F_l_old)|^2 + |z - z_old|^2) on the buffer: 0 while the model is unchanged."""
        if self.targets is None or self.options.lightcl_beta == 0:
            return None
        old_features, old_logits = self.targets
        features, logits = self.features_and_logits(normalize)
        total = None
        for name, f in features.items():
            term = ((f[:, np.flatnonzero(self.masks[name])] - old_features[name]) ** 2).sum()
            total = term if total is None else total + term
        for z, z_old in zip(logits, old_logits):
            total = total + ((z - z_old) ** 2).sum()
        return total * self.options.lightcl_beta

    def after_task(self, task, normalize) -> None:
        rng = np.random.default_rng((self.settings.seed, task.index, 3))
        samples = self.training_samples(task)
        batch = samples.take(np.sort(rng.choice(len(samples), min(self.settings.batch_size, len(samples)), replace=False)))
        features = layer_activations(self.model, self.feature_layers, normalize(batch.images), kind="output",
                                     **forward_task(task, self.settings.setting))
        for name, f in features.items():
            mask = top_channels(channel_importance(f), self.options.lightcl_mask_ratio)
            self.masks[name] = self.masks[name] | mask if name in self.masks else mask
        order = rng.permutation(len(samples))
        self.buffer.add(samples.images[order], samples.labels[order], samples.classes[order], samples.tasks[order], rng)

    def state(self) -> dict:
        return dict(buffer=self.buffer.state(), masks=dict(self.masks)) if self.masks else {}

    def load_state(self, state: dict) -> None:
        self.buffer.load_state(state["buffer"])
        self.masks = dict(state["masks"])

    def kept_bytes(self) -> int:
        """The buffer, the masks, and the buffer's old masked features and logits."""
        targets = 0 if self.targets is None else sum(a.nbytes for a in self.targets[0].values()) + sum(z.nbytes for z in self.targets[1])
        return super().kept_bytes() + targets
