"""The zoo's binary CNN (specs/binary.md#binary-cnn)."""

from __future__ import annotations

from ..nn.layers import AdaptiveAvgPool2d, BatchNorm2d, Flatten, MaxPool2d, ReLU, Sequential
from ..nn.zoo import register_model
from .layers import QuantConv2d, QuantLinear, Sign


class BinaryCNN(Sequential):
    """A real-valued stem, two binary conv blocks and a real-valued classifier, for 28x28 and
    32x32 images; its children run in order, so it splits at any child (latent replay):

    stem    QuantConv2d(C, 32, 3, p1) -> BN -> MaxPool 2       (no ReLU: the sign that follows reads its sign)
    block1  Sign -> binary QuantConv2d(32, 64, 3, p1) -> BN -> MaxPool 2
    latent  Sign                               (the default latent-replay layer: +-1 outputs)
    block2  binary QuantConv2d(64, 128, 3, p1) -> BN -> ReLU -> average pool to 3x3 -> flatten
    classifier  QuantLinear(128 * 9, classes)
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dtype=None):
        super().__init__()
        conv = dict(kernel_size=3, padding=1, dtype=dtype)
        self.stem = Sequential(QuantConv2d(in_channels, 32, **conv), BatchNorm2d(32, dtype=dtype), MaxPool2d(2))
        self.block1 = Sequential(Sign(), QuantConv2d(32, 64, binary=True, bias=False, **conv), BatchNorm2d(64, dtype=dtype), MaxPool2d(2))
        self.latent = Sign()
        self.block2 = Sequential(
            QuantConv2d(64, 128, binary=True, bias=False, **conv), BatchNorm2d(128, dtype=dtype), ReLU(),
            AdaptiveAvgPool2d(3), Flatten(),
        )
        self.classifier = QuantLinear(128 * 9, num_classes, dtype=dtype)


@register_model("binary-cnn")
def _binary_cnn(num_classes, in_channels, image_size, heads=None, **options):
    if heads is not None and len(heads) != 1:
        raise ValueError(f"binary-cnn has one shared head (class-incremental), got heads {heads!r}")
    return BinaryCNN(heads[0] if heads else num_classes, in_channels, **options)
