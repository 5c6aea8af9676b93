"""LANCE-CL: task-orthogonal compressed subspaces (specs/continual.md#lance-cl).

Task 0 trains by full backprop. Before each later task, one pass over its data calibrates, per
protected layer, fixed bases of the layer's input tensor (conv: patch tokens (B, L, C kh kw);
linear: (B, F)): the batch and token modes by the energy rule, the feature mode in the
complement of the protected basis P. The layer's weight gradient is formed from the compressed
input, so its rows lie in span(U_F), orthogonal to P, and inputs of earlier tasks (in span(P))
see no change. After each task, P grows by GPM's memory update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..compress import CompressedLinear, Lance, PatchCompressedConv2d, calibrate, check_eps
from ..compress.hosvd import leading_eigenvectors
from ..nn import Conv2d, pin_batchnorm
from ..options import flag
from .gpm import gpm_rank
from .strategies import GPMOptions, ProtectedMemory, Strategy, forward_task, grow_protected_memory, register
from .steps import minibatches

WHOLE_COMPLEMENT_BELOW = 80  # feature sizes up to this use all of span(P)-perp, as upstream


def complement_basis(gram: np.ndarray, protected: np.ndarray | None, threshold: float, dtype) -> np.ndarray:
    """An orthonormal basis U_F (F, k) of directions orthogonal to span(P), from the feature
    Gram G (specs/continual.md#lance-cl): with Q an orthonormal basis of span(P)-perp, all of Q
    when F <= WHOLE_COMPLEMENT_BELOW; otherwise Q V, V the leading eigenvectors of Q^T G Q
    added by GPM's criterion (from the energy share P explains, while the share stays below
    `threshold`), at least one. k = 0 only when P spans everything."""
    f = len(gram)
    p = np.zeros((f, 0)) if protected is None else protected.astype(np.float64)
    complement = np.eye(f) if p.shape[1] == 0 else np.linalg.svd(p, full_matrices=True)[0][:, p.shape[1] :]
    if f <= WHOLE_COMPLEMENT_BELOW or complement.shape[1] == 0:
        return np.ascontiguousarray(complement, dtype=dtype)
    values, vectors = np.linalg.eigh(complement.T @ gram @ complement)  # ascending
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    total = float(np.trace(gram))
    rank = gpm_rank(values / total, 1 - values.sum() / total, threshold) if total > 0 else 0
    return np.ascontiguousarray(complement @ vectors[:, : max(rank, 1)], dtype=dtype)


class ProtectedBases(Lance):
    """LANCE's fixed bases whose last (feature) mode lies in the complement of `protected`."""

    def __init__(self, eps: float, protected: np.ndarray | None):
        super().__init__(eps, "all")
        self.protected = protected

    def bases_from(self, calibrator) -> list:
        *others, features = calibrator.grams
        bases = [leading_eigenvectors(g, self.eps, calibrator.dtype) for g in others]
        return bases + [complement_basis(features, self.protected, self.eps, calibrator.dtype)]


@dataclass(frozen=True)
class LanceOptions(GPMOptions):
    lance_eps: float = flag(0.9, "lance: the share of each mode's energy its bases keep, in (0, 1]")

    def check(self) -> None:
        super().check()
        check_eps(self.lance_eps, "lance_eps")


@register
class LanceCL(Strategy):
    """`lance`: the protected layers and the heads become compressed layers (plain until task
    1); P is GPM's memory (`ProtectedMemory`), grown after each task. The head being trained is
    compressed on bases by the energy rule alone (heads are not shared, so nothing to protect);
    the other heads are frozen, and so is BatchNorm after task 0."""

    name = "lance"
    Options = LanceOptions

    def __init__(self, model, scenario, settings, options=None):
        super().__init__(model, scenario, settings, options)
        self.memory = ProtectedMemory(model, self.layers, self.options, settings)
        self.eps = self.options.lance_eps
        for name in self.weight_layer_names():
            layer = model.get_submodule(name)
            model.set_submodule(name, PatchCompressedConv2d(layer) if isinstance(layer, Conv2d) else CompressedLinear(layer, "full"))

    def compressed_layers(self) -> dict:
        """name -> layer of every wrapped layer, protected layers and heads."""
        return {name: self.model.get_submodule(name) for name in self.weight_layer_names()}

    def training_samples(self, task):
        samples = super().training_samples(task)
        # A fixed batch-mode basis needs full minibatches: the last partial one is left out.
        return samples if task.index == 0 else samples.take(np.arange(len(samples) - len(samples) % self.settings.batch_size))

    def before_task(self, task, normalize) -> None:
        if task.index == 0:
            return
        pin_batchnorm(self.model, freeze=True)  # BatchNorm gets no further update
        for name, layer in self.layers.items():
            layer.compressor = ProtectedBases(self.eps, self.memory.get(name))
        current = self.head_names[task.index if len(self.head_names) > 1 else 0]
        for name in self.head_names:
            head = self.model.get_submodule(name)
            head.compressor = Lance(self.eps, "all") if name == current else None
            head.requires_grad_(name == current)
        samples = self.training_samples(task)
        rng = np.random.default_rng((self.settings.seed, task.index, 3))
        order = minibatches(len(samples), self.settings.batch_size, rng)
        batches = (normalize(samples.images[i]) for i in order)
        calibrate(self.model, batches, show=self.show, total=len(order), label=f"task {task.index + 1} calibrate",
                  **forward_task(task, self.settings.setting))
        for layer in self.layers.values():
            if layer.compressor.factors[-1].shape[1] == 0:  # P spans every direction: nothing to learn
                layer.freeze()

    after_task = grow_protected_memory  # no projection before it: span(U_F) is orthogonal to P

    def current_factors(self) -> dict:
        """name -> the fixed factors of the task being learnt (empty before task 1)."""
        return {name: layer.compressor.factors for name, layer in self.compressed_layers().items()
                if layer.compressor is not None and layer.compressor.factors}

    def fixed_arrays(self) -> list:
        return [u for factors in self.current_factors().values() for u in factors]

    def state(self) -> dict:
        """P per layer and, for the memory figures, the current factors (recalibrated at each
        task, so not read back)."""
        factors = {name: {str(n): u for n, u in enumerate(us)} for name, us in self.current_factors().items()}
        return {**self.memory.state(), **({"factors": factors} if factors else {})}

    def load_state(self, state: dict) -> None:
        self.memory.load_state({name: m for name, m in state.items() if name != "factors"})
