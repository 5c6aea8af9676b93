"""Continual-learning strategies as hooks of one training loop (specs/continual.md#strategies).

The loop (`loop.py`) asks a strategy for the task's training samples, adds the samples it
replays to each minibatch, lets it edit the gradients before the optimiser step, and tells it
when a task ends. `state()` is what the strategy keeps between tasks: its bytes are the
strategy's kept memory (`kept_bytes`), and the checkpoint stores it.

A strategy is one class: `@register` puts it in STRATEGIES under its `name`, and its `Options`
(an `options.Options` dataclass) become flags of `lance-ref continual`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..io import flatten
from ..nn import layer_activations, pin_batchnorm
from ..options import Options, check_counts, flag
from ..progress import Progress
from .gpm import check_threshold, extend_memory, project_out
from .layers import check_patch_rows, head_names, patch_rows, protected_layers
from .replay import ClassBalancedReservoir
from .steps import minibatches, task_loss


@dataclass
class Samples:
    """Raw training samples: images, labels as the loss sees them, dataset classes, task ids."""

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    tasks: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, index) -> "Samples":
        return Samples(self.images[index], self.labels[index], self.classes[index], self.tasks[index])

    @staticmethod
    def concat(parts) -> "Samples":
        return Samples(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("images", "labels", "classes", "tasks")))


def task_samples(task, setting: str) -> Samples:
    """Task `task`'s training data, labelled for a head per task or for a shared head."""
    local = task.train.labels
    labels = local if setting == "task" else task.global_labels(local)
    classes = np.asarray(task.classes)[local]
    return Samples(task.train.images, labels, classes, np.full(len(local), task.index))


STRATEGIES: dict = {}  # name -> strategy class, filled by @register


def register(strategy: type) -> type:
    """Class decorator: `strategy` becomes `lance-ref continual --strategy <strategy.name>`."""
    STRATEGIES[strategy.name] = strategy
    return strategy


class Strategy:
    """The hooks of the task loop, each doing nothing: a strategy overrides those it needs
    (specs/continual.md#strategies). `settings` are the run's benchmark settings (`setting`,
    `batch_size`, `seed`, `dtype`, `model`), `options` the strategy's own `Options`."""

    name = ""
    Options = Options  # none
    show = False  # set by the task loop: long hooks draw a progress bar

    def __init__(self, model, scenario, settings, options: Options | None = None):
        self.model, self.scenario, self.settings = model, scenario, settings
        self.options = self.Options() if options is None else options
        self.layer_names, self.head_names = list(protected_layers(model)), head_names(model)

    @property
    def layers(self) -> dict:
        """name -> module of the protected layers (as they are now: a strategy may wrap them)."""
        return {name: self.model.get_submodule(name) for name in self.layer_names}

    def weight_layer_names(self) -> list:
        return self.layer_names + self.head_names

    def fixed_arrays(self) -> list:
        """Arrays kept from step to step that the graph saves (counted as kept memory, not as
        activation memory)."""
        return []

    def training_samples(self, task) -> Samples:
        return task_samples(task, self.settings.setting)

    def before_task(self, task, normalize) -> None:
        pass

    def replay(self, rng) -> Samples | None:
        return None

    def minibatch_loss(self, task, batch: Samples, rng, normalize):
        """The loss of one step: `batch` joined by the samples `replay` draws, plus `penalty`."""
        replayed = self.replay(rng)
        step = batch if replayed is None else Samples.concat([batch, replayed])
        loss = task_loss(self.model, normalize(step.images), step.labels, step.tasks, self.settings.setting)
        penalty = self.penalty(task, normalize)
        return loss if penalty is None else loss + penalty

    def penalty(self, task, normalize):
        """A term added to each minibatch's loss (a Tensor), or None."""
        return None

    def after_backward(self, task) -> None:
        pass

    def after_step(self, batch: Samples, rng) -> None:
        pass

    def after_task(self, task, normalize) -> None:
        pass

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def kept_bytes(self) -> int:
        """The bytes the strategy keeps between tasks: its state's arrays."""
        return sum(a.nbytes for a in flatten(self.state()).values())

    def replay_bytes(self) -> int:
        """The bytes of the samples (or latents) kept for replay."""
        return 0


