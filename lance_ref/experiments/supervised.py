"""`lance-ref train`: train a zoo model on a dataset and write results, history and checkpoint."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import random
from ..checkpoint import save_checkpoint
from ..data import DataLoader, load_dataset, normalize, random_crop
from ..io import save_json
from ..nn import build_model
from ..optim import SGD, CosineAnnealingLR
from ..tensor import float_dtype
from ..train import fit
from .report import write_history


@dataclass
class TrainConfig:
    """Every choice of a training run; stored in results.json so the run can be repeated."""

    model: str = "small-cnn"
    dataset: str = "mnist5k"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 2
    seed: int = 0
    dtype: str = "float32"

    def check(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(config.dtype)
    train, test = load_dataset(config.dataset)
    model = model_for(config.model, train, config.seed, dtype)
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
    save_json(out / "results.json", results)
    write_history(out, history)
    return results
