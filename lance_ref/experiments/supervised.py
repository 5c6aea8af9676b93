"""`lance-ref train`: train a zoo model on a dataset and write results, history and checkpoint."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import random
from ..checkpoint import load_weights, save_checkpoint
from ..data import DataLoader, load_dataset, normalize, random_crop, resized
from ..data.catalog import DATASET_SPECS
from ..io import prepare_output_dir
from ..nn import Linear, build_model
from ..nn.zoo import MODELS, MobileNetV2
from ..optim import SGD, CosineAnnealingLR
from ..options import check_counts, flag
from ..tensor import float_dtype
from ..train import fit
from .report import save_results, write_history


MODEL_HELP = f"the zoo model: {', '.join(MODELS)}"
DATASET_HELP = (f"the dataset: {', '.join(DATASET_SPECS)} (mnist5k is the bundled 5,000 digits; mnist:DIR the IDX "
                "files in DIR; cifar10/cifar100:PATH a binary or python release; npz:PATH arrays 'images' and 'labels')")
DTYPE_HELP = "float32 or float64"
SEED_HELP = "seed of every random draw (initialisation, shuffling, crops)"


@dataclass
class InputSettings:
    """The images a run sees and the weights it starts from (train and finetune)."""

    image_size: int = flag(0, "resize the images to this side in pixels (0 keeps the dataset's)")
    channels: int = flag(0, "repeat grey images into this many channels (0 keeps the dataset's)")
    weights: str = flag("", "start from a torch state_dict saved as a flat .npz (layers whose shapes differ stay fresh)")
    cast_weights: bool = flag(False, "convert float32 weights to a float64 model, or float64 to float32")

    def check_inputs(self) -> None:
        for name in ("image_size", "channels"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 keeps the dataset's), got {getattr(self, name)}")
        if self.weights and not Path(self.weights).is_file():
            raise FileNotFoundError(f"weights file {self.weights} does not exist")


def load_data(config: InputSettings) -> tuple:
    """(train, test) of the config's dataset, resized as it asks."""
    train, test = load_dataset(config.dataset)
    return resized(train, config.image_size, config.channels), resized(test, config.image_size, config.channels)


def start_from_weights(model, path: str, cast: bool, keep, show: bool) -> None:
    """Load the weights at `path` (a torch state_dict as a flat .npz) into `model`, all but the
    layers `keep` (the classifier or task heads) whose shapes differ, which are said to stay as
    initialised (specs/nn.md#state-dict)."""
    kept = load_weights(path, model, cast=cast, keep=tuple(keep))
    if show and kept:
        print(f"weights from {path}, except {', '.join(kept)} (shapes for other classes): initialised afresh")
    if show and isinstance(model, MobileNetV2) and model.variant == "cifar":
        print("note: mobilenetv2 is the CIFAR variant; torchvision's mobilenet_v2 weights belong to --model mobilenetv2-torchvision")


def classifier_name(model) -> list:
    """[the name of the model's last Linear], its classifier."""
    return [n for n, m in model.named_modules() if isinstance(m, Linear)][-1:]


@dataclass
class TrainConfig(InputSettings):
    """Every choice of a training run; stored in results.json so the run can be repeated."""

    model: str = flag("small-cnn", MODEL_HELP)
    dataset: str = flag("mnist5k", DATASET_HELP)
    epochs: int = flag(10, "passes over the training images")
    batch_size: int = flag(64, "images per SGD step")
    lr: float = flag(0.05, "SGD's learning rate (cosine-annealed over the epochs)")
    momentum: float = flag(0.9, "SGD's momentum")
    weight_decay: float = flag(5e-4, "SGD's weight decay")
    crop_padding: int = flag(2, "random crops after padding by this many pixels (0: none)")
    seed: int = flag(0, SEED_HELP)
    dtype: str = flag("float32", DTYPE_HELP)

    def check(self) -> None:
        self.check_inputs()
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        check_counts(self, "epochs", "batch_size")
        float_dtype(self.dtype, "dtype")


def make_loader(dataset, batch_size: int, seed: int, dtype, crop_padding: int = 0, drop_last: bool = False) -> DataLoader:
    """Shuffled, seeded minibatches of `dataset`, randomly cropped then normalised to `dtype`."""
    def transform(x, rng):
        return normalize(random_crop(x, crop_padding, rng) if crop_padding else x, dataset.mean, dataset.std, dtype)

    return DataLoader(dataset.images, dataset.labels, batch_size, shuffle=True, seed=seed, drop_last=drop_last, transform=transform)


def model_for(name: str, dataset, seed: int, dtype):
    """The zoo model `name` sized for `dataset`'s images and classes, initialised from `seed`."""
    random.manual_seed(seed)
    return build_model(
        name, num_classes=len(dataset.classes), in_channels=dataset.images.shape[1],
        image_size=dataset.images.shape[2], dtype=dtype,
    )


def run(config: TrainConfig, out: str | Path, show: bool = True) -> dict:
    """Train per `config`; write `out`/results.json, history.csv and model.npz; return the results."""
    config.check()
    out = prepare_output_dir(out)
    dtype = np.dtype(config.dtype)
    train, test = load_data(config)
    model = model_for(config.model, train, config.seed, dtype)
    if config.weights:
        start_from_weights(model, config.weights, config.cast_weights, classifier_name(model), show)
    optimizer = SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    loader = make_loader(train, config.batch_size, config.seed, dtype, config.crop_padding)
    start = time.perf_counter()
    fitted = fit(
        model, optimizer, loader, normalize(test.images, train.mean, train.std, dtype), test.labels,
        config.epochs, CosineAnnealingLR(optimizer, T_max=config.epochs), show=show,
    )
    history = fitted.history
    results = dict(
        command="train",
        config=asdict(config),
        test_accuracy=history[-1]["test_accuracy"],
        epochs=history,
        wall_seconds=time.perf_counter() - start,
        activation_bytes_per_step=fitted.ledger.bytes(),
        activation_bytes_by_layer=fitted.ledger.by_layer(),
        peak_step_bytes=fitted.peak_step_bytes,
        persistent_bytes=fitted.persistent_bytes,
        parameters=int(sum(p.data.size for p in model.parameters())),
        train_size=len(train),
        test_size=len(test),
    )
    save_checkpoint(out / "model.npz", model, optimizer, meta=dict(epoch=config.epochs, seed=config.seed))
    save_results(out, results)
    write_history(out, history, f"{config.model} trained on {config.dataset}, seed {config.seed}")
    return results
