"""`lance-ref finetune`: pretrain on source classes, fine-tune the last layers on target classes.

Protocol (specs/compressed.md#fine-tuning-protocol): the dataset's classes are split into a
source and a target set (mnist5k: digits 0-4 and 5-9). A model is trained on the source
training images (or loaded from `--checkpoint`, or from a torch model's `--weights`), its classifier is replaced by a fresh one for
the target classes, the last N conv layers and the classifier are fine-tuned by the chosen
method while everything else is frozen (BatchNorm in eval mode), and the accuracy is measured
on the target test images.

Methods: `full` (plain backprop), `hosvd` and `lance` (compressed activations,
specs/compressed.md), and `neq`, `random` and `su`, which update only the conv channels their
policy selects under `--budget` (specs/selection.md).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import random
from ..checkpoint import load_checkpoint, save_checkpoint
from ..compress import METHODS, CompressedFinetune, CompressionOptions
from ..data import normalize, subset_by_classes
from ..io import prepare_output_dir
from ..nn import FinetuneMethod, Linear, last_layers
from ..optim import SGD, CosineAnnealingLR
from ..options import check_counts, flag, flat_config
from ..selection import POLICIES, SelectedFinetune, SelectionOptions, budget_parameters, conv_neurons, parse_budget
from ..tensor import float_dtype
from ..train import fit
from .report import save_results, write_history
from .supervised import (
    DATASET_HELP, DTYPE_HELP, MODEL_HELP, SEED_HELP, InputSettings, classifier_name, load_data, make_loader, model_for, start_from_weights,
)


def parse_list(text: str, kind=int) -> list:
    """"1,3,5" -> [1, 3, 5] (values of `kind`)."""
    try:
        return [kind(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of {kind.__name__}s, got {text!r}") from None


SELECTION_METHODS = tuple(p for p in POLICIES if p != "full")  # `full` is the compress methods' own
FAMILIES = {**{m: CompressedFinetune for m in METHODS}, **{p: SelectedFinetune for p in SELECTION_METHODS}}  # method -> its FinetuneMethod
FINETUNE_METHODS = tuple(FAMILIES)


def parse_classes(spec: str) -> list:
    """"0-4" -> [0, 1, 2, 3, 4]; "1,3,5" -> [1, 3, 5]."""
    low, dash, high = spec.partition("-")
    try:
        return list(range(int(low), int(high) + 1)) if dash else parse_list(spec)
    except ValueError:
        raise ValueError(f"classes must look like '0-4' or '1,3,5', got {spec!r}") from None


@dataclass
class FinetuneSettings(InputSettings):
    """A fine-tuning run's choices besides its method family's options."""

    model: str = flag("small-cnn", MODEL_HELP)
    dataset: str = flag("mnist5k", DATASET_HELP)
    method: str = flag("lance", f"how the last layers learn: {', '.join(FINETUNE_METHODS)} (full backprop; compressed "
                       "activations, specs/compressed.md; or channels selected under --budget, specs/selection.md)")
    last_n: int = flag(2, "fine-tune the model's last N conv layers (and its classifier)")
    source_classes: str = flag("0-4", "the classes the source model learns: a range '0-4' or a list '1,3,5'")
    target_classes: str = flag("5-9", "the new classes fine-tuned on, as --source-classes")
    pretrain_epochs: int = flag(6, "epochs of training on the source classes (unless --checkpoint or --weights)")
    epochs: int = flag(6, "epochs of fine-tuning")
    batch_size: int = flag(64, "images per SGD step")
    lr: float = flag(0.05, "the fine-tuning SGD's learning rate (cosine-annealed)")
    momentum: float = flag(0.0, "the fine-tuning SGD's momentum (0 for the selection methods)")
    clip: float = flag(2.0, "clip the gradients' global norm to this")
    seed: int = flag(0, SEED_HELP)
    dtype: str = flag("float32", DTYPE_HELP)
    checkpoint: str = flag("", "the source model's source_model.npz from an earlier run, so it is not pretrained again")

    def check(self) -> None:
        if self.method not in FINETUNE_METHODS:
            raise ValueError(f"method must be one of {FINETUNE_METHODS}, got {self.method!r}")
        FAMILIES[self.method].Options.of(self)  # checks the method family's options
        if self.method in SELECTION_METHODS and self.momentum != 0:
            raise ValueError(f"momentum must be 0 for method {self.method!r}: a momentum buffer would move frozen channels")
        check_counts(self, "epochs", "batch_size")
        if self.checkpoint and self.weights:
            raise ValueError("give the source model as checkpoint or as weights, not both")
        self.check_inputs()
        if self.pretrain_epochs < 1 and not (self.checkpoint or self.weights):
            raise ValueError("pretrain_epochs must be >= 1 unless a checkpoint or weights are given")
        float_dtype(self.dtype, "dtype")
        source, target = parse_classes(self.source_classes), parse_classes(self.target_classes)
        if set(source) & set(target):
            raise ValueError(f"source and target classes overlap: {sorted(set(source) & set(target))}")


FinetuneConfig = flat_config(
    "FinetuneConfig", FinetuneSettings, [CompressionOptions, SelectionOptions],
    "Every choice of a fine-tuning run, stored in results.json: `FinetuneSettings` and the options of "
    "both method families (compression, selection); a method reads its family's.",
)


def train_source(config: FinetuneConfig, model, source, source_test, out: Path, show: bool) -> None:
    """Give `model` its source weights: loaded from `config.checkpoint` or `config.weights` (a
    torch state_dict), or trained on the source classes and saved to `out`/source_model.npz."""
    dtype = np.dtype(config.dtype)
    if config.checkpoint:
        load_checkpoint(config.checkpoint, model)
        return
    if config.weights:
        start_from_weights(model, config.weights, config.cast_weights, classifier_name(model), show)
        return
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    fit(
        model, optimizer, make_loader(source, config.batch_size, config.seed, dtype, crop_padding=2),
        normalize(source_test.images, source.mean, source.std, dtype), source_test.labels,
        config.pretrain_epochs, CosineAnnealingLR(optimizer, T_max=config.pretrain_epochs), show=show,
        label=f"pretrain {config.source_classes}",
    )
    save_checkpoint(out / "source_model.npz", model, meta=dict(classes=config.source_classes, seed=config.seed))
    if show:
        print(f"source model saved: --checkpoint {out / 'source_model.npz'} fine-tunes from it without pretraining again")


def replace_classifier(model, classes: int, dtype) -> None:
    """A fresh classifier (the model's last Linear) for `classes` target classes."""
    (name,) = classifier_name(model)
    old = model.get_submodule(name)
    model.set_submodule(name, Linear(old.in_features, classes, bias=old.bias is not None, dtype=dtype))


def finetune_method(config: FinetuneConfig, model, target, dtype) -> FinetuneMethod:
    """The fine-tuning method of `config.method` for `model`, checked before any training: the
    last `last_n` convs against the model, a selection policy's budget against them, and its
    velocity set drawn (seeded) from the target training images; or a compression method."""
    family = FAMILIES[config.method]
    options = family.Options.of(config)
    last_convs = last_layers(model, config.last_n)[:-1]
    if family is CompressedFinetune:
        return CompressedFinetune(config.method, config.last_n, options)
    convs = {name: model.get_submodule(name) for name in last_convs}
    budget = parse_budget(options.budget)
    budget_parameters(budget, np.concatenate(list(conv_neurons(convs).values())))
    if options.velocity_samples > len(target):
        raise ValueError(f"velocity_samples ({options.velocity_samples}) exceeds the target training images ({len(target)})")
    rng = np.random.default_rng([config.seed, 2])
    index = np.sort(rng.choice(len(target), options.velocity_samples, replace=False))
    velocity_images = normalize(target.images[index], target.mean, target.std, dtype)
    return SelectedFinetune(config.method, config.last_n, budget, velocity_images, rng, options.velocity_momentum)


def run(config: FinetuneConfig, out: str | Path, show: bool = True) -> dict:
    """Fine-tune per `config`; write `out`/results.json and history.csv; return the results."""
    config.check()
    out = prepare_output_dir(out)
    dtype = np.dtype(config.dtype)
    train, test = load_data(config)
    source_classes, target_classes = parse_classes(config.source_classes), parse_classes(config.target_classes)
    source = subset_by_classes(train, source_classes)
    target, target_test = subset_by_classes(train, target_classes), subset_by_classes(test, target_classes)
    model = model_for(config.model, source, config.seed, dtype)
    method = finetune_method(config, model, target, dtype)
    train_source(config, model, source, subset_by_classes(test, source_classes), out, show)
    random.manual_seed(config.seed + 1)
    replace_classifier(model, len(target_classes), dtype)
    # A fixed batch-mode basis needs full batches, so every method drops the last partial one.
    loader = make_loader(target, config.batch_size, config.seed, dtype, drop_last=True)
    names = method.prepare(model)
    calibration_seconds = method.before_training(model, loader, show)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = SGD(trainable, lr=config.lr, momentum=config.momentum)
    start = time.perf_counter()
    fitted = fit(
        model, optimizer, loader, normalize(target_test.images, target.mean, target.std, dtype), target_test.labels,
        config.epochs, CosineAnnealingLR(optimizer, T_max=config.epochs), clip_grad_norm=config.clip, show=show,
        before_epoch=method.before_epoch, label=f"fine-tune {config.target_classes}",
    )
    history, ledger = fitted.history, fitted.ledger
    conv_parameters = int(sum(p.data.size for name in names[:-1] for p in model.get_submodule(name).parameters()))
    results = dict(
        command="finetune",
        config=asdict(config),
        test_accuracy=history[-1]["test_accuracy"],
        activation_bytes=ledger.bytes(names),
        activation_bytes_by_layer={name: ledger.bytes([name]) for name in names},
        activation_bytes_per_step=ledger.bytes(),
        conv_parameters=conv_parameters,
        **method.figures(model, names, history, conv_parameters),
        peak_step_bytes=fitted.peak_step_bytes,
        persistent_bytes=fitted.persistent_bytes,
        calibration_seconds=calibration_seconds,
        step_seconds=sum(e["seconds"] for e in history) / sum(e["steps"] for e in history),
        backward_seconds=sum(e["backward_seconds"] for e in history),
        wall_seconds=time.perf_counter() - start,
        trainable_parameters=int(sum(p.data.size for p in trainable)),
        epochs=history,
    )
    save_results(out, results)
    write_history(out, history, f"{config.method} fine-tuning of {config.model}'s last {config.last_n} convs on {config.dataset} "
                                f"classes {config.target_classes}, seed {config.seed}")
    return results
