"""Latent replay with a CWR* head (Pellegrini et al., IROS 2020), latents kept as float32 or
bit-packed signs (Vorabbi et al., VISAPP 2024); specs/binary.md#latent-replay."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..binary import pack_signs, unpack_signs
from ..nn import Sequential
from ..options import Options, flag
from ..tensor import Tensor
from ..train import predict
from .replay import ClassBalancedReservoir
from .strategies import Strategy, register


@dataclass(frozen=True)
class LatentReplayOptions(Options):
    latent_layer: str = flag("latent", "latent replay, cwr: the model's child whose outputs are the latents")
    latent_replay_size: int = flag(200, "latent replay: the latents its memory keeps")


@register
class LatentReplay(Strategy):
    """`float-latent-replay`: task 0 trains the whole network. Then the front (the model's
    children up to `latent_layer`) is frozen in eval mode, and every minibatch's new samples,
    passed through the front, are joined by `batch_size` stored latents injected at the latent
    layer. After each task, a class-balanced reservoir of `latent_replay_size` latents is
    offered the task's latents. The head is CWR*'s."""

    name = "float-latent-replay"
    packed = False  # True: latents kept as bit-packed signs
    replays = True  # False: no memory at all (cwr)

    Options = LatentReplayOptions

    def __init__(self, model, scenario, settings, options=None):
        super().__init__(model, scenario, settings, options)
        latent_layer, size = self.options.latent_layer, self.options.latent_replay_size
        if settings.setting != "class":
            raise ValueError(f"{self.name} has a CWR* head over all classes: it is class-incremental (setting 'class', model binary-cnn)")
        children = [name for name, _ in model.named_children()]
        if not isinstance(model, Sequential):
            raise ValueError(f"{self.name} needs a model whose children run in order (a Sequential): model binary-cnn")
        if latent_layer not in children[:-1]:
            raise ValueError(f"latent_layer {latent_layer!r} is not a child of the model before its head; children: {children}")
        if self.replays and size < scenario.num_classes:
            raise ValueError(f"latent_replay_size ({size}) must hold a latent of each of the {scenario.num_classes} classes")
        cut = children.index(latent_layer) + 1
        self.front, self.back = model[:cut], model[cut:]  # slices keep the children's names (the ledger's owners)
        self.head = model.get_submodule(self.head_names[0])
        self.consolidated = {name: np.zeros_like(p.data) for name, p in self.head_parameters().items()}
        self.past = np.zeros(scenario.num_classes)
        self.memory, self.latent_shape = None, None

    def head_parameters(self) -> dict:
        return dict(self.head.named_parameters())

    def stored(self, index) -> np.ndarray:
        """Latents `index` of the memory, as the back part reads them."""
        kept = self.memory.images[index]
        return unpack_signs(kept, self.latent_shape, np.dtype(self.settings.dtype)) if self.packed else kept

    def before_task(self, task, normalize) -> None:
        if task.index > 0:
            self.front.freeze().keep_eval()
        current = task.global_labels(np.arange(len(task.classes)))
        for p in self.head_parameters().values():  # CWR*: the current classes' rows start from zero
            p.data[current] = 0

    def minibatch_loss(self, task, batch, rng, normalize):
        if task.index == 0:
            return super().minibatch_loss(task, batch, rng, normalize)
        with no_grad():
            latents, labels = self.front(Tensor(normalize(batch.images))).data, batch.labels
        if self.memory is not None and self.memory.size:
            index = self.memory.sample(self.settings.batch_size, rng)
            latents = np.concatenate([latents, self.stored(index)])
            labels = np.concatenate([labels, self.memory.labels[index]])
        return F.cross_entropy(self.back(Tensor(latents)), labels)

    def after_task(self, task, normalize) -> None:
        self.consolidate(task)
        if not self.replays:
            return
        samples = self.training_samples(task)
        latents = predict(self.front, normalize(samples.images))  # eval mode, no graph
        kept = pack_signs(latents) if self.packed else latents
        if self.memory is None:
            self.memory, self.latent_shape = ClassBalancedReservoir(self.options.latent_replay_size, kept.shape[1:], kept.dtype), latents.shape[1:]
        order = np.random.default_rng((self.settings.seed, task.index, 3)).permutation(len(samples))
        rng = np.random.default_rng((self.settings.seed, task.index, 5))
        self.memory.add(kept[order], samples.labels[order], samples.classes[order], samples.tasks[order], rng)

    def consolidate(self, task) -> None:
        """CWR*: the current classes' rows, minus their mean, averaged into the consolidated
        rows with weight sqrt(past_c / cur_c) for what was consolidated before; the head then
        holds the consolidated rows of every class."""
        current = task.global_labels(np.arange(len(task.classes)))
        counts = np.bincount(self.training_samples(task).labels, minlength=len(self.past))[current]
        for name, p in self.head_parameters().items():
            trained = p.data[current] - p.data[current].mean()
            weight = np.sqrt(self.past[current] / counts).reshape(-1, *([1] * (trained.ndim - 1)))
            self.consolidated[name][current] = (self.consolidated[name][current] * weight + trained) / (weight + 1)
            p.data[...] = self.consolidated[name]
        self.past[current] += counts

    def state(self) -> dict:
        state = dict(consolidated=dict(self.consolidated), past=self.past)
        if self.memory is not None:
            state.update(memory=self.memory.state(), latent_shape=np.array(self.latent_shape))
        return state

    def load_state(self, state: dict) -> None:
        self.consolidated, self.past = dict(state["consolidated"]), state["past"]
        if "memory" in state:
            self.latent_shape = tuple(int(n) for n in state["latent_shape"])
            kept = state["memory"]["images"]
            self.memory = ClassBalancedReservoir(self.options.latent_replay_size, kept.shape[1:], kept.dtype)
            self.memory.load_state(state["memory"])

    def replay_bytes(self) -> int:
        return 0 if self.memory is None else self.memory.images[: self.memory.size].nbytes


@register
class BinaryLatentReplay(LatentReplay):
    """`binary-latent-replay`: latent replay whose latents are kept as signs, 1 bit each
    (`np.packbits`), and unpacked to +-1 when replayed."""

    name = "binary-latent-replay"
    packed = True


@register
class CWRStar(LatentReplay):
    """`cwr`: the same frozen front and CWR* head, without replay."""

    name = "cwr"
    replays = False
