"""Binary neural networks with quantised training, and the bit-packing of binary latents
(Vorabbi et al., VISAPP 2024; specs/binary.md)."""

from .models import BinaryCNN  # registers binary-cnn with the zoo
from .layers import QuantConv2d, QuantLinear, Sign, binary_weight, set_precision, sign
from .packing import pack_signs, unpack_signs
from .quantize import check_bits, quantize, quantize_array, quantize_grad

__all__ = [
    "BinaryCNN", "QuantConv2d", "QuantLinear", "Sign", "binary_weight", "check_bits", "pack_signs", "quantize", "quantize_array",
    "quantize_grad", "set_precision", "sign", "unpack_signs",
]
