"""Prepare a model for fine-tuning its last layers with a method, and calibrate LANCE bases."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..autograd import no_grad
from ..nn import FinetuneMethod, Module, eval_mode, fine_tune_last
from ..options import Options, check_counts, flag
from ..progress import Progress
from ..tensor import Tensor
from .calibration import check_mode_set
from .hosvd import check_eps
from .layers import CompressedConv2d, CompressedLinear, Lance


def prepare_finetune(
    model: Module, last_n: int, method: str, eps: float = 0.9, mode_set: str = "all", compress_classifier: bool = False
) -> list:
    """Replace the last `last_n` Conv2d layers by compressed layers of `method` and make the
    classifier (the last Linear) trainable, by plain backprop unless `compress_classifier`;
    the rest is frozen as `nn.fine_tune_last` does. Returns the names of the fine-tuned layers,
    in forward order (the classifier last)."""
    return fine_tune_last(
        model, last_n,
        wrap_conv=lambda conv: CompressedConv2d(conv, method, eps, mode_set),
        wrap_classifier=lambda linear: CompressedLinear(linear, method if compress_classifier else "full", eps, mode_set),
    )


def lance_layers(model: Module) -> list:
    """(name, layer) of the layers whose method is `lance`."""
    return [(n, m) for n, m in model.named_modules() if isinstance(getattr(m, "compressor", None), Lance)]


def calibrate(model: Module, batches, *, show: bool = False, total: int | None = None, label: str = "calibrate",
              **forward_options) -> float:
    """Fix the LANCE bases of every `lance` layer from `batches` (already normalised arrays),
    forwarded in eval mode without gradients; returns the seconds it took (specs/hosvd.md#calibration).
    With `show`, a progress bar `label` over the `total` batches."""
    layers = lance_layers(model)
    if not layers:
        raise ValueError("the model has no layer with method 'lance' to calibrate")
    start = time.perf_counter()
    for _, layer in layers:
        layer.compressor.start_calibration()
    with eval_mode(model), no_grad():
        for x in Progress(batches, total, label=label, enabled=show):
            model(Tensor(x), **forward_options)
    for _, layer in layers:
        layer.compressor.finish_calibration()
    return time.perf_counter() - start


@dataclass(frozen=True)
class CompressionOptions(Options):
    """The compression methods' options in `lance-ref finetune`."""

    eps: float = flag(0.9, "hosvd, lance: the share of each mode's energy the bases keep, in (0, 1]")
    modes: str = flag("all", "hosvd, lance: the modes compressed, all (as upstream) or chw (all but the batch)")
    compress_classifier: bool = flag(False, "hosvd, lance: compress the classifier's input too")
    calibration_batches: int = flag(100, "lance: the training batches its bases are calibrated on")

    def check(self) -> None:
        check_eps(self.eps)
        check_mode_set(self.modes, "modes")
        check_counts(self, "calibration_batches")


class CompressedFinetune(FinetuneMethod):
    """The compression methods (`full`, `hosvd`, `lance`) as fine-tuning methods: `prepare_finetune`,
    LANCE's calibration on the first `calibration_batches` training batches, and the layers'
    memory, ranks and FLOPs as figures (specs/compressed.md#fine-tuning-protocol)."""

    Options = CompressionOptions

    def __init__(self, method: str, last_n: int, options: CompressionOptions):
        self.method, self.last_n, self.options = method, last_n, options

    def prepare(self, model) -> list:
        o = self.options
        return prepare_finetune(model, self.last_n, self.method, o.eps, o.modes, o.compress_classifier)

    def before_training(self, model, loader, show: bool = False) -> float:
        if self.method != "lance":
            return 0.0
        count = min(self.options.calibration_batches, len(loader))
        return calibrate(model, (x for _, (x, _) in zip(range(count), loader)), show=show, total=count)

    def figures(self, model, names: list, history: list, conv_parameters: int) -> dict:
        """Full backprop's activation bytes, ranks and FLOPs per layer; every conv parameter updates."""
        layers = {name: model.get_submodule(name) for name in names}
        return dict(
            full_activation_bytes=sum(layer.full_activation_bytes() for layer in layers.values()),
            ranks={name: layer.ranks() for name, layer in layers.items()},
            flops={name: layer.flops() for name, layer in layers.items()},
            budget=None,
            updated_parameters=conv_parameters,
        )