@register
class Finetune(Strategy):
    """`finetune`: each task trained in turn with nothing to protect the earlier ones."""

    name = "finetune"


@register
class Joint(Strategy):
    """`joint`: task t trains on the data of tasks 0..t together (the cumulative upper bound);
    its last task is joint training on everything."""

    name = "joint"

    def training_samples(self, task) -> Samples:
        return Samples.concat([task_samples(t, self.settings.setting) for t in self.scenario.tasks[: task.index + 1]])

    def kept_bytes(self) -> int:
        """The earlier tasks' raw samples, which joint training keeps (after the last task)."""
        kept = self.scenario.tasks[:-1]
        return sum(t.train.images.nbytes + t.train.labels.nbytes for t in kept)


@dataclass(frozen=True)
class ReplayOptions(Options):
    buffer_size: int = flag(200, "er: the samples its replay buffer keeps")

    def check(self) -> None:
        check_counts(self, "buffer_size")


@register
class ExperienceReplay(Strategy):
    """`er`: each minibatch joined by as many samples from a class-balanced reservoir of the
    samples seen so far (specs/continual.md#replay-buffer)."""

    name = "er"
    Options = ReplayOptions

    def __init__(self, model, scenario, settings, options=None):
        super().__init__(model, scenario, settings, options)
        first = scenario.tasks[0].train.images
        self.buffer = ClassBalancedReservoir(self.options.buffer_size, first.shape[1:], first.dtype)

    def replay(self, rng) -> Samples | None:
        if self.buffer.size == 0:
            return None
        b = self.buffer
        index = b.sample(self.settings.batch_size, rng)
        return Samples(b.images[index], b.labels[index], b.classes[index], b.tasks[index])

    def after_step(self, batch: Samples, rng) -> None:
        self.buffer.add(batch.images, batch.labels, batch.classes, batch.tasks, rng)

    def state(self) -> dict:
        return self.buffer.state()

    def replay_bytes(self) -> int:
        return self.buffer.images[: self.buffer.size].nbytes

    def load_state(self, state: dict) -> None:
        self.buffer.load_state(state)


@dataclass(frozen=True)
class EWCOptions(Options):
    ewc_lambda: float = flag(100.0, "ewc: the penalty's weight lambda, >= 0")

    def check(self) -> None:
        if not self.ewc_lambda >= 0:
            raise ValueError(f"ewc_lambda must be >= 0, got {self.ewc_lambda}")


@register
class EWC(Strategy):
    """`ewc` (Kirkpatrick et al., PNAS 2017), online form: after each task the diagonal Fisher
    F += mean over batches of g_b^2 (g_b the gradient of batch b's mean loss) and the anchor
    theta* = theta; while training, lambda F (theta - theta*) is added to each gradient, the
    gradient of (lambda / 2) sum F (theta - theta*)^2."""

    name = "ewc"
    Options = EWCOptions

    def __init__(self, model, scenario, settings, options=None):
        super().__init__(model, scenario, settings, options)
        self.fisher, self.anchor = {}, {}

    def after_backward(self, task) -> None:
        for name, p in self.model.named_parameters():
            if name in self.fisher and p.grad is not None:
                p.grad += (self.options.ewc_lambda * self.fisher[name] * (p.data - self.anchor[name])).astype(p.grad.dtype)

    def after_task(self, task, normalize) -> None:
        params = dict(self.model.named_parameters())
        squares = {name: np.zeros_like(p.data, dtype=np.float64) for name, p in params.items()}
        samples, rng = self.training_samples(task), np.random.default_rng((self.settings.seed, task.index, 1))
        batches = 0
        self.model.train()
        order = minibatches(len(samples), self.settings.batch_size, rng)
        for index in Progress(order, label=f"task {task.index + 1} fisher", enabled=self.show):
            batch = samples.take(index)
            self.model.zero_grad()
            task_loss(self.model, normalize(batch.images), batch.labels, batch.tasks, self.settings.setting).backward()
            for name, p in params.items():
                if p.grad is not None:
                    squares[name] += p.grad.astype(np.float64) ** 2
            batches += 1
        self.model.zero_grad()
        for name, p in params.items():
            self.fisher[name] = self.fisher.get(name, 0) + squares[name] / batches
            self.anchor[name] = p.data.copy()

    def state(self) -> dict:
        return dict(fisher=self.fisher, anchor=self.anchor) if self.fisher else {}

    def load_state(self, state: dict) -> None:
        self.fisher, self.anchor = dict(state["fisher"]), dict(state["anchor"])


@dataclass(frozen=True)
class GPMOptions(Options):
    gpm_threshold: float = flag(0.97, "gpm, lance: the energy share the memory keeps after the first task, in (0, 1]")
    gpm_threshold_step: float = flag(0.003, "gpm, lance: its increase per task")
    representation_samples: int = flag(125, "gpm, lance: the training inputs of each memory update")

    def check(self) -> None:
        check_threshold(self.gpm_threshold, "gpm_threshold")
        check_counts(self, "representation_samples")


class ProtectedMemory(Mapping):
    """GPM's memory of a model's protected layers (specs/continual.md#gpm), a mapping from layer
    name to an orthonormal basis M of the earlier tasks' input rows, grown after each task from a
    representation of `representation_samples` training inputs (or the first of them that the
    model names for the layer) at threshold th_0 + step * t. GPM projects the gradients off it;
    LANCE-CL calibrates its bases in its complement."""

    def __init__(self, model, layers: dict, options: GPMOptions, settings):
        check_patch_rows(layers)
        self.model, self.names, self.options, self.settings, self.bases = model, list(layers), options, settings, {}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.bases[name]

    def __iter__(self):
        return iter(self.bases)

    def __len__(self) -> int:
        return len(self.bases)

    def threshold(self, task) -> float:
        return min(1.0, self.options.gpm_threshold + self.options.gpm_threshold_step * task.index)

    def grow(self, task, normalize, show: bool = False) -> None:
        """Extend each layer's basis from the inputs of `task` (after the task); with `show`, a
        progress bar over the layers."""
        count = min(self.options.representation_samples, len(task.train))
        index = np.random.default_rng((self.settings.seed, task.index, 2)).choice(len(task.train), count, replace=False)
        layers = {name: self.model.get_submodule(name) for name in self.names}
        images = normalize(task.train.images[np.sort(index)])
        inputs = layer_activations(self.model, layers, images, **forward_task(task, self.settings.setting))
        per_layer = getattr(self.model, "representation_samples", {})
        for name, layer in Progress(layers.items(), len(layers), label=f"task {task.index + 1} memory update", enabled=show):
            rows = patch_rows(layer, inputs[name][: per_layer.get(name, count)])
            self.bases[name] = extend_memory(self.bases.get(name), rows.T, self.threshold(task))

    def state(self) -> dict:
        return dict(self.bases)

    def load_state(self, state: dict) -> None:
        self.bases = dict(state)


def grow_protected_memory(strategy, task, normalize) -> None:
    """The `after_task` hook of the strategies that keep a `ProtectedMemory` (GPM, LANCE-CL)."""
    strategy.memory.grow(task, normalize, strategy.show)


@register
class GPM(Strategy):
    """`gpm`: in later tasks each protected layer's gradient is projected off its memory
    (`ProtectedMemory`), which grows after each task, and BatchNorm is frozen."""

    name = "gpm"
    Options = GPMOptions

    def __init__(self, model, scenario, settings, options=None):
        super().__init__(model, scenario, settings, options)
        self.memory = ProtectedMemory(model, self.layers, self.options, settings)

    def before_task(self, task, normalize) -> None:
        if task.index > 0:
            pin_batchnorm(self.model, freeze=True)  # BatchNorm gets no further update

    def after_backward(self, task) -> None:
        layers = self.layers
        for name, memory in self.memory.items():
            weight = layers[name].weight
            if weight.grad is not None:
                weight.grad = project_out(weight.grad, memory)

    after_task = grow_protected_memory

    def state(self) -> dict:
        return self.memory.state()

    def load_state(self, state: dict) -> None:
        self.memory.load_state(state)


def forward_task(task, setting: str) -> dict:
    """The forward options that select `task`'s head (none for a shared head)."""
    return dict(task=task.index) if setting == "task" else {}


